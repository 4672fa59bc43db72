"""How much a benchmark's ``mean_wQL`` difference hangs on a few test windows: paired bootstrap over windows.

``mean_wQL`` sums errors in the data's units, so one large series can decide a dataset (on M1 monthly one
window of 617 holds 15% of ``Σ |y|``). The benchmark keeps each run's per-window losses
(:func:`~pararnn_ts.forecast.metrics.window_quantile_losses`) in ``window_losses.csv`` and reports each
model's difference to a reference model with an interval from resampling the windows.
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
    """``mean_wQL`` of a model minus a reference's, averaged over seeds, and its bootstrap interval.

    ``loss`` and ``reference`` ``(S, N)``: :func:`window_quantile_losses` of the same ``N`` windows for ``S``
    seeds each; ``size`` ``(N,)``: the windows' ``Σ |y|``. The interval at ``level`` resamples the windows
    (the same ones for both models), so it shows how much the difference hangs on a few windows.
    Returns ``(difference, low, high)``.
    """
    if loss.ndim != 2 or loss.shape[1:] != size.shape or reference.shape[1:] != size.shape:
        raise ValueError(
            f"paired_difference: loss {loss.shape} and reference {reference.shape} must be (seeds, {len(size)})"
        )
    gap = loss.mean(axis=0) - reference.mean(axis=0)  # the denominator is the same for every seed
    counts = np.random.default_rng(seed).multinomial(len(size), np.full(len(size), 1 / len(size)), size=draws)
    resampled = (counts @ gap) / np.maximum(counts @ size, np.finfo(float).tiny)
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
    with its 95% interval over windows (:func:`paired_difference`), on the seeds both ran. The label names
    the dataset, its number of windows and the largest window's share of ``Σ |y|``."""
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
        label = f"{dataset} ({len(size)} windows; largest {size.max() / size.sum():.0%} of Σ\\|y\\|)"
        seeds_note = f" ({len(seeds)} of {len(base)} seeds)" if len(seeds) != len(base) else ""
        cells[label, model] = f"{difference:+.4f} [{low:+.4f}, {high:+.4f}]{seeds_note}"
    return cells
