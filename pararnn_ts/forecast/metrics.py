"""Forecast accuracy: MASE, mean weighted quantile loss, sMAPE and 80% coverage, through GluonTS's ``gluonts.ev``.

    inputs, _ = split_windows(data.test, data.prediction_length)
    forecasts = list(predictor.predict(inputs))
    score(forecasts, data.test, data.prediction_length, seasonality=12)
    # {"MASE": 1.43, "mean_wQL": 0.087, "sMAPE": 0.19, "coverage_80": 0.74}

Missing actuals (NaN) are left out, and so are the points where a ratio is 0 / 0. ``MASE``, ``sMAPE`` and
``coverage_80`` weigh every test window the same, as GluonTS's ``Evaluator`` averages per series: with
missing actuals, each window's observed points are averaged, then the windows (:func:`window_mean`); where
every window has all its actuals that is the mean over all points, bit for bit as before. ``mean_wQL`` is a
ratio of sums over all points, as in the ``Evaluator``. Two differences from the ``Evaluator`` remain:

- a window whose input has a seasonal error of 0 (a constant or all-zero past) or none (no two observed values
  ``seasonality`` steps apart) has no finite MASE: the ``Evaluator``'s MASE is then inf, ours leaves the window
  out, warns, and counts such windows in ``MASE_excluded_windows`` (a key only there when there are some);
- a point whose sMAPE is 0 / 0 (actual and median 0) is left out without its window's other points weighing
  more, so sMAPE on fully observed windows stays the mean over the points.
"""

from __future__ import annotations

import math
import warnings
from collections import ChainMap
from collections.abc import Sequence
from typing import Any

import numpy as np

DEFAULT_QUANTILES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: the names :func:`score` returns; lower is better except for ``coverage_80``, whose target is 0.8
METRICS = ("MASE", "mean_wQL", "sMAPE", "coverage_80")


def split_windows(
    test_entries: Sequence[dict[str, Any]], prediction_length: int
) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Cut each test window into the predictor's input and the actuals to forecast.

    Returns ``inputs`` (each entry without its last ``prediction_length`` target values; covariates kept
    whole, so they cover the horizon as GluonTS predictors expect) and ``labels`` ``(N, prediction_length)``.
    """
    inputs = [{**entry, "target": entry["target"][:-prediction_length]} for entry in test_entries]
    labels = np.stack([np.asarray(entry["target"][-prediction_length:], dtype=np.float64) for entry in test_entries])
    return inputs, labels


def interval_coverage(data: dict[str, np.ndarray], lower: str = "0.1", upper: str = "0.9") -> np.ndarray:
    """1 where the actual lies inside ``[q_lower, q_upper]`` of the forecast, else 0 (masked where missing)."""
    label = data["label"]
    return ((data[lower] <= label) & (label <= data[upper])).astype(float)


def window_mean(points: np.ma.MaskedArray, observed: np.ndarray) -> float:
    """The mean of ``points`` ``(N, H)`` (masked where not scored) with every window weighing the same: each
    point weighs ``H / n``, ``n`` being the observed actuals of its window (``observed``: ``(N, H)`` bool).

    Where the scored points are the observed ones, that is the mean over windows of each window's mean (windows
    with none left out), as GluonTS's ``Evaluator`` averages per series; where every window is fully observed,
    the weights are 1 and it is the plain mean over the scored points, to the bit. NaN when none is scored.
    """
    weights = points.shape[1] / np.maximum(observed.sum(axis=1, keepdims=True), 1)
    total = (~np.ma.getmaskarray(points) * weights).sum()
    return float(np.ma.sum(points * weights) / total) if total else math.nan


def unscaled_windows(observed: np.ndarray, seasonal_errors: np.ma.MaskedArray) -> int:
    """How many windows with an observed actual (``observed``: ``(N, H)`` bool) have a seasonal error of 0 or
    none, so MASE's x / 0."""
    return int((observed.any(axis=1) & ~(seasonal_errors.filled(0.0) > 0)).sum())


