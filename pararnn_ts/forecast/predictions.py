"""Forecasts as files: a long table of quantiles per step and the sample paths behind it.

    frame = forecast_frame(forecasts, actuals)        # one row per forecast and step
    write_forecasts(forecasts, folder, actuals)       # folder/forecasts.csv and folder/forecast_samples.npz
    write_forecasts(forecasts, folder, anchors=data.anchors, time_zone=data.time_zone)   # stamped as the data is

``forecasts.csv`` has the columns ``item_id``, ``forecast_start`` (the first step's ``timestamp``), ``step``
(1 … H), ``timestamp`` (see :func:`step_times`; with its offset, ``+00:00``, where the data's times were converted
to UTC), ``period`` (the step's ``freq`` period as pandas writes it: ``2020-01``, ``2020Q1``,
``2021-07-19/2021-07-25``, ...), ``mean``, ``q0.1`` … ``q0.9`` and, when the actual values are known, ``actual``
(empty where missing); values at float32 precision (``9.06``, not ``9.0600004196167``).
``forecast_samples.npz`` holds ``samples`` ``(N, S, H)`` float32 with ``item_id`` and ``forecast_start`` ``(N,)``,
in the table's order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from gluonts.model.forecast import SampleForecast

from .metrics import DEFAULT_QUANTILES

FORECASTS_FILE = "forecasts.csv"
SAMPLES_FILE = "forecast_samples.npz"


def step_times(periods: pd.PeriodIndex, anchor: pd.Timedelta | None = None) -> pd.DatetimeIndex:
    """The ``timestamp`` of each forecast step: at ``anchor``, the place in its period where the series' own
    timestamps fall (:func:`~pararnn_ts.forecast.data.anchor_of`: ``>= 0`` after the period's start, ``< 0`` before
    its end; the last day of each month for data dated on month ends); so the first forecast is the last observed
    timestamp + 1 step. Without one (data that gives periods, or timestamps at varying places in them): the day a
    week is anchored on, which is its last (``W``, i.e. ``W-SUN``: the Sunday, as ``pd.date_range(freq="W")`` dates
    weeks; ``W-MON``: the Monday); otherwise the start of the step's period (the month's first day for ``M``, the
    hour for ``h``), as GluonTS dates periods."""
    if anchor is not None:
        reference = periods.start_time if anchor >= pd.Timedelta(0) else periods.end_time + pd.Timedelta(1, "ns")
        return reference + anchor
    if isinstance(periods.freq, pd.offsets.Week):
        return periods.end_time.normalize()
    return periods.to_timestamp()


def float32_decimal(values: np.ndarray) -> np.ndarray:
    """``values`` at float32 precision, each as the float64 of its shortest float32 decimal, so a CSV file shows
    the float32 ``9.06`` as ``9.06`` (not ``9.0600004196167``) and reads back to the same float32."""
    return np.asarray(np.asarray(values, dtype=np.float32).astype(str), dtype=np.float64)


def forecast_frame(
    forecasts: Sequence[SampleForecast],
    actuals: Sequence[np.ndarray] | None = None,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    anchors: Mapping[str, pd.Timedelta] | None = None,
    time_zone: str | None = None,
) -> pd.DataFrame:
    """One row per forecast and step (see the module docstring); ``actuals``: ``(H,)`` per forecast, or ``None``.

    ``anchors``: each series' anchor by ``item_id`` (``ForecastData.anchors``; see :func:`step_times`).
    ``time_zone``: the zone of the data's times (``ForecastData.time_zone``, e.g. ``"UTC"``): the timestamps are
    then aware, written with their offset (``2023-05-30 01:00:00+00:00``); ``None``: naive, as the data's."""
    anchors = anchors or {}
    if actuals is not None and len(actuals) != len(forecasts):
        raise ValueError(
            f"forecast_frame: {len(actuals)} actuals for {len(forecasts)} forecasts; give one per forecast"
        )
    frames = []
    for number, forecast in enumerate(forecasts):
        timestamps = step_times(forecast.index, anchors.get(forecast.item_id))
        if time_zone is not None:
            timestamps = timestamps.tz_localize(time_zone)
        columns = {
            "item_id": forecast.item_id if forecast.item_id is not None else str(number),
            "forecast_start": timestamps[0],
            "step": np.arange(1, len(timestamps) + 1),
            "timestamp": timestamps,
            "period": forecast.index.astype(str),
            "mean": float32_decimal(forecast.mean),
        }
        columns.update({f"q{q:g}": float32_decimal(forecast.quantile(q)) for q in quantiles})
        if actuals is not None:
            actual = np.asarray(actuals[number])
            if actual.shape != (len(timestamps),):
                raise ValueError(
                    f"forecast_frame: actuals[{number}] has shape {actual.shape}, expected ({len(timestamps)},), "
                    "one value per forecast step"
                )
            columns["actual"] = float32_decimal(actual)
        frames.append(pd.DataFrame(columns))
    return pd.concat(frames, ignore_index=True)


def write_forecasts(
    forecasts: Sequence[SampleForecast],
    folder: str | Path,
    actuals: Sequence[np.ndarray] | None = None,
    anchors: Mapping[str, pd.Timedelta] | None = None,
    time_zone: str | None = None,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
) -> tuple[Path, Path]:
    """Write :func:`forecast_frame` to ``folder/forecasts.csv`` and the samples to ``folder/forecast_samples.npz``."""
    if not forecasts:
        raise ValueError("write_forecasts: no forecasts to write")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    table, samples = folder / FORECASTS_FILE, folder / SAMPLES_FILE
    frame = forecast_frame(forecasts, actuals, quantiles, anchors, time_zone)
    frame.to_csv(table, index=False)
    first_steps = frame[frame["step"] == 1]
    np.savez_compressed(
        samples,
        samples=np.stack([np.asarray(forecast.samples, dtype=np.float32) for forecast in forecasts]),
        item_id=first_steps["item_id"].to_numpy(dtype=str),  # fixed-width strings: loadable without pickle
        forecast_start=first_steps["forecast_start"].astype(str).to_numpy(dtype=str),
    )
    return table, samples
