"""How much a benchmark's ``mean_wQL`` difference hangs on a few test windows and on the seeds: a two-level
paired bootstrap.

``mean_wQL`` sums errors in the data's units, so one large series can decide a dataset (on M1 monthly one
window of 617 holds 15% of ``Σ |y|``), and a deep model's seeds can differ by more than the models do. The
benchmark keeps each run's per-window losses (:func:`~pararnn_ts.forecast.metrics.window_quantile_losses`) in
``window_losses.csv`` and reports each model's difference to a reference model with an interval from a two-level
bootstrap (:func:`paired_difference`): every draw resamples, with replacement, each model's seeds (the two
models independently) and the windows (the same windows for both models), and takes the difference of the
two models' ``mean_wQL`` on that draw (each the mean over its drawn seeds). The interval is the draws' 2.5 and
97.5 percentiles. With one seed per model it is the plain paired bootstrap over windows; with windows that all
look alike it is the spread of the seeds. Resampling the windows alone, from seed-averaged losses, left the
seeds' spread out: with vic_elec's 7 windows, all 7 favouring one model after averaging gave an interval that
could not hold 0, however far apart the seeds were.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .csv_rows import read_rows, write_rows

WINDOW_COLUMNS = ("dataset", "model", "seed", "window", "loss", "size")


def paired_difference(
    loss: np.ndarray, reference: np.ndarray, size: np.ndarray, draws: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """``mean_wQL`` of a model minus a reference's, each averaged over its seeds, and the two-level bootstrap
    interval of that difference.

    ``loss`` ``(S, N)`` and ``reference`` ``(S_ref, N)``: :func:`window_quantile_losses` of the same ``N`` windows,
    one row per seed; ``size`` ``(N,)``: the windows' ``Σ |y|``. The difference is the mean over ``loss``'s seeds of
    their ``mean_wQL`` minus the same of ``reference`` (the denominator ``Σ size`` is the same for every seed).

    Each of the ``draws`` resamples draws ``S`` of ``loss``'s rows and ``S_ref`` of ``reference``'s rows with
    replacement, independently, and ``N`` windows with replacement, the same windows for both models; its
    difference is the mean ``mean_wQL`` of the drawn seeds of one minus the other's, on the drawn windows:
    ``Σ_w c_w (mean_s loss[s, w] - mean_r reference[r, w]) / Σ_w c_w size[w]`` (``c_w``: how often window ``w`` was
    drawn). The interval at ``level`` is the draws' percentiles, so it widens both with how much the difference
    hangs on a few windows and with how much the seeds disagree. Returns ``(difference, low, high)``.
    """
    if loss.ndim != 2 or reference.ndim != 2 or loss.shape[1:] != size.shape or reference.shape[1:] != size.shape:
        raise ValueError(
            f"paired_difference: loss {loss.shape} and reference {reference.shape} must be (seeds, {len(size)})"
        )
    if not len(loss) or not len(reference):
        raise ValueError("paired_difference: each model needs the losses of at least one seed")
    gap = loss.mean(axis=0) - reference.mean(axis=0)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(len(size), np.full(len(size), 1 / len(size)), size=draws)  # (draws, N)
    own, base = (
        rng.multinomial(len(runs), np.full(len(runs), 1 / len(runs)), size=draws) for runs in (loss, reference)
    )
    drawn_gap = (own @ loss) / len(loss) - (base @ reference) / len(reference)  # (draws, N): seed means per draw
    resampled = (counts * drawn_gap).sum(axis=1) / np.maximum(counts @ size, np.finfo(float).tiny)
    low, high = np.quantile(resampled, [(1 - level) / 2, (1 + level) / 2])
    return float(gap.sum() / size.sum()), float(low), float(high)


def window_rows(dataset: str, model: str, seed: int, loss: np.ndarray, size: np.ndarray) -> list[dict[str, Any]]:
    """One ``window_losses.csv`` row per test window of one run."""
    return [
        {"dataset": dataset, "model": model, "seed": seed, "window": index, "loss": float(a), "size": float(b)}
        for index, (a, b) in enumerate(zip(loss, size, strict=True))
    ]


def read_window_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``window_losses.csv`` (none if it does not exist)."""
    return read_rows(path, ("seed", "window"), ("loss", "size")) if path.exists() else []


def write_window_rows(rows: Sequence[dict[str, Any]], path: Path) -> None:
    write_rows(rows, path, WINDOW_COLUMNS)


def runs_of(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str], dict[int, tuple[np.ndarray, np.ndarray]]]:
    """``{(dataset, model): {seed: (loss, size)}}`` of ``window_losses.csv`` rows, windows in order."""
    grouped: dict[tuple[str, str], dict[int, list[tuple[int, float, float]]]] = {}
    for row in rows:
        runs = grouped.setdefault((row["dataset"], row["model"]), {})
        runs.setdefault(row["seed"], []).append((row["window"], row["loss"], row["size"]))
    result: dict[tuple[str, str], dict[int, tuple[np.ndarray, np.ndarray]]] = {}
    for key, runs in grouped.items():
        for seed, windows in runs.items():
            ordered = np.array(sorted(windows))
            result.setdefault(key, {})[seed] = ordered[:, 1], ordered[:, 2]
    return result


def paired_cells(rows: Sequence[dict[str, Any]], reference: str) -> dict[tuple[str, str], str]:
    """``{(dataset label, model): "difference [low, high]"}``: each model's ``mean_wQL`` minus ``reference``'s
    with its 95% two-level bootstrap interval over seeds and windows (:func:`paired_difference`), on the seeds both
    ran. The label names the dataset, its number of windows, the reference's number of seeds and the largest
    window's share of ``Σ |y|``; a cell behind which fewer seeds lie (a model that ran fewer) says so."""
    runs = runs_of(rows)
    cells = {}
    for (dataset, model), own in runs.items():
        base = runs.get((dataset, reference), {})
        seeds = sorted(set(base) & set(own))
        if model == reference or not seeds:
            continue
        size = base[seeds[0]][1]
        if any(len(own[seed][1]) != len(size) for seed in seeds):
            raise ValueError(f"window losses: {model!r} and {reference!r} have different windows on {dataset!r}")
        difference, low, high = paired_difference(
            np.stack([own[seed][0] for seed in seeds]), np.stack([base[seed][0] for seed in seeds]), size
        )
        seeds_behind = f"{len(base)} seed{'s' * (len(base) > 1)}"
        label = f"{dataset} ({len(size)} windows, {seeds_behind}; largest {size.max() / size.sum():.0%} of Σ\\|y\\|)"
        seeds_note = f" ({len(seeds)} of {len(base)} seeds)" if len(seeds) != len(base) else ""
        cells[label, model] = f"{difference:+.4f} [{low:+.4f}, {high:+.4f}]{seeds_note}"
    return cells