def score(
    forecasts: Sequence[Any],
    test_entries: Sequence[dict[str, Any]],
    prediction_length: int,
    seasonality: int,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
) -> dict[str, float]:
    """Score GluonTS ``Forecast`` objects, one per test window, against the windows' last values.

    - ``MASE``: ``|y − median| / seasonal error``, the seasonal error being the mean ``|y_t − y_{t−seasonality}|``
      of the window's input (its in-sample seasonal naive error); windows where that is 0 or undefined are left
      out, with a warning, and counted in ``MASE_excluded_windows`` (returned only when not 0);
    - ``mean_wQL``: for each ``q`` in ``quantiles``, ``Σ 2|y − ŷ_q|·|1{y ≤ ŷ_q} − q| / Σ |y|`` over all
      points, averaged over ``q`` (a CRPS approximation);
    - ``sMAPE``: ``2|y − median| / (|y| + |median|)`` (a fraction in [0, 2], not percent);
    - ``coverage_80``: share of actuals inside the forecast's ``[q0.1, q0.9]`` interval.

    ``MASE``, ``sMAPE`` and ``coverage_80`` average each window's observed points, then the windows (see the
    module docstring).
    """
    from gluonts.ev.metrics import MeanWeightedSumQuantileLoss
    from gluonts.ev.stats import absolute_scaled_error, symmetric_absolute_percentage_error
    from gluonts.ev.ts_stats import seasonal_error
    from gluonts.model.evaluation import BatchForecast

    forecasts = list(forecasts)
    if len(forecasts) != len(test_entries):
        raise ValueError(f"score: {len(forecasts)} forecasts for {len(test_entries)} test windows; pass one each")
    lengths = {forecast.prediction_length for forecast in forecasts}
    if lengths != {prediction_length}:
        raise ValueError(
            f"score: forecasts have horizons {sorted(lengths)}, not prediction_length={prediction_length}; "
            "build the predictor with the dataset's prediction_length"
        )
    if not isinstance(seasonality, int) or seasonality < 1:
        raise ValueError(f"score: seasonality must be a positive int, got {seasonality!r}")
    inputs, labels = split_windows(test_entries, prediction_length)
    errors = np.ma.stack(
        [
            seasonal_error(np.ma.masked_invalid(np.asarray(entry["target"], dtype=np.float64)), seasonality, -1)
            for entry in inputs
        ]
    )
    data = ChainMap(
        {"label": np.ma.masked_invalid(labels), "seasonal_error": errors},
        BatchForecast(forecasts),  # type: ignore[arg-type]
    )
    wql = MeanWeightedSumQuantileLoss(quantile_levels=list(quantiles))(axis=None)
    observed = np.isfinite(labels)
    metrics = {
        "MASE": window_mean(absolute_scaled_error(data, "0.5"), observed),
        "mean_wQL": float(wql.update(data).get()),
        "sMAPE": window_mean(symmetric_absolute_percentage_error(data, "0.5"), observed),
        "coverage_80": window_mean(interval_coverage(data), observed),
    }
    excluded = unscaled_windows(observed, errors[:, 0])
    if excluded:
        warnings.warn(
            f"score: MASE leaves out {excluded} of {len(labels)} test windows whose input has a seasonal error of 0 "
            f"or none (a constant or all-zero past, or too few observed values for seasonality={seasonality}), so "
            "their scaled errors would be x / 0 (GluonTS's Evaluator gives inf); MASE averages the other windows, "
            "and MASE_excluded_windows counts these",
            stacklevel=2,
        )
        metrics["MASE_excluded_windows"] = float(excluded)
    return metrics


def window_quantile_losses(
    forecasts: Sequence[Any],
    test_entries: Sequence[dict[str, Any]],
    prediction_length: int,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
) -> tuple[np.ndarray, np.ndarray]:
    """Each test window's share of ``mean_wQL``: its quantile loss and its ``Σ |y|``, both ``(N,)``.

    The loss is ``Σ_h 2|y − ŷ_q|·|1{y ≤ ŷ_q} − q|`` averaged over ``q`` (missing actuals left out), so
    ``loss.sum() / size.sum()`` is :func:`score`'s ``mean_wQL``
    (:func:`~pararnn_ts.forecast.paired.paired_difference` resamples them).
    """
    _, labels = split_windows(test_entries, prediction_length)
    observed = np.isfinite(labels)
    actual = np.where(observed, labels, 0.0)
    loss = np.zeros(len(labels))
    for q in quantiles:
        predicted = np.stack([np.asarray(forecast.quantile(q), dtype=np.float64) for forecast in forecasts])
        pinball = 2 * np.abs(actual - predicted) * np.abs((actual <= predicted) - q)
        loss += np.where(observed, pinball, 0.0).sum(axis=1) / len(quantiles)
    return loss, np.abs(actual).sum(axis=1)
