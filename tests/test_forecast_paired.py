"""Paired comparison of two models' mean_wQL over test windows: the point difference, the bootstrap interval."""

from __future__ import annotations

import numpy as np
import pytest

from pararnn_ts.forecast.paired import paired_cells, paired_difference, window_rows


def test_the_difference_is_that_of_the_seed_mean_wqls():
    rng = np.random.default_rng(0)
    size = rng.uniform(1, 100, 50)
    loss, reference = rng.uniform(0, 10, (3, 50)), rng.uniform(0, 10, (2, 50))
    difference, low, high = paired_difference(loss, reference, size)
    want = np.mean([row.sum() / size.sum() for row in loss]) - np.mean([row.sum() / size.sum() for row in reference])
    assert difference == pytest.approx(want, rel=1e-12)
    assert low < difference < high


def test_resampling_keeps_the_windows_paired():
    """A model worse by 1% of every window's size is worse by exactly 0.01 on any resample of the windows,
    however much the windows' own losses vary; unpaired resampling would give a wide interval."""
    rng = np.random.default_rng(1)
    size = rng.lognormal(3, 1.5, 200)
    reference = rng.uniform(0, 1, (3, 200)) * size
    assert paired_difference(reference + 0.01 * size, reference, size) == pytest.approx((0.01, 0.01, 0.01))


def test_the_interval_matches_normal_theory_on_many_similar_windows():
    """With many windows of equal size and independent gaps, the 95% interval is about ± 1.96 standard errors."""
    rng = np.random.default_rng(2)
    count = 4000
    size = np.ones(count)
    gap = rng.normal(0.02, 0.5, count)
    difference, low, high = paired_difference(gap[None, :], np.zeros((1, count)), size, draws=4000)
    half_width = 1.96 * gap.std(ddof=1) / np.sqrt(count)
    assert difference == pytest.approx(gap.mean())
    assert (high - low) / 2 == pytest.approx(half_width, rel=0.1)
    assert (low + high) / 2 == pytest.approx(difference, abs=0.1 * half_width)


def test_one_large_window_widens_the_interval_across_zero():
    """Better on 99 small windows, much worse on one that holds most of Σ|y|: worse overall, but not surely."""
    size = np.r_[np.ones(99), 300.0]
    reference = np.r_[np.full(99, 0.2), 30.0][None, :]
    loss = np.r_[np.full(99, 0.1), 60.0][None, :]
    difference, low, high = paired_difference(loss, reference, size)
    assert difference == pytest.approx((99 * -0.1 + 30) / 399)
    assert low < 0 < high


def test_paired_difference_refuses_mismatched_windows():
    with pytest.raises(ValueError, match=r"must be \(seeds, 4\)"):
        paired_difference(np.zeros((2, 3)), np.zeros((2, 4)), np.ones(4))


def test_cells_use_the_seeds_both_models_ran_and_name_the_largest_window():
    size = np.array([1.0, 1.0, 2.0])
    rows = (
        window_rows("toy", "Ref", 0, np.array([1.0, 1.0, 1.0]), size)
        + window_rows("toy", "Ref", 1, np.array([1.0, 1.0, 1.0]), size)
        + window_rows("toy", "Model", 1, np.array([0.0, 0.0, 0.0]), size)
        + window_rows("toy", "Other", 0, np.array([1.0, 1.0]), size[:2])
    )
    with pytest.raises(ValueError, match="'Other' and 'Ref' have different windows on 'toy'"):
        paired_cells(rows, "Ref")
    cells = paired_cells(rows[:-2], "Ref")
    assert cells == {("toy (3 windows; largest 50% of Σ\\|y\\|)", "Model"): "-0.7500 [-1.0000, -0.5000] (1 of 2 seeds)"}
