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
