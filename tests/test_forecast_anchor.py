"""Forecasts keep the data's own timestamps: where in its period a CSV series is dated (month ends, days at 09:00)
and, for time-zone-aware sub-daily data, the zone its times were converted into (UTC)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import forecast_config
from gluonts.model.forecast import SampleForecast

from pararnn_ts.forecast.csv_data import CsvDataset
from pararnn_ts.forecast.data import JsonLinesDataset, write_json_lines
from pararnn_ts.forecast.predictions import FORECASTS_FILE, SAMPLES_FILE, forecast_frame, write_forecasts

H = 3


def dated_csv(path: Path, times: pd.DatetimeIndex, item: str = "a") -> Path:
    """One series of ``times`` (as ISO text, with their offset when aware) and values 0, 1, ..."""
    text = times.strftime("%Y-%m-%dT%H:%M:%S%z") if times.tz is not None else times.strftime("%Y-%m-%d %H:%M:%S")
    frame = pd.DataFrame({"item_id": item, "timestamp": text, "target": np.arange(len(times), dtype=float)})
    frame.to_csv(path, index=False)
    return path


def forecast_after(data, horizon: int = H) -> SampleForecast:
    """A forecast of the ``horizon`` steps after the data's (one) series."""
    (series,) = data.test
    start = series["start"] + len(series["target"])
    return SampleForecast(np.zeros((2, horizon)), start_date=start, item_id=series["item_id"])


#: (freq, how the user dates the steps, the anchor recorded): the first forecast is the last date + 1 step
DATED = [
    ("M", "ME", pd.Timedelta(days=-1)),  # month ends: 2019-12-31 -> 2020-01-31, 2020-02-29
    ("Q", "QE", pd.Timedelta(days=-1)),  # quarter ends
    ("Y", "YE", pd.Timedelta(days=-1)),  # year ends
    ("M", "MS", pd.Timedelta(0)),  # month starts: the stamps of data without an anchor
    ("D", "D", pd.Timedelta(hours=9)),  # days at 09:00 (the dates start at 09:00 below)
    ("W", "W-MON", pd.Timedelta(0)),  # Monday-dated weeks under W (W-SUN weeks start on Monday)
    ("W", "W-SUN", pd.Timedelta(days=-1)),  # Sunday-dated weeks: the W-SUN period's last day
    ("h", "h", pd.Timedelta(minutes=17)),  # hours at :17
    ("MS", "MS", pd.Timedelta(0)),  # freq as pandas' period-start aliases, which mean the periods they begin
    ("QS-APR", "QS-APR", pd.Timedelta(0)),  # quarters from April: Q-MAR periods
    ("2YS-JUL", "2YS-JUL", pd.Timedelta(0)),  # two years from July: 2Y-JUN periods
]


@pytest.mark.parametrize(("freq", "dates", "anchor"), DATED)
def test_csv_series_keep_their_anchor_and_forecasts_are_stamped_on_it(tmp_path, freq, dates, anchor):
    first = {"D": "2019-11-01 09:00", "h": "2019-12-30 00:17"}.get(freq, "2015-01-01")
    times = pd.date_range(first, periods=30, freq=dates)
    data = CsvDataset(str(dated_csv(tmp_path / "dated.csv", times)), freq, H, item_id_column="item_id").load()
    assert data.anchors == {"a": anchor} and data.time_zone is None
    frame = forecast_frame([forecast_after(data)], anchors=data.anchors)
    expected = pd.date_range(times[-1], periods=H + 1, freq=dates)[1:]  # the user's next dates
    assert frame["timestamp"].tolist() == expected.tolist()
    assert (frame["forecast_start"] == expected[0]).all()


