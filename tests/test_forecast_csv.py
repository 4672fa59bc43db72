"""``CsvDataset``: long-format CSV files load as the same series as GluonTS JSON lines, gaps and bad files."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pararnn_ts.forecast.csv_data import CsvDataset, TsDataDataset, parse_times
from pararnn_ts.forecast.data import ForecastData, JsonLinesDataset, write_json_lines

ROOT = Path(__file__).resolve().parents[1]
H = 3


def whole_series() -> list[dict]:
    """Three hourly series with missing values, two covariates and two static categories (coded 0..2)."""
    rng = np.random.default_rng(1)
    entries = []
    for i, (length, categories) in enumerate(((30, [0, 2]), (24, [1, 0]), (27, [2, 1]))):
        target = rng.normal(10 * (i + 1), 1, length).astype(np.float32)
        target[[2, 7]] = np.nan
        entries.append(
            {
                "start": pd.Period("2021-03-28 00:00", freq="h") + 5 * i,
                "target": target,
                "item_id": f"s{i}",
                "feat_dynamic_real": rng.normal(size=(2, length)).astype(np.float32),
                "feat_static_cat": np.array(categories),
            }
        )
    return entries


def long_frame(entries: list[dict]) -> pd.DataFrame:
    """One row per series and step (covariates and categories, as text, where the entries have them), shuffled."""
    frames = []
    for e in entries:
        length = len(e["target"])
        times = pd.period_range(e["start"], periods=length).to_timestamp().strftime("%Y-%m-%d %H:%M")
        columns = {"series": e["item_id"], "time": times, "sales": e["target"]}
        if "feat_dynamic_real" in e:
            columns |= {"temp": e["feat_dynamic_real"][0], "promo": e["feat_dynamic_real"][1]}
        if "feat_static_cat" in e:
            shop, kind = e["feat_static_cat"]
            columns |= {"shop": f"shop{shop}", "kind": "abc"[kind]}
        frames.append(pd.DataFrame(columns))
    return pd.concat(frames).sample(frac=1.0, random_state=0)


def csv_dataset(path: Path, **kwargs) -> CsvDataset:
    options = {
        "timestamp_column": "time",
        "target_column": "sales",
        "item_id_column": "series",
        "feat_dynamic_real_columns": ["temp", "promo"],
        "feat_static_cat_columns": ["shop", "kind"],
        "test_windows": 2,
    }
    return CsvDataset(str(path), "h", H, **(options | kwargs))


def assert_same_data(a: ForecastData, b: ForecastData) -> None:
    assert (a.freq, a.prediction_length, a.num_feat_dynamic_real, a.cardinality, a.seasonality) == (
        b.freq,
        b.prediction_length,
        b.num_feat_dynamic_real,
        b.cardinality,
        b.seasonality,
    )
    for split in ("train", "test"):
        for x, y in zip(getattr(a, split), getattr(b, split), strict=True):
            assert (x["item_id"], x["start"]) == (y["item_id"], y["start"])
            for key in ("target", "feat_dynamic_real", "feat_static_cat"):
                np.testing.assert_array_equal(x.get(key), y.get(key))


def test_a_long_csv_loads_as_the_same_series_as_json_lines(tmp_path):
    entries = whole_series()
    long_frame(entries).to_csv(tmp_path / "shops.csv", index=False)
    from_csv = csv_dataset(tmp_path / "shops.csv").load()
    from_json = JsonLinesDataset(str(write_json_lines(entries, tmp_path / "shops.jsonl")), "h", H, test_windows=2)
    assert_same_data(from_csv, from_json.load())
    assert from_csv.name == "shops" and len(from_csv.test) == 6


def test_a_missing_row_is_a_missing_value(tmp_path):
    entries = [{k: e[k] for k in ("start", "target", "item_id")} for e in whole_series()]
    frame = long_frame(entries)
    dropped = (frame["series"] == "s0") & (frame["time"] == "2021-03-28 04:00")  # s0's step 4
    dropped |= (frame["series"] == "s1") & (frame["time"] == "2021-03-28 05:00")  # s1's first step
    frame[~dropped].to_csv(tmp_path / "gaps.csv", index=False)
    data = csv_dataset(tmp_path / "gaps.csv", feat_dynamic_real_columns=None, feat_static_cat_columns=None).load()
    whole = data.test[1::2]  # each series' last window ends with the series
    expected = entries[0]["target"].copy()
    expected[4] = np.nan
    np.testing.assert_array_equal(whole[0]["target"], expected)
    np.testing.assert_array_equal(whole[1]["target"], entries[1]["target"][1:])  # it starts at its first row
    assert whole[1]["start"] == entries[1]["start"] + 1
    np.testing.assert_array_equal(whole[2]["target"], entries[2]["target"])


def test_one_series_without_an_item_column_and_time_zones_in_utc(tmp_path):
    times = pd.date_range("2024-03-30 22:00", periods=12, freq="h", tz="Europe/Berlin")  # crosses a DST change
    pd.DataFrame({"timestamp": times.astype(str), "target": np.arange(12.0)}).to_csv(tmp_path / "one.csv", index=False)
    (entry,) = CsvDataset(str(tmp_path / "one.csv"), "h", 2, item_id_column=None).load().train
    assert entry["item_id"] == "one" and entry["start"] == pd.Period("2024-03-30 21:00", freq="h")
    np.testing.assert_array_equal(entry["target"], np.arange(10.0))  # UTC has no repeated or skipped hour


def write_rows(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def daily(item: str, n: int, **columns) -> list[dict]:
    days = pd.date_range("2020-01-01", periods=n, freq="D").strftime("%Y-%m-%d")
    return [{"item_id": item, "timestamp": day, "target": float(i), **columns} for i, day in enumerate(days)]


@pytest.mark.parametrize(
    ("rows", "kwargs", "message"),
    [
        (daily("a", 9), {"target_column": "sales"}, r"has no column\(s\) \['sales'\]; its columns are \['item_id'"),
        (
            [*daily("a", 9), {**daily("a", 1)[0], "timestamp": "2020-01-10", "target": "ten"}],
            {},
            r"'target' is not a number on lines \[11\] \(e.g. 'ten'\)",
        ),
        ([*daily("a", 9), {**daily("a", 1)[0], "timestamp": "soon"}], {}, r"'timestamp' is not a date on lines \[11\]"),
        (
            [*daily("a", 9), daily("a", 1)[0]],
            {},
            r"series 'a' has more than one row for 2020-01-01 \(freq='D'\), on lines \[2, 11\]",
        ),
        (
            [r for r in daily("a", 9, temp=1.0) if r["timestamp"] != "2020-01-04"],
            {"feat_dynamic_real_columns": ["temp"]},
            r"series 'a' has no row for 2020-01-04: .*covariates \['temp'\]",
        ),
        (
            [*daily("a", 8, temp=1.0), {**daily("a", 9)[8]}],
            {"feat_dynamic_real_columns": ["temp"]},
            r"covariate 'temp' is empty or NA on lines \[10\]",
        ),
        (
            [*daily("a", 4, shop="x"), *daily("a", 9, shop="y")[4:]],
            {"feat_static_cat_columns": ["shop"]},
            r"series 'a': the static categories \['shop'\] change within the series",
        ),
        ([*daily("a", 9), {**daily("b", 1)[0], "item_id": None}], {}, r"'item_id' is empty on lines \[11\]"),
        ([*daily("a", 4), *daily("b", 3)], {}, r"bad: 2 of 2 series have fewer than .* = 5 values"),
    ],
)
def test_bad_files_give_errors_that_name_the_lines_and_the_fix(tmp_path, rows, kwargs, message):
    path = write_rows(tmp_path / "bad.csv", rows)
    with pytest.raises(ValueError, match=message):
        CsvDataset(str(path), "D", 2, test_windows=2, **kwargs).load()


def test_a_freq_finer_than_the_data_is_warned_about(tmp_path):
    path = write_rows(tmp_path / "daily.csv", daily("a", 9))
    with pytest.warns(UserWarning, match=r"series 'a' has rows for only 9 of its 193 steps of freq='h'"):
        CsvDataset(str(path), "h", 2).load()


def test_ids_and_categories_are_read_as_written_and_na_words_in_numbers_are_missing(tmp_path):
    rows = [*daily("NA", 6, region="NA"), *daily("None", 6, region="null"), *daily("n/a", 6, region="NA")]
    rows[2]["target"] = "NA"
    path = write_rows(tmp_path / "na.csv", rows)
    data = CsvDataset(str(path), "D", 1, feat_static_cat_columns=["region"]).load()
    assert [e["item_id"] for e in data.test] == ["NA", "None", "n/a"]
    assert data.categories == {"region": ["NA", "null"]}
    assert [int(e["feat_static_cat"][0]) for e in data.test] == [0, 1, 0]
    assert np.isnan(data.test[0]["target"][2]) and np.isfinite(data.test[1]["target"]).all()


def test_a_multiple_freq_takes_rows_on_its_steps_and_refuses_rows_between_them(tmp_path):
    # pandas begins each step of "7D" at the series' first row; the days between are not dropped but refused
    weekly = write_rows(tmp_path / "weekly.csv", [*daily("a", 36)[::7], *daily("b", 36)[3::7]])
    data = CsvDataset(str(weekly), "7D", 1).load()
    assert [len(e["target"]) for e in data.test] == [6, 5]
    np.testing.assert_array_equal(data.test[0]["target"], np.arange(0, 36, 7))
    path = write_rows(tmp_path / "daily.csv", daily("a", 21))
    with pytest.raises(ValueError, match=r"series 'a' has rows between the steps of freq='7D'.* lines \[3, 4, 5, 6, "):
        CsvDataset(str(path), "7D", 2).load()
    monthly = pd.date_range("2020-01-31", periods=12, freq="ME").strftime("%Y-%m-%d")
    path = write_rows(tmp_path / "monthly.csv", [{"timestamp": t, "target": 1.0} for t in monthly])
    with pytest.raises(ValueError, match=r"rows between the steps of freq='3M'.*or pass freq='M'"):
        CsvDataset(str(path), "3M", 1, item_id_column=None).load()


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match=r"\['time'\] are named for more than one role"):
        CsvDataset("x.csv", "D", 2, timestamp_column="time", feat_dynamic_real_columns=["time"])
    with pytest.raises(ValueError, match="no file at"):
        CsvDataset(str(tmp_path / "missing.csv"), "D", 2).load()
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match="not a readable CSV file"):
        CsvDataset(str(tmp_path / "empty.csv"), "D", 2).load()


def test_the_cli_trains_and_tests_on_a_csv_file(tmp_path, monkeypatch):
    from pararnn_ts.cli import main

    entries = whole_series()
    long_frame(entries).to_csv(tmp_path / "shops.csv", index=False)
    dataset = {
        "class_path": "pararnn_ts.forecast.csv_data.CsvDataset",
        "init_args": {
            "path": str(tmp_path / "shops.csv"),
            "freq": "h",
            "prediction_length": H,
            "timestamp_column": "time",
            "target_column": "sales",
            "item_id_column": "series",
            "feat_dynamic_real_columns": ["temp", "promo"],
            "feat_static_cat_columns": ["shop", "kind"],
        },
    }
    config = {
        "model": str(ROOT / "models" / "forecast_paragru.yaml"),
        "data": {
            "class_path": "pararnn_ts.forecast.datamodule.ForecastDataModule",
            "init_args": {"dataset": dataset, "batch_size": 4, "num_batches_per_epoch": 2},
        },
    }
    (tmp_path / "csv.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["pararnn-ts"])
    main(
        [
            "fit",
            "-c",
            "csv.yaml",
            "--trainer.max_steps=2",
            "--trainer.enable_progress_bar=false",
            "--model.init_args.hidden_size=8",
            "--model.init_args.num_layers=1",
            "--model.init_args.mode=sequential",
            "--model.init_args.num_parallel_samples=10",
            "--trainer.default_root_dir=out",
            "--trainer.logger=false",
        ]
    )
    metrics = yaml.safe_load((tmp_path / "out" / "test_metrics.json").read_text())
    assert np.isfinite(metrics["test_mean_wQL"])


def test_tsdata_tables_load_every_row_of_every_series():
    from importlib import resources

    data = TsDataDataset(
        "pedestrian", "h", 24, timestamp_column="Date_Time", target_column="Count", item_id_column="Sensor"
    ).load()
    raw = pd.read_csv(Path(str(resources.files("tsdata") / "fpp3" / "pedestrian.csv")))
    raw["hour"] = pd.to_datetime(raw["Date_Time"]).dt.tz_convert(None).dt.to_period("h")
    assert [entry["item_id"] for entry in data.test] == sorted(raw["Sensor"].unique())
    for entry in data.test:  # one window: the whole series
        rows = raw[raw["Sensor"] == entry["item_id"]]
        steps = (rows["hour"] - entry["start"]).map(lambda offset: offset.n).to_numpy()
        assert entry["start"] == rows["hour"].min() and len(entry["target"]) == steps.max() + 1
        np.testing.assert_array_equal(entry["target"][steps], rows["Count"].to_numpy(np.float32))
        assert np.isnan(entry["target"]).sum() == len(entry["target"]) - len(rows)  # hours without a row


def test_tsdata_keys_join_into_item_ids_and_quarters_parse():
    data = TsDataDataset(
        "tourism",
        "Q",
        8,
        timestamp_column="Quarter",
        target_column="Trips",
        item_id_column=["Region", "State", "Purpose"],
    ).load()
    assert len(data.train) == 304 and data.train[0]["item_id"] == "Adelaide/South Australia/Business"
    assert data.train[0]["start"] == pd.Period("1998Q1", freq="Q") and len(data.test[0]["target"]) == 80
    with pytest.raises(ValueError, match=r"fpp3 has no table 'pedestrians'; it has \[.*'pedestrian'"):
        TsDataDataset("pedestrians", "h", 24, timestamp_column="Date_Time", target_column="Count")
    with pytest.raises(ValueError, match="collection must be 'fpp3' or 'fpppy'"):
        TsDataDataset("pedestrian", "h", 24, timestamp_column="Date_Time", target_column="Count", collection="m4")


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["1998 Q1", "1998 Q2"], ["1998-01-01", "1998-04-01"]),
        (["1982 Apr", "1982 May"], ["1982-04-01", "1982-05-01"]),
        (
            ["2014-12-31T13:00:00Z", "2015-01-01", "2020-01-02 13:30"],
            ["2014-12-31 13:00", "2015-01-01", "2020-01-02 13:30"],
        ),
        (["31.01.2020", "01.02.2020"], ["2020-01-31", "2020-02-01"]),
        (["03/13/2023", "03/05/2023"], ["2023-03-13", "2023-03-05"]),  # month first: 13 is no month
        (["05/03/2023", "13/03/2023"], ["2023-03-05", "2023-03-13"]),  # day first: 13 is no month
        (["2020-01-01", "never"], ["2020-01-01", None]),
    ],
)
def test_each_timestamp_format_reads_one_way(values, expected):
    times = parse_times(pd.Series(values, name="date"))
    assert times.tolist() == [pd.Timestamp(t) if t else pd.NaT for t in expected]


def test_day_first_dates_are_read_in_order_and_a_column_that_reads_two_ways_is_refused(tmp_path):
    days = pd.date_range("2023-01-01", "2023-12-31", freq="D")
    frame = pd.DataFrame({"item_id": "eu", "timestamp": days.strftime("%d/%m/%Y"), "target": np.arange(len(days))})
    frame.to_csv(tmp_path / "eu.csv", index=False)
    (series,) = CsvDataset(str(tmp_path / "eu.csv"), "D", 7).load().test  # 13/01/2023 tells the order
    assert series["start"] == pd.Period("2023-01-01", "D")
    np.testing.assert_array_equal(series["target"], np.arange(len(days)))
    months = pd.date_range("2022-01-01", periods=24, freq="MS")  # the 1st of each month: 01/03 reads both ways
    frame = pd.DataFrame({"item_id": "eu", "timestamp": months.strftime("%d/%m/%Y"), "target": np.arange(24.0)})
    frame.to_csv(tmp_path / "months.csv", index=False)
    refusal = (
        r"months: 'timestamp' reads as dates two ways: '01/02/2022' is 2022-01-02 month first and 2022-02-01 day "
        r"first; pass dayfirst=False or dayfirst=True"
    )
    with pytest.raises(ValueError, match=refusal):
        CsvDataset(str(tmp_path / "months.csv"), "M", 3).load()
    (series,) = CsvDataset(str(tmp_path / "months.csv"), "M", 3, dayfirst=True).load().test
    assert series["start"] == pd.Period("2022-01", "M") and not np.isnan(series["target"]).any()


@pytest.mark.parametrize(
    ("freq", "steps", "first"), [("D", "D", "2023-03-12"), ("W", "W-MON", "2023-01-02"), ("M", "MS", "2023-01-01")]
)
def test_time_zone_aware_days_weeks_and_months_keep_their_local_date(tmp_path, freq, steps, first):
    """Local midnights east of UTC stay on their day (not the day before, as in UTC), across a DST change too."""
    times = pd.date_range(first, periods=30, freq=steps, tz="Europe/Berlin")
    assert len({time.utcoffset() for time in times}) == 2  # winter and summer time
    frame = pd.DataFrame({"timestamp": times.strftime("%Y-%m-%dT%H:%M:%S%z"), "target": np.arange(30.0)})
    frame.to_csv(tmp_path / "berlin.csv", index=False)
    (series,) = CsvDataset(str(tmp_path / "berlin.csv"), freq, 3, item_id_column=None).load().test
    assert series["start"] == pd.Period(times[0].tz_localize(None), freq)
    np.testing.assert_array_equal(series["target"], np.arange(30.0))


def test_ids_and_categories_keep_their_leading_zeros(tmp_path):
    rows = [
        *daily("007", 9, region="01"),
        *daily("012", 9, region="1"),
        *daily("3", 9, region="1"),
    ]
    data = CsvDataset(str(write_rows(tmp_path / "ids.csv", rows)), "D", 2, feat_static_cat_columns=["region"]).load()
    assert [entry["item_id"] for entry in data.test] == ["007", "012", "3"]
    assert data.categories == {"region": ["01", "1"]} and data.cardinality == [2]
    assert [entry["feat_static_cat"].tolist() for entry in data.test] == [[0], [1], [1]]


def test_separator_decimal_mark_and_encoding_of_the_file(tmp_path):
    path = tmp_path / "ventes.csv"
    lines = [f"Köln;2020-01-{day:02d};{day},5" for day in range(1, 10)]
    path.write_text("item_id;timestamp;target\n" + "\n".join(lines) + "\n", encoding="latin-1")
    data = CsvDataset(str(path), "D", 2, sep=";", decimal=",", encoding="latin-1").load()
    assert data.test[0]["item_id"] == "Köln"
    np.testing.assert_array_equal(data.test[0]["target"], np.arange(1, 10) + 0.5)
    with pytest.raises(ValueError, match=r"is not UTF-8 text .*; pass its encoding, e.g. encoding='latin-1'"):
        CsvDataset(str(path), "D", 2, sep=";", decimal=",").load()
    one_column = r"its columns are \['item_id;timestamp;target'\] \(one column, whose name holds ';': pass sep=';'\)"
    with pytest.raises(ValueError, match=one_column):
        CsvDataset(str(path), "D", 2, encoding="latin-1").load()
    path.write_text("item_id\ttimestamp\ttarget\na\t2020-01-01\t1\n")
    with pytest.raises(ValueError, match=r"pass sep='\\t'"):
        CsvDataset(str(path), "D", 2).load()
