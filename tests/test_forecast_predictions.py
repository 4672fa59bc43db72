"""Forecasts written as files: ``forecast_frame`` and ``write_forecasts``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from gluonts.model.forecast import SampleForecast

from pararnn_ts.forecast.predictions import FORECASTS_FILE, SAMPLES_FILE, forecast_frame, write_forecasts


def forecasts(count: int = 2, samples: int = 11, horizon: int = 3) -> list[SampleForecast]:
    rng = np.random.default_rng(0)
    return [
        SampleForecast(
            rng.normal(size=(samples, horizon)), start_date=pd.Period("2020-03", freq="M") + i, item_id=f"s{i}"
        )
        for i in range(count)
    ]


def test_frame_has_one_row_per_forecast_step_with_its_mean_quantiles_and_actual():
    made = forecasts()
    actuals = [np.array([1.0, np.nan, 3.0]), np.array([4.0, 5.0, 6.0])]
    frame = forecast_frame(made, actuals)
    assert len(frame) == 6 and frame["step"].tolist() == [1, 2, 3, 1, 2, 3]
    assert frame["item_id"].tolist() == ["s0"] * 3 + ["s1"] * 3
    assert frame["timestamp"].tolist()[3:] == list(pd.date_range("2020-04-01", periods=3, freq="MS"))
    assert (frame["forecast_start"][3:] == pd.Timestamp("2020-04-01")).all()
    samples = np.concatenate([forecast.samples for forecast in made], axis=1)  # (S, 6) in the frame's order
    np.testing.assert_allclose(frame["mean"], samples.mean(0))
    ordered = np.sort(samples, axis=0)  # 11 samples: q0.1 is the 2nd smallest, q0.5 the 6th, q0.9 the 10th
    for q, rank in ((0.1, 1), (0.5, 5), (0.9, 9)):
        np.testing.assert_allclose(frame[f"q{q}"], ordered[rank])
    np.testing.assert_array_equal(frame["actual"], np.concatenate(actuals))


def test_write_forecasts_saves_the_table_and_the_sample_paths(tmp_path):
    made = forecasts()
    table, samples = write_forecasts(made, tmp_path / "out")
    assert (table.name, samples.name) == (FORECASTS_FILE, SAMPLES_FILE)
    assert "actual" not in pd.read_csv(table)
    saved = np.load(samples)  # no pickle needed
    np.testing.assert_allclose(saved["samples"], np.stack([forecast.samples for forecast in made]), rtol=1e-6)
    assert saved["item_id"].tolist() == ["s0", "s1"]
    assert saved["forecast_start"].tolist() == ["2020-03-01", "2020-04-01"]


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="one per forecast"):
        forecast_frame(forecasts(), [np.zeros(3)])
    with pytest.raises(ValueError, match=r"expected \(3,\)"):
        forecast_frame(forecasts(), [np.zeros(3), np.zeros(2)])
    with pytest.raises(ValueError, match="no forecasts"):
        write_forecasts([], tmp_path)


@pytest.mark.parametrize(
    ("freq", "dates", "last_observed", "period"),
    [
        ("W", "W", "2021-07-18", "2021-07-19/2021-07-25"),  # Sunday-dated weeks, as pd.date_range(freq="W") has them
        ("W-MON", "W-MON", "2021-07-19", "2021-07-20/2021-07-26"),  # Monday-dated weeks
        ("M", "MS", "2019-12-01", "2020-01"),  # months: the period's start
        ("D", "D", "2019-12-31", "2020-01-01"),
    ],
)
def test_the_first_timestamp_is_the_last_observed_one_plus_one_step(freq, dates, last_observed, period):
    """A week is stamped with the day its ``freq`` anchors it on (its last), so the first forecast is the last
    observed date + 1 step; other periods with their start; ``period`` names the step's period."""
    last = pd.Timestamp(last_observed)
    start = last.to_period(freq) + 1
    made = [SampleForecast(np.zeros((3, 2)), start_date=start, item_id="a")]
    frame = forecast_frame(made)
    assert frame["timestamp"].tolist() == list(pd.date_range(last, periods=3, freq=dates)[1:])
    assert frame["forecast_start"][0] == frame["timestamp"][0]
    assert frame["period"][0] == period


def test_values_are_written_at_float32_precision(tmp_path):
    """The float32 actual 9.06 is written 9.06 (not 9.0600004196167), and reads back to the same float32."""
    values = np.array([9.06, 1234567890.0, np.nan], dtype=np.float32)
    made = [SampleForecast(np.tile(values, (5, 1)), start_date=pd.Period("2020-01", freq="M"), item_id="a")]
    table, _ = write_forecasts(made, tmp_path, [values])
    text = table.read_text()
    assert "9.06," in text and "9.0600004196167" not in text
    saved = pd.read_csv(table)
    for column in ("actual", "mean", "q0.5"):
        np.testing.assert_array_equal(saved[column].to_numpy(np.float32), values)