def test_month_end_forecasts_are_stamped_on_month_ends():
    """2019-12-31 under M: the forecasts of 2020-01 … 2020-03 are stamped 2020-01-31, 2020-02-29, 2020-03-31
    (not the months' first days), beside the period; a series without an anchor keeps the period start."""
    made = [SampleForecast(np.zeros((2, H)), start_date=pd.Period("2020-01", "M"), item_id=item) for item in "ab"]
    frame = forecast_frame(made, anchors={"a": pd.Timedelta(days=-1)})
    stamps = [str(time.date()) for time in frame["timestamp"]]
    assert stamps == ["2020-01-31", "2020-02-29", "2020-03-31", "2020-01-01", "2020-02-01", "2020-03-01"]
    assert frame["period"].tolist() == ["2020-01", "2020-02", "2020-03"] * 2
    assert frame["forecast_start"].astype(str).tolist() == ["2020-01-31"] * H + ["2020-01-01"] * H


def test_days_stamped_at_a_fixed_hour_are_forecast_at_that_hour():
    made = [SampleForecast(np.zeros((2, H)), start_date=pd.Period("2020-01-01", "D"), item_id="a")]
    frame = forecast_frame(made, anchors={"a": pd.Timedelta(hours=9)})
    assert frame["timestamp"].tolist() == list(pd.date_range("2020-01-01 09:00", periods=H, freq="D"))


def test_rows_at_varying_places_in_their_periods_have_no_anchor(tmp_path):
    """Monthly data on the 5th, 10th, 15th, ...: neither the offset from the month's start nor from its end is the
    same for every row, so the forecasts are stamped as without an anchor (the month's start)."""
    times = pd.DatetimeIndex([f"2019-{month:02d}-{5 * (month % 5 + 1):02d}" for month in range(1, 13)])
    frames = [pd.read_csv(dated_csv(tmp_path / "varying.csv", times, "vary"))]
    frames.append(pd.read_csv(dated_csv(tmp_path / "ends.csv", pd.date_range("2019-01", periods=12, freq="ME"), "end")))
    pd.concat(frames).to_csv(tmp_path / "both.csv", index=False)
    data = CsvDataset(str(tmp_path / "both.csv"), "M", H).load()
    assert data.anchors == {"end": pd.Timedelta(days=-1)}  # "vary" has none
    vary = next(series for series in data.test if series["item_id"] == "vary")
    frame = forecast_frame([forecast_after(replace(data, test=[vary]))], anchors=data.anchors)
    assert frame["timestamp"].tolist() == list(pd.date_range("2020-01-01", periods=H, freq="MS"))


def test_json_lines_data_has_no_anchor_nor_zone(tmp_path):
    entry = {"start": pd.Period("2020-01", "M"), "target": np.arange(12, dtype=np.float32), "item_id": "a"}
    data = JsonLinesDataset(str(write_json_lines([entry], tmp_path / "a.jsonl")), "M", H).load()
    assert data.anchors == {} and data.time_zone is None


@pytest.mark.parametrize(
    ("freq", "steps", "zone", "time_zone"),
    [
        ("h", "h", "Europe/Berlin", "UTC"),  # aware, sub-daily (two offsets: winter and summer time): UTC
        ("h", "h", "Asia/Kolkata", "UTC"),  # one offset, +05:30
        ("h", "h", None, None),  # naive stays naive
        ("D", "D", "Europe/Berlin", None),  # aware days keep their local date, naive (the offset is dropped)
    ],
)
def test_the_zone_of_the_data_times(tmp_path, freq, steps, zone, time_zone):
    times = pd.date_range("2024-03-30 22:00" if freq == "h" else "2024-03-20", periods=12, freq=steps, tz=zone)
    data = CsvDataset(str(dated_csv(tmp_path / "zoned.csv", times)), freq, H).load()
    assert data.time_zone == time_zone


