"""Forecast accuracy: MASE, mean weighted quantile loss, sMAPE and 80% coverage, through GluonTS's ``gluonts.ev``.

    inputs, _ = split_windows(data.test, data.prediction_length)
    forecasts = list(predictor.predict(inputs))
    score(forecasts, data.test, data.prediction_length, seasonality=12)
    # {"MASE": 1.43, "mean_wQL": 0.087, "sMAPE": 0.19, "coverage_80": 0.74}

Every metric pools all test windows and horizon steps (series of equal horizon weigh equally); missing
actuals (NaN) are left out, and so are the points where a ratio is 0 / 0.
"""

from __future__ import annotations

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


def score(
    forecasts: Sequence[Any],
    test_entries: Sequence[dict[str, Any]],
    prediction_length: int,
    seasonality: int,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
) -> dict[str, float]:
    """Score GluonTS ``Forecast`` objects, one per test window, against the windows' last values.

    - ``MASE``: ``|y − median| / seasonal error`` averaged over all points, the seasonal error being the
      mean ``|y_t − y_{t−seasonality}|`` of each window's input (its in-sample seasonal naive error);
    - ``mean_wQL``: for each ``q`` in ``quantiles``, ``Σ 2|y − ŷ_q|·|1{y ≤ ŷ_q} − q| / Σ |y|`` over all
      points, averaged over ``q`` (a CRPS approximation);
    - ``sMAPE``: mean of ``2|y − median| / (|y| + |median|)`` (a fraction in [0, 2], not percent);
    - ``coverage_80``: share of actuals inside the forecast's ``[q0.1, q0.9]`` interval.
    """
    from gluonts.ev.aggregations import Mean
    from gluonts.ev.metrics import MASE, SMAPE, DirectMetric, MeanWeightedSumQuantileLoss
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
    errors = [
        seasonal_error(np.ma.masked_invalid(np.asarray(entry["target"], dtype=np.float64)), seasonality, -1)
        for entry in inputs
    ]
    data = ChainMap(
        {"label": np.ma.masked_invalid(labels), "seasonal_error": np.ma.stack(errors)},
        BatchForecast(forecasts),  # type: ignore[arg-type]
    )
    metrics = {
        "MASE": MASE()(axis=None),
        "mean_wQL": MeanWeightedSumQuantileLoss(quantile_levels=list(quantiles))(axis=None),
        "sMAPE": SMAPE()(axis=None),
        "coverage_80": DirectMetric(name="coverage_80", stat=interval_coverage, aggregate=Mean(axis=None)),
    }
    return {name: float(metric.update(data).get()) for name, metric in metrics.items()}


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
