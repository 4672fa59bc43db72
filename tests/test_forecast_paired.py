"""Paired comparison of two models' mean_wQL over test windows: the point difference, the bootstrap interval."""

from __future__ import annotations

from itertools import product

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
    however much the windows' own losses vary; unpaired resampling would give a wide interval. (Its seeds agree,
    here, so drawing seeds adds nothing.)"""
    rng = np.random.default_rng(1)
    size = rng.lognormal(3, 1.5, 200)
    reference = np.tile(rng.uniform(0, 1, 200) * size, (3, 1))
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
    assert cells == {
        ("toy (3 windows, 2 seeds; largest 50% of Σ\\|y\\|)", "Model"): "-0.7500 [-1.0000, -0.5000] (1 of 2 seeds)"
    }


def brute_force_interval(
    loss: np.ndarray, reference: np.ndarray, size: np.ndarray, draws: int, seed: int
) -> tuple[float, float]:
    """The two-level bootstrap written out draw by draw: seeds of each model drawn with replacement (independently),
    windows drawn with replacement (the same for both), each model's mean_wQL on the draw the mean over its drawn
    seeds of Σ loss / Σ size over the drawn windows."""
    rng = np.random.default_rng(seed)
    differences = []
    for _ in range(draws):
        windows = rng.integers(0, len(size), len(size))
        own = rng.integers(0, len(loss), len(loss))
        base = rng.integers(0, len(reference), len(reference))
        denominator = size[windows].sum()
        wql = [
            np.mean([runs[s][windows].sum() / denominator for s in drawn])
            for runs, drawn in ((loss, own), (reference, base))
        ]
        differences.append(wql[0] - wql[1])
    low, high = np.quantile(differences, [0.025, 0.975])
    return float(low), float(high)


def test_the_interval_matches_a_brute_force_two_level_bootstrap():
    rng = np.random.default_rng(3)
    size = rng.lognormal(2, 1, 30)
    reference = rng.uniform(0.05, 0.3, (3, 30)) * size * rng.uniform(0.5, 1.5, (3, 1))  # seeds of unlike quality
    loss = rng.uniform(0.05, 0.3, (2, 30)) * size
    _, low, high = paired_difference(loss, reference, size, draws=20000)
    want_low, want_high = brute_force_interval(loss, reference, size, draws=20000, seed=1)
    width = want_high - want_low
    assert low == pytest.approx(want_low, abs=0.05 * width) and high == pytest.approx(want_high, abs=0.05 * width)


def test_with_one_seed_per_model_it_is_the_window_bootstrap():
    """One seed each: drawing seeds changes nothing, and the draws are those of the plain paired bootstrap over
    windows (the same window counts, drawn first from the same generator)."""
    rng = np.random.default_rng(4)
    size = rng.lognormal(2, 1, 40)
    loss, reference = rng.uniform(0, 0.3, (1, 40)) * size, rng.uniform(0, 0.3, (1, 40)) * size
    counts = np.random.default_rng(7).multinomial(40, np.full(40, 1 / 40), size=500)
    windows_only = [(c * (loss[0] - reference[0])).sum() / (c * size).sum() for c in counts]
    want = np.quantile(windows_only, [0.025, 0.975])
    assert paired_difference(loss, reference, size, draws=500, seed=7)[1:] == pytest.approx(tuple(want), rel=1e-12)


def test_with_windows_alike_it_is_the_spread_of_the_seeds():
    """Windows that all have the same losses and size: resampling them changes nothing, so the draws' distribution
    is that of the difference of the drawn seeds' means, which enumerating every draw of seeds gives exactly."""
    size = np.full(5, 10.0)
    own_wql, base_wql = np.array([0.10, 0.12, 0.20]), np.array([0.05, 0.15, 0.30])
    loss, reference = own_wql[:, None] * size, base_wql[:, None] * size
    difference, low, high = paired_difference(loss, reference, size, draws=20000)
    assert difference == pytest.approx(own_wql.mean() - base_wql.mean())
    draws = product(product(own_wql, repeat=3), product(base_wql, repeat=3))  # every ordered draw, equally likely
    exact = np.sort([np.mean(own) - np.mean(base) for own, base in draws])
    assert np.quantile(exact, 0.015) <= low <= np.quantile(exact, 0.035)
    assert np.quantile(exact, 0.965) <= high <= np.quantile(exact, 0.985)


def test_few_windows_all_favouring_one_model_do_not_hide_the_seeds_spread():
    """vic_elec's case: 7 windows, every one lower for the model after averaging the seeds, but the reference's
    seeds range from far better to far worse. Resampling the seed-averaged windows alone gave an interval below 0;
    drawing the seeds too puts 0 inside it."""
    rng = np.random.default_rng(5)
    size = rng.uniform(50, 150, 7)
    base = rng.uniform(0.04, 0.06, 7) * size
    reference = np.stack([base * factor for factor in (0.6, 1.0, 1.4)])
    loss = np.stack([base * factor for factor in (0.88, 0.90, 0.92)])
    assert (loss.mean(axis=0) < reference.mean(axis=0)).all()
    difference, low, high = paired_difference(loss, reference, size)
    assert difference == pytest.approx(-0.1 * base.sum() / size.sum())
    assert low < 0 < high