def test_forecasts_of_time_zone_aware_hours_are_written_in_utc_with_their_offset(tmp_path):
    """Hourly data stamped in Berlin time (across the DST change) is forecast in UTC, and forecasts.csv says so:
    ``+00:00``, which pandas reads back as UTC times, equal to the user's next hours."""
    times = pd.date_range("2024-03-30 22:00", periods=12, freq="h", tz="Europe/Berlin")
    data = CsvDataset(str(dated_csv(tmp_path / "berlin.csv", times)), "h", H).load()
    table, samples = write_forecasts([forecast_after(data)], tmp_path / "out", anchors=data.anchors, time_zone="UTC")
    assert "2024-03-31 09:00:00+00:00" in table.read_text()
    written = pd.read_csv(table, parse_dates=["timestamp", "forecast_start"])
    assert str(written["timestamp"].dt.tz) == "UTC"
    assert written["timestamp"].tolist() == list(pd.date_range(times[-1], periods=H + 1, freq="h")[1:])
    assert np.load(samples)["forecast_start"].tolist() == ["2024-03-31 09:00:00+00:00"]
    naive = write_forecasts([forecast_after(data)], tmp_path / "naive")[0].read_text()
    assert "+00:00" not in naive  # without a zone the times stay naive


#: the user's data for the CLI test: (freq, the dates of its 60 steps); its forecasts come at the next dates
CLI_DATA = {
    "month_ends": ("M", pd.date_range("2015-01-31", "2019-12-31", freq="ME")),  # 2019-12-31 -> 2020-01-31, ...
    "berlin_hours": ("h", pd.date_range("2024-03-29 00:00", periods=60, freq="h", tz="Europe/Berlin")),
}


@pytest.mark.usefixtures("bare_argv")
@pytest.mark.parametrize("name", CLI_DATA)
def test_predict_stamps_the_forecasts_as_the_data_is_dated(tmp_path, monkeypatch, name):
    """Through the CLI: month-end data whose last date is 2019-12-31 is forecast at 2020-01-31, 2020-02-29, ...;
    Berlin hours at the next hours, in UTC with ``+00:00``."""
    from pararnn_ts.cli import main

    freq, times = CLI_DATA[name]
    level = 100 + 10 * np.sin(2 * np.pi * np.arange(len(times)) / 12) + np.random.default_rng(0).normal(size=len(times))
    frames = [
        pd.read_csv(dated_csv(tmp_path / f"{item}.csv", times, item)).assign(target=level + k)
        for k, item in enumerate("xy")
    ]
    pd.concat(frames).to_csv(tmp_path / "mine.csv", index=False)
    dataset = {
        "class_path": "pararnn_ts.forecast.csv_data.CsvDataset",
        "init_args": {"path": "mine.csv", "freq": freq, "prediction_length": H},
    }
    config = forecast_config(
        dataset, max_steps=2, log_every_n_steps=1, enable_progress_bar=False, enable_model_summary=False
    )
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.chdir(tmp_path)
    tiny = [
        "--model.init_args.hidden_size=8",
        "--model.init_args.num_layers=1",
        "--model.init_args.num_parallel_samples=10",
        "--model.init_args.mode=sequential",
    ]
    main(["fit", "-c", "mine.yaml", *tiny])
    checkpoint = tmp_path / "runs" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    main(["predict", "-c", "mine.yaml", *tiny, f"--ckpt_path={checkpoint}"])
    version = tmp_path / "runs" / "lightning_logs" / "version_1"
    table = pd.read_csv(version / FORECASTS_FILE)
    following = pd.date_range(times[-1], periods=H + 1, freq=times.freq)[1:]
    if times.tz is None:  # as the user's dates: 2020-01-31, 2020-02-29, 2020-03-31
        expected = [f"{time:%Y-%m-%d}" for time in following]
    else:  # the same instants in UTC: 2024-03-31 10:00:00+00:00, ...
        expected = [str(time.tz_convert("UTC")) for time in following]
    assert table["timestamp"].tolist() == expected * 2
    assert table["forecast_start"].tolist() == [expected[0]] * 2 * H
    assert np.load(version / SAMPLES_FILE)["forecast_start"].tolist() == [expected[0]] * 2
    in_utc = following if following.tz is None else following.tz_convert(None)
    assert table["period"].tolist() == in_utc.to_period(freq).astype(str).tolist() * 2
