"""The Lightning CLI path of forecasting: ``ForecastDataModule`` + ``ParaRNNForecaster`` fit, test, report, resume."""

from __future__ import annotations

import csv
import inspect
import json
import sys
import warnings
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import run_in_two_processes
from gluonts.dataset.split import slice_data_entry
from gluonts.model import Predictor

from pararnn_ts.cli import main
from pararnn_ts.forecast.cli_module import (
    CHECKPOINT_KEY,
    METRICS_FILE,
    PLOT_FILE,
    ParaRNNForecaster,
    codes_within,
    data_sizes,
    in_order,
)
from pararnn_ts.forecast.data import ForecastData, ForecastDataset, JsonLinesDataset, write_json_lines
from pararnn_ts.forecast.datamodule import EntryBatches, ForecastDataModule, holdout_windows
from pararnn_ts.forecast.predictions import FORECASTS_FILE, SAMPLES_FILE

ROOT = Path(__file__).resolve().parents[1]
H = 4
METRICS = ("test_MASE", "test_mean_wQL", "test_sMAPE", "test_coverage_80")
TINY = [
    "--trainer.max_steps=3",
    "--trainer.log_every_n_steps=1",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--model.init_args.hidden_size=8",
    "--model.init_args.num_layers=1",
    "--model.init_args.num_parallel_samples=20",
    "--model.init_args.mode=sequential",
    "--model.init_args.ema_decay=0.9",  # checkpoints, resume and reload then carry the averaged network too
]


def level_series(count: int = 5, length: int = 40) -> list[dict]:
    """Monthly seasonal series at levels 100, 200, ... with a missing stretch; the last is short."""
    rng = np.random.default_rng(0)
    entries = []
    for i in range(count):
        n = length if i < count - 1 else H + 3
        target = 100.0 * (i + 1) * (1 + 0.1 * np.sin(2 * np.pi * np.arange(n) / 12)) + rng.normal(0, 1, n)
        target[n // 2 : n // 2 + 2] = np.nan
        entries.append(
            {"start": pd.Period("2001-01", freq="M"), "target": target.astype(np.float32), "item_id": f"s{i}"}
        )
    return entries


pytestmark = pytest.mark.usefixtures("bare_argv")


def write_config(folder: Path, entries: list[dict] | None = None) -> Path:
    """A config of the shipped ParaGRU fragment on a JSON lines file of ``entries`` (default :func:`level_series`)."""
    data_file = write_json_lines(level_series() if entries is None else entries, folder / "levels.jsonl")
    config = {
        "model": str(ROOT / "models" / "forecast_paragru.yaml"),
        "data": {
            "class_path": "pararnn_ts.forecast.datamodule.ForecastDataModule",
            "init_args": {
                "dataset": {
                    "class_path": "pararnn_ts.forecast.data.JsonLinesDataset",
                    "init_args": {"path": str(data_file), "freq": "M", "prediction_length": H},
                },
                "batch_size": 4,
                "num_batches_per_epoch": 2,
            },
        },
        "trainer": {
            "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs"}},
            "callbacks": [
                {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"save_last": True}}
            ],
        },
    }
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def first_run(tmp_path_factory) -> tuple[Path, Path, str]:
    """One tiny ``fit`` (3 steps, then the automatic test): its config, its version folder and its stdout."""
    folder = tmp_path_factory.mktemp("forecast_cli")
    config = write_config(folder)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setattr(sys, "argv", ["pararnn-ts"])
        out = capture_stdout(lambda: main(["fit", "-c", str(config), *TINY]))
    return config, folder / "runs" / "lightning_logs" / "version_0", out


def capture_stdout(run) -> str:
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        run()
    return buffer.getvalue()


def read_metrics(version_dir: Path) -> dict[str, list[float]]:
    with open(version_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return {key: [float(row[key]) for row in rows if row[key]] for key in rows[0]}


def test_fit_logs_losses_and_test_metrics_and_writes_the_report(first_run):
    _, version_dir, out = first_run
    metrics = read_metrics(version_dir)
    assert metrics["val_loss"] and metrics["train_loss"], "train_loss / val_loss were not logged"
    written = json.loads((version_dir / METRICS_FILE).read_text())
    assert set(written) == set(METRICS)
    for name in METRICS:
        assert metrics[name] == [pytest.approx(written[name])]
        assert np.isfinite(written[name])
        assert f"| {name} |" in out  # the Markdown table
    assert 0 <= written["test_coverage_80"] <= 1
    assert (version_dir / PLOT_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_continues_training_with_the_same_network(first_run, tmp_path, monkeypatch):
    config, version_dir, _ = first_run
    last = version_dir / "checkpoints" / "last.ckpt"
    first = torch.load(last, weights_only=False)
    monkeypatch.chdir(version_dir.parents[2])
    capture_stdout(lambda: main(["fit", "-c", str(config), *TINY, "--trainer.max_steps=5", f"--ckpt_path={last}"]))
    resumed = torch.load(version_dir.parent / "version_1" / "checkpoints" / "last.ckpt", weights_only=False)
    assert (first["global_step"], resumed["global_step"]) == (3, 5)
    assert (
        resumed[CHECKPOINT_KEY]
        == first[CHECKPOINT_KEY]
        == {
            "freq": "M",
            "prediction_length": H,
            "num_feat_dynamic_real": 0,
            "cardinality": [],
        }
    )
    shapes = {name: tensor.shape for name, tensor in first["state_dict"].items()}
    assert any(name.startswith("averaged.") for name in shapes)  # the weight average is saved and resumed too
    assert {name: tensor.shape for name, tensor in resumed["state_dict"].items()} == shapes
    assert any(not torch.equal(first["state_dict"][n], resumed["state_dict"][n]) for n in shapes)  # it trained


def test_resuming_with_other_data_arguments_warns_about_them(first_run, tmp_path, monkeypatch):
    """The data module records its arguments in plain values (``torch.load(weights_only=True)``, YAML), the dataset
    as ``{class_path, init_args}`` also outside the CLI; ``pararnn-ts fit --ckpt_path`` compares them."""
    config, version_dir, _ = first_run
    last = version_dir / "checkpoints" / "last.ckpt"
    recorded = torch.load(last, weights_only=True)["datamodule_hyper_parameters"]
    assert recorded["validation_windows"] == 1 and recorded["dataset"]["class_path"].endswith(".JsonLinesDataset")
    monkeypatch.chdir(tmp_path)
    resume = ["fit", "-c", str(config), *TINY, "--trainer.max_steps=4", "--trainer.limit_test_batches=0"]
    predict_only = ["--data.init_args.predict_quantiles=[0.05,0.95]", "--data.init_args.predict_num_samples=9"]
    with warnings.catch_warnings(record=True) as caught:  # also with other settings that only predict reads
        warnings.simplefilter("always")
        capture_stdout(lambda: main([*resume, f"--ckpt_path={last}", *predict_only]))
    assert not [w for w in caught if "whose data had other arguments" in str(w.message)]
    with pytest.warns(UserWarning, match=r"whose data had other arguments.*validation_windows=2 \(checkpoint: 1\)"):
        capture_stdout(lambda: main([*resume, f"--ckpt_path={last}", "--data.init_args.validation_windows=2"]))

    spec = JsonLinesDataset(str(config.parent / "levels.jsonl"), "M", H)  # made in Python, not by the CLI
    hparams = dict(ForecastDataModule(spec, batch_size=8).hparams)
    assert hparams["dataset"]["class_path"] == "pararnn_ts.forecast.data.JsonLinesDataset"
    assert hparams["dataset"]["init_args"]["path"] == str(spec.path) and hparams["batch_size"] == 8
    assert yaml.safe_load(yaml.safe_dump(hparams)) == hparams
    torch.save(hparams, tmp_path / "hparams.pt")
    assert torch.load(tmp_path / "hparams.pt", weights_only=True) == hparams


#: the options that run a ``pararnn-ts`` command in two CPU processes (DDP over gloo)


def new_version(folder: Path, run) -> Path:
    """The one version folder that ``run()`` adds under ``folder/runs/lightning_logs``."""
    before = set((folder / "runs" / "lightning_logs").glob("version_*"))
    run()
    (version,) = set((folder / "runs" / "lightning_logs").glob("version_*")) - before
    return version


def test_two_processes_validate_test_and_predict_as_one_does(first_run, tmp_path, monkeypatch):
    """Under DDP each process validates on its share of the validation windows and ``val_loss`` is their mean over
    all; test and predict forecast each process's share of the batches (3 batches of 2 windows here: the first
    process forecasts two, the second one), each batch's sample paths drawn from a state seeded by its number, and
    the first process writes them all: the files of one process, on the same checkpoint."""
    config, version_dir, _ = first_run
    monkeypatch.chdir(tmp_path)
    versions = {}
    for verb in ("validate", "test", "predict"):
        args = [verb, "-c", str(config), *TINY, f"--ckpt_path={version_dir / 'checkpoints' / 'last.ckpt'}"]
        args.append("--data.init_args.batch_size=2")
        versions[1, verb] = new_version(tmp_path, lambda args=args: capture_stdout(lambda: main(args)))
        versions[2, verb] = new_version(tmp_path, lambda args=args: run_in_two_processes(args, tmp_path))
    one, two = (read_metrics(versions[n, "validate"])["val_loss"] for n in (1, 2))
    assert two == pytest.approx(one, rel=1e-6) and len(two) == 1
    # equal up to float rounding: each DDP process runs on its share of the CPU threads
    one, two = (json.loads((versions[n, "test"] / METRICS_FILE).read_text()) for n in (1, 2))
    assert two == pytest.approx(one, rel=1e-6) and set(one) == set(METRICS)
    one, two = (pd.read_csv(versions[n, "predict"] / FORECASTS_FILE) for n in (1, 2))
    pd.testing.assert_frame_equal(two, one, rtol=1e-6)
    one, two = (np.load(versions[n, "predict"] / SAMPLES_FILE) for n in (1, 2))
    assert one.files == two.files and all(np.array_equal(one[key], two[key]) for key in one.files if key != "samples")
    np.testing.assert_allclose(two["samples"], one["samples"], rtol=1e-6)


def test_test_and_predict_batches_are_shared_between_processes_and_put_back_in_order():
    entries = list(range(7))  # batches of 2: [0, 1], [2, 3], [4, 5], [6]
    shares = [EntryBatches(entries, 2, rank, 3) for rank in range(3)]
    assert [share.indices for share in shares] == [[0, 3], [1], [2]]
    assert [list(share) for share in shares] == [[[0, 1], [6]], [[2, 3]], [[4, 5]]]
    assert all(len(share) == len(share.indices) for share in shares)
    everyone = [EntryBatches(entries, 4, rank, 3) for rank in range(3)]  # 2 batches for 3 processes: all take both
    assert [share.indices for share in everyone] == [[0, 1]] * 3
    gathered = [(0, "a", 1), (3, "d", 1), (1, "b", 2), (2, "c", 3), (1, "b", 3)]  # rank 0's, 1's, 2's
    assert [batch[1] for batch in in_order(gathered)] == ["a", "b", "c", "d"]
    assert in_order(gathered)[1] == (1, "b", 2)  # a batch forecast twice: the first record of it


def test_each_batch_draws_its_sample_paths_from_a_state_of_its_own_number(monkeypatch):
    """So that a batch's forecasts do not depend on the process that makes them, nor on the batches before. Seeded
    on the CPU and the model's device only: ``torch.manual_seed`` would reseed every CUDA device, for good."""
    monkeypatch.setattr(torch, "manual_seed", lambda seed: pytest.fail("torch.manual_seed reseeds every device"))
    model = tiny_forecaster({"freq": "M", "prediction_length": H, "num_feat_dynamic_real": 0, "cardinality": []})
    predictor, entries = model.predictor(), level_series()[:2]
    before = torch.get_rng_state()
    first = [forecast.samples for forecast in model.forecast_batch(predictor, entries, 3)]
    assert torch.equal(torch.get_rng_state(), before)  # the global state is left as it was
    torch.rand(5)  # whatever ran before does not matter
    again = [forecast.samples for forecast in model.forecast_batch(predictor, entries, 3)]
    other = [forecast.samples for forecast in model.forecast_batch(predictor, entries, 4)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not any(np.allclose(a, b) for a, b in zip(first, other, strict=True))
    monkeypatch.setenv("PL_GLOBAL_SEED", "7")  # another run's seed: other paths
    seeded = [forecast.samples for forecast in model.forecast_batch(predictor, entries, 3)]
    assert not any(np.allclose(a, b) for a, b in zip(first, seeded, strict=True))


def test_load_from_checkpoint_rebuilds_the_network_without_data(first_run):
    _, version_dir, _ = first_run
    path = version_dir / "checkpoints" / "last.ckpt"
    model = ParaRNNForecaster.load_from_checkpoint(path)
    saved = torch.load(path, weights_only=False)["state_dict"]
    assert model.state_dict().keys() == saved.keys()
    assert all(torch.equal(model.state_dict()[name], saved[name]) for name in saved)
    (forecast,) = model.predictor().predict([level_series()[0]])
    assert forecast.samples.shape == (20, H) and np.isfinite(forecast.samples).all()


def test_the_predictor_of_a_cli_checkpoint_serializes_as_the_estimators_do(first_run, tmp_path):
    _, version_dir, _ = first_run
    predictor = ParaRNNForecaster.load_from_checkpoint(version_dir / "checkpoints" / "last.ckpt").predictor()
    predictor.serialize(tmp_path)  # failed on the torch.device, then on ParaRNNForecaster not being @validated
    reloaded = Predictor.deserialize(tmp_path)
    series = level_series()[:2]
    for a, b in zip(predictor.predict(series), reloaded.predict(series), strict=True):
        np.testing.assert_allclose(a.quantile(0.5), b.quantile(0.5), rtol=1e-6)


def tiny_forecaster(sizes: dict) -> ParaRNNForecaster:
    model = ParaRNNForecaster(hidden_size=8, num_layers=1, num_parallel_samples=5, mode="sequential")
    model.build(sizes)
    return model


#: ParaRNNEstimator's arguments that the CLI takes from the data or the data module, not from the model
DATA_ARGUMENTS = {
    "freq",
    "prediction_length",
    "num_feat_dynamic_real",
    "num_feat_static_real",
    "num_feat_static_cat",
    "cardinality",
    "embedding_dimension",
    "time_features",
    "batch_size",
    "num_batches_per_epoch",
    "trainer_kwargs",
    "train_sampler",
    "validation_sampler",
}


def test_every_model_option_of_the_estimator_is_a_cli_option():
    import inspect

    from pararnn_ts.forecast.estimator import ParaRNNEstimator

    estimator_options = set(inspect.signature(ParaRNNEstimator.__init__).parameters) - {"self"} - DATA_ARGUMENTS
    assert estimator_options <= set(inspect.signature(ParaRNNForecaster.__init__).parameters)


def test_cli_options_reach_the_network():
    sizes = {"freq": "M", "prediction_length": H, "num_feat_dynamic_real": 0, "cardinality": []}
    options = {
        "lags_seq": [1, 2, 12],
        "scaling": False,
        "naive_offset": True,
        "naive_drift": "learned",
        "naive_gate": False,  # on by default
        "seasonality": 6,
        "quantile_grid_samples": False,
        "context_loss_weight": 0.5,
        "ema_decay": 0.9,
    }
    model = ParaRNNForecaster(hidden_size=8, num_layers=1, mode="sequential", **options)
    model.build(sizes)
    network = model.model
    assert network.lags_seq == options["lags_seq"] and network.season == options["seasonality"]
    assert (network.scaling, network.naive_offset, network.naive_drift) == (False, True, "learned")
    assert network.naive_gate is None
    assert network.quantile_grid_samples is False and network.context_loss_weight == 0.5
    assert model.averaged is not None and model.ema_decay == 0.9
    quantile = ParaRNNForecaster(hidden_size=8, distribution="quantile", quantiles=[0.25, 0.5, 0.75])
    quantile.build(sizes)
    assert quantile.estimator.model_kwargs()["quantiles"] == [0.25, 0.5, 0.75]
    weighted = ParaRNNForecaster(hidden_size=8, loss_weighting="scale")
    weighted.build(sizes)
    assert weighted.model.loss_weighting == "scale"
    with pytest.raises(ValueError, match="ema_decay"):
        ParaRNNForecaster(ema_decay=1.5)


def test_forecaster_defaults_are_the_estimators():
    """Every option the CLI forecaster shares with ``ParaRNNEstimator`` defaults to the estimator's value."""
    from pararnn_ts.forecast.estimator import ParaRNNEstimator

    ours = inspect.signature(ParaRNNForecaster).parameters
    theirs = inspect.signature(ParaRNNEstimator).parameters
    shared = sorted(set(ours) & set(theirs))
    assert {"lr", "lr_schedule", "ema_decay", "hidden_size", "distribution"} <= set(shared)
    differing = {name: (ours[name].default, theirs[name].default) for name in shared}
    assert {k: v for k, v in differing.items() if v[0] != v[1]} == {}


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_model_fragments_spell_out_the_defaults(cell):
    """``models/forecast_para<cell>.yaml`` (every shipped forecasting config's ``model:``) sets each option it names
    to the forecaster's default, its cell aside: the configs train with the settings chosen on validation."""
    fragment = yaml.safe_load((ROOT / "models" / f"forecast_para{cell}.yaml").read_text())
    assert fragment["class_path"].endswith("ParaRNNForecaster") and fragment["init_args"]["cell"] == cell
    defaults = inspect.signature(ParaRNNForecaster).parameters
    named = {key: value for key, value in fragment["init_args"].items() if key != "cell"}
    assert {"lr", "lr_schedule", "ema_decay"} <= set(named)
    assert {key: value for key, value in named.items() if value != defaults[key].default} == {}


def test_checkpoint_of_other_data_is_refused():
    sizes = {"freq": "M", "prediction_length": H, "num_feat_dynamic_real": 0, "cardinality": []}
    model = tiny_forecaster(sizes)
    with pytest.raises(ValueError, match="resume on the dataset"):
        model.on_load_checkpoint({CHECKPOINT_KEY: {**sizes, "prediction_length": H + 1}})
    with pytest.raises(ValueError, match=CHECKPOINT_KEY):
        ParaRNNForecaster().on_load_checkpoint({})


def test_data_module_context_length_is_the_forecasters_default():
    """The data module's ``context_length`` reaches the network unless the model sets its own, and a checkpoint
    rebuilds the network with it (no data needed)."""
    entries = level_series()
    data = ForecastData("levels", "M", H, train=entries, test=entries)
    datamodule = ForecastDataModule(InMemory(data), context_length=11)
    datamodule.setup("fit")
    contexts = {}
    for own in (None, 7):
        model = ParaRNNForecaster(hidden_size=8, num_layers=1, mode="sequential", context_length=own)
        model._trainer = SimpleNamespace(datamodule=datamodule)
        model.configure_model()
        contexts[own] = model.model.context_length
        checkpoint = {}
        model.on_save_checkpoint(checkpoint)
        reloaded = ParaRNNForecaster(hidden_size=8, num_layers=1, mode="sequential", context_length=own)
        reloaded.on_load_checkpoint(checkpoint)
        assert reloaded.model.context_length == contexts[own]
    assert contexts == {None: 11, 7: 7}
    assert tiny_forecaster(data_sizes(data)).model.context_length == 2 * H  # no hint: the multiple of H
    with pytest.raises(ValueError, match="context_length must be >= 1"):
        ForecastDataModule(InMemory(data), context_length=0)


def test_holdout_windows_cut_the_last_horizons():
    lengths, horizon, windows = (10, 5, 3), 2, 2
    entries = [
        {
            "start": pd.Period("2000-01", freq="M"),
            "target": np.arange(n, dtype=np.float32),
            "feat_dynamic_real": -np.arange(n, dtype=np.float32)[None],
            "item_id": str(n),
        }
        for n in lengths
    ]
    train, validation = holdout_windows(entries, horizon, windows)
    # Brute force: training keeps what precedes the 2 held-out horizons (the 3-step series has nothing before them:
    # it is trained on whole, not validated); a validation entry ends at each window's end and needs at least one
    # step before its window.
    assert [e["target"].tolist() for e in train] == [list(range(6)), [0.0], [0.0, 1.0, 2.0]]
    assert [len(e["target"]) for e in validation] == [10, 8, 5, 3]
    for entry in train + validation:
        np.testing.assert_array_equal(entry["feat_dynamic_real"][0], -entry["target"])
        assert entry["start"] == pd.Period("2000-01", freq="M")


class InMemory(ForecastDataset):
    def __init__(self, data: ForecastData) -> None:
        self.data = data

    def load(self) -> ForecastData:
        return self.data


@pytest.mark.parametrize("num_workers", [0, 2])
def test_training_batches_cover_every_series(num_workers):
    entries = level_series(count=4, length=60)[:3]  # three long series at levels 100, 200, 300
    data = ForecastData("levels", "M", H, train=entries, test=entries)
    module = ParaRNNForecaster(hidden_size=8, num_layers=1, mode="sequential")
    module.build(data_sizes(data))
    datamodule = ForecastDataModule(InMemory(data), batch_size=8, num_batches_per_epoch=6, num_workers=num_workers)
    datamodule.trainer = SimpleNamespace(lightning_module=module)
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    batches = list(loader)
    assert len(loader) == len(batches) == 6
    assert batches[0]["past_target"].shape == (8, module.model.past_length)
    assert batches[0]["future_target"].shape == (8, H)
    levels = torch.cat([b["future_target"].amax(1) for b in batches]).div(100).round().unique().tolist()
    assert levels == [1.0, 2.0, 3.0]


def test_a_series_too_short_to_validate_is_trained_on_whole_and_said_so():
    entries = level_series(count=3, length=60)  # the last one has H + 3 values: 3 of them before its test window
    train = [slice_data_entry(entry, slice(None, -H)) for entry in entries]
    datamodule = ForecastDataModule(InMemory(ForecastData("levels", "M", H, train=train, test=entries)))
    with pytest.warns(UserWarning, match=r"1 of 3 series have no more than .* = 4 training values \(e\.g\. 's2', 3\)"):
        datamodule.setup("fit")
    assert [entry["item_id"] for entry in datamodule.train_entries] == ["s0", "s1", "s2"]
    assert len(datamodule.train_entries[2]["target"]) == 3
    assert [entry["item_id"] for entry in datamodule.val_entries] == ["s0", "s1"]


def test_datamodule_refuses_bad_arguments(tmp_path):
    spec = JsonLinesDataset(str(write_json_lines(level_series(), tmp_path / "a.jsonl")), "M", H)
    with pytest.raises(TypeError, match="ForecastDataset"):
        ForecastDataModule("tourism")
    with pytest.raises(ValueError, match="validation_windows"):
        ForecastDataModule(spec, validation_windows=-1)
    with pytest.raises(ValueError, match="batch_size"):
        ForecastDataModule(spec, batch_size=0)
    datamodule = ForecastDataModule(spec, validation_windows=20)
    with pytest.raises(ValueError, match="lower validation_windows"):
        datamodule.setup("fit")
    with pytest.raises(ValueError, match="validation_windows=0 holds out no validation windows, so validate has"):
        ForecastDataModule(spec, validation_windows=0).setup("validate")


def run_predict(config: Path, folder: Path, *extra: str) -> Path:
    """``pararnn-ts predict`` of the first run's last checkpoint in ``folder``; returns the new version folder."""
    checkpoint = config.parent / "runs" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    before = set((folder / "runs" / "lightning_logs").glob("version_*"))
    capture_stdout(lambda: main(["predict", "-c", str(config), *TINY, f"--ckpt_path={checkpoint}", *extra]))
    (version,) = set((folder / "runs" / "lightning_logs").glob("version_*")) - before
    return version


def direct_medians(config: Path, histories: list[dict]) -> np.ndarray:
    """Each history's median forecast ``(N, H)`` from the checkpoint's GluonTS predictor (deterministic: the
    samples lie on each step's quantile grid)."""
    checkpoint = config.parent / "runs" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    predictor = ParaRNNForecaster.load_from_checkpoint(checkpoint).predictor()
    return np.stack([forecast.quantile(0.5) for forecast in predictor.predict(histories)])


def test_predict_forecasts_past_each_series_end_and_writes_them(first_run, monkeypatch):
    config, _, _ = first_run
    monkeypatch.chdir(config.parent)
    version = run_predict(config, config.parent)
    table = pd.read_csv(version / FORECASTS_FILE)
    series = level_series()
    assert len(table) == len(series) * H and "actual" not in table
    for entry, (item, rows) in zip(series, table.groupby("item_id", sort=False), strict=True):
        after_end = entry["start"] + len(entry["target"])  # the period after the series' last value
        assert item == entry["item_id"]
        assert rows["step"].tolist() == list(range(1, H + 1))
        expected = pd.period_range(after_end, periods=H).to_timestamp()
        assert pd.to_datetime(rows["timestamp"]).tolist() == expected.tolist()
        assert (pd.to_datetime(rows["forecast_start"]) == expected[0]).all()
    quantiles = table[[f"q{q / 10:g}" for q in range(1, 10)]].to_numpy()
    assert np.isfinite(quantiles).all() and (np.diff(quantiles, axis=1) >= 0).all()
    medians = table["q0.5"].to_numpy().reshape(len(series), H)
    np.testing.assert_allclose(medians, direct_medians(config, series), rtol=1e-5)
    saved = np.load(version / SAMPLES_FILE)
    assert saved["samples"].shape == (len(series), 20, H)
    assert saved["item_id"].tolist() == [entry["item_id"] for entry in series]
    # the table summarises the saved paths: their mean, and medians that are among them (GluonTS's quantile)
    np.testing.assert_allclose(saved["samples"].mean(1), table["mean"].to_numpy().reshape(-1, H), rtol=1e-5)
    assert np.isclose(saved["samples"], medians[:, None], rtol=1e-6).any(1).all()
    assert (version / PLOT_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_predict_of_the_test_split_forecasts_the_test_windows_beside_their_actual_values(first_run, monkeypatch):
    config, _, _ = first_run
    monkeypatch.chdir(config.parent)
    version = run_predict(config, config.parent, "--data.init_args.predict_split=test")
    table = pd.read_csv(version / FORECASTS_FILE)
    windows = level_series()  # one test window per series: its last H values
    actual = np.stack([entry["target"][-H:] for entry in windows]).astype(np.float64)
    np.testing.assert_allclose(table["actual"].to_numpy().reshape(len(windows), H), actual, rtol=1e-6)
    histories = [{**entry, "target": entry["target"][:-H]} for entry in windows]
    np.testing.assert_allclose(
        table["q0.5"].to_numpy().reshape(len(windows), H), direct_medians(config, histories), rtol=1e-5
    )


def test_predict_writes_the_quantile_levels_and_sample_paths_asked_for(first_run, monkeypatch):
    config, _, _ = first_run
    monkeypatch.chdir(config.parent)
    asked = ["--data.init_args.predict_quantiles=[0.95,0.05,0.5]", "--data.init_args.predict_num_samples=7"]
    version = run_predict(config, config.parent, *asked)
    table = pd.read_csv(version / FORECASTS_FILE)
    assert [column for column in table if column.startswith("q")] == ["q0.05", "q0.5", "q0.95"]
    samples = np.load(version / SAMPLES_FILE)["samples"]
    assert samples.shape == (len(level_series()), 7, H)
    levels = np.quantile(samples, [0.05, 0.5, 0.95], axis=1, method="inverted_cdf").transpose(1, 2, 0)
    np.testing.assert_allclose(table[["q0.05", "q0.5", "q0.95"]].to_numpy(), levels.reshape(-1, 3), rtol=1e-5)
    spec = JsonLinesDataset(str(config.parent / "levels.jsonl"), "M", H)
    for bad in ([0.5, 1.0], []):
        with pytest.raises(ValueError, match="predict_quantiles must be levels in \\(0, 1\\)"):
            ForecastDataModule(spec, predict_quantiles=bad)
    with pytest.raises(ValueError, match="predict_num_samples must be an int >= 1"):
        ForecastDataModule(spec, predict_num_samples=0)


def test_predict_of_series_too_short_to_validate_forecasts_them(first_run, monkeypatch):
    """Validation windows are a fit's: predict forecasts new series however short their training part."""
    config, _, _ = first_run
    monkeypatch.chdir(config.parent)
    short = level_series(count=3, length=H + 2)  # training parts of 2, 2 and 3 values: none longer than H
    path = write_json_lines(short, config.parent / "short.jsonl")
    version = run_predict(config, config.parent, f"--data.init_args.dataset.init_args.path={path}")
    table = pd.read_csv(version / FORECASTS_FILE)
    np.testing.assert_allclose(table["q0.5"].to_numpy().reshape(3, H), direct_medians(config, short), rtol=1e-5)
    with pytest.raises(ValueError, match="no series is longer than validation_windows=1 horizons of 4"):
        ForecastDataModule(JsonLinesDataset(str(path), "M", H)).setup("fit")


def test_only_data_with_fewer_codes_is_read_by_a_network_built_for_more():
    sizes = {"freq": "M", "prediction_length": H, "num_feat_dynamic_real": 0, "cardinality": [4, 3]}
    fewer = {**sizes, "cardinality": [2, 3]}
    assert codes_within(fewer, sizes)
    assert not codes_within(sizes, sizes)  # the same: nothing to rebuild
    assert not codes_within({**sizes, "cardinality": [5, 3]}, sizes) and not codes_within(sizes, fewer)
    assert not codes_within({**fewer, "prediction_length": H + 1}, sizes)
    assert not codes_within({**fewer, "categories": {"region": ["a", "b"]}}, sizes)  # named: coded as trained


def test_predict_of_some_of_the_coded_categories_uses_the_checkpoints_network(tmp_path, monkeypatch):
    """Static categories given as codes (JSON lines): data holding only some of the codes (cardinality inferred
    smaller) is forecast by the network trained on all of them; more codes than it knows are refused."""
    monkeypatch.chdir(tmp_path)
    entries = [{**entry, "feat_static_cat": np.array([i])} for i, entry in enumerate(level_series(count=4))]
    config = write_config(tmp_path, entries)
    main(["fit", "-c", str(config), *TINY])
    checkpoint = tmp_path / "runs" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    some = write_json_lines(entries[1:2], tmp_path / "some.jsonl")
    subset = [f"--ckpt_path={checkpoint}", f"--data.init_args.dataset.init_args.path={some}"]
    capture_stdout(lambda: main(["predict", "-c", str(config), *TINY, *subset]))
    table = pd.read_csv(tmp_path / "runs" / "lightning_logs" / "version_1" / FORECASTS_FILE)
    assert table["item_id"].unique().tolist() == ["s1"]
    np.testing.assert_allclose(table["q0.5"].to_numpy()[None], direct_medians(config, entries[1:2]), rtol=1e-5)
    more = write_json_lines([{**entries[0], "feat_static_cat": np.array([5])}], tmp_path / "more.jsonl")
    with pytest.raises(ValueError, match=r"built for data with cardinality=\[4\], this data has cardinality=\[6\]"):
        main(["predict", "-c", str(config), *TINY, subset[0], f"--data.init_args.dataset.init_args.path={more}"])


@pytest.mark.parametrize("verb", ["test", "predict"])
def test_test_and_predict_refuse_to_run_untrained_weights(first_run, monkeypatch, verb):
    config, _, _ = first_run
    monkeypatch.chdir(config.parent)
    before = sorted((config.parent / "runs" / "lightning_logs").glob("version_*"))
    with pytest.raises(ValueError, match="--ckpt_path"):
        main([verb, "-c", str(config), *TINY])
    assert sorted((config.parent / "runs" / "lightning_logs").glob("version_*")) == before  # nothing was written


def test_without_a_logger_test_and_predict_refuse_to_replace_a_users_files(first_run, tmp_path, monkeypatch):
    """Without a logger runs write to --trainer.default_root_dir (the current folder), where a user's files are."""
    config, version_dir, _ = first_run
    monkeypatch.chdir(tmp_path)
    checkpoint = f"--ckpt_path={version_dir / 'checkpoints' / 'last.ckpt'}"
    for verb, name in [("predict", FORECASTS_FILE), ("test", METRICS_FILE)]:
        (tmp_path / name).write_text("mine")
        with pytest.raises(FileExistsError, match=f"pararnn-ts {verb} would replace .*{name}; move it away"):
            main([verb, "-c", str(config), *TINY, "--trainer.logger=false", checkpoint])
        assert (tmp_path / name).read_text() == "mine" and not (tmp_path / "config.yaml").exists()
    with pytest.raises(FileExistsError, match=f"pararnn-ts test would replace .*{METRICS_FILE}"):
        main(["fit", "-c", str(config), *TINY, "--trainer.logger=false"])  # its test after training would
    assert (tmp_path / METRICS_FILE).read_text() == "mine" and not (tmp_path / "checkpoints").exists()
    (tmp_path / METRICS_FILE).unlink()
    capture_stdout(lambda: main(["test", "-c", str(config), *TINY, "--trainer.logger=false", checkpoint]))
    assert json.loads((tmp_path / METRICS_FILE).read_text())  # with nothing in the way it writes


def test_predict_past_the_covariates_is_refused_before_the_run_writes_its_folder(first_run, monkeypatch):
    config, version_dir, _ = first_run
    monkeypatch.chdir(config.parent)
    with_covariates = [{**entry, "feat_dynamic_real": np.ones((1, len(entry["target"])))} for entry in level_series()]
    path = write_json_lines(with_covariates, config.parent / "covariates.jsonl")
    before = sorted((config.parent / "runs" / "lightning_logs").glob("version_*"))
    data_path = f"--data.init_args.dataset.init_args.path={path}"
    with pytest.raises(ValueError, match="predict_split=test"):
        main(["predict", "-c", str(config), *TINY, data_path, f"--ckpt_path={version_dir / 'checkpoints/last.ckpt'}"])
    assert sorted((config.parent / "runs" / "lightning_logs").glob("version_*")) == before  # nothing was written


def test_predict_items_follow_predict_split():
    horizon = 2
    entries = [  # two windows of series "a" (lengths 6 and 8), one of "b", and two entries without an item_id
        {"start": pd.Period("2000-01", freq="M"), "target": np.arange(n, dtype=np.float32), "item_id": item}
        for n, item in ((6, "a"), (8, "a"), (5, "b"))
    ] + [{"start": pd.Period("2000-01", freq="M"), "target": np.ones(n, dtype=np.float32)} for n in (4, 3)]
    data = ForecastData("windows", "M", horizon, train=entries, test=entries)
    future = ForecastDataModule(InMemory(data), batch_size=3)
    future.setup("predict")
    assert [len(batch) for batch in future.predict_dataloader()] == [3, 1]
    items = future.predict_items()
    assert [len(item.history["target"]) for item in items] == [8, 5, 4, 3]  # each series' longest entry
    assert all(item.actual is None for item in items)
    test = ForecastDataModule(InMemory(data), predict_split="test")
    test.setup("predict")
    items = test.predict_items()
    assert [len(item.history["target"]) for item in items] == [4, 6, 3, 2, 1]
    assert [item.actual.tolist() for item in items[:3]] == [[4, 5], [6, 7], [3, 4]]
    with pytest.raises(ValueError, match="predict_split"):
        ForecastDataModule(InMemory(data), predict_split="past")
    short = {"start": pd.Period("2000-01", freq="M"), "target": np.ones(2, dtype=np.float32), "item_id": "new"}
    with_short = ForecastDataModule(InMemory(replace(data, train=[*entries, short])))
    with_short.setup("predict")  # a series too short for a test window is forecast from all of it
    assert [item.history.get("item_id") for item in with_short.predict_items()] == ["a", "b", None, None, "new"]


def test_predicting_past_the_end_of_covariates_is_refused():
    entries = [
        {
            "start": pd.Period("2000-01", freq="M"),
            "target": np.arange(9, dtype=np.float32),
            "feat_dynamic_real": np.zeros((1, 9), dtype=np.float32),
            "item_id": "a",
        }
    ]
    data = ForecastData("covariates", "M", 2, train=entries, test=entries, num_feat_dynamic_real=1)
    datamodule = ForecastDataModule(InMemory(data))
    with pytest.raises(ValueError, match="predict_split=test"):
        datamodule.setup("predict")  # before the run writes its folder
    datamodule.setup("fit")  # other stages need no predict_split
    with pytest.raises(ValueError, match="predict_split=test"):
        datamodule.predict_items()
    datamodule.predict_split = "test"
    (item,) = datamodule.predict_items()
    assert item.history["feat_dynamic_real"].shape == (1, 9)  # the covariates cover the forecast steps


def test_mixed_precision_fit_tests_and_predicts(tmp_path, monkeypatch):
    """GluonTS turns forecast samples into NumPy arrays, which have no bfloat16: under bf16-mixed autocast the
    forecasts are computed in the parameters' float32."""
    config = write_config(tmp_path)
    monkeypatch.chdir(tmp_path)
    mixed = [*TINY, "--trainer.precision=bf16-mixed"]
    capture_stdout(lambda: main(["fit", "-c", str(config), *mixed]))
    version = tmp_path / "runs" / "lightning_logs" / "version_0"
    assert all(np.isfinite(value) for value in json.loads((version / METRICS_FILE).read_text()).values())
    last = version / "checkpoints" / "last.ckpt"
    capture_stdout(lambda: main(["predict", "-c", str(config), *mixed, f"--ckpt_path={last}"]))
    table = pd.read_csv(tmp_path / "runs" / "lightning_logs" / "version_1" / FORECASTS_FILE)
    assert len(table) == len(level_series()) * H and np.isfinite(table["q0.5"]).all()


@pytest.mark.parametrize(
    ("precision", "dtype"), [("bf16-true", torch.bfloat16), ("16-true", torch.float16), ("64-true", torch.float64)]
)
def test_true_precision_fits_tests_and_predicts(tmp_path, monkeypatch, precision, dtype):
    """Under ``--trainer.precision bf16-true``/``16-true`` the network trains in bfloat16/float16 while the scale,
    distributions, copula (Cholesky has no bfloat16 kernel) and losses run in float32; ``64-true`` runs all in
    float64. Fit, test and predict complete with finite metrics and forecasts."""
    config = write_config(tmp_path)
    monkeypatch.chdir(tmp_path)
    true = [*TINY, f"--trainer.precision={precision}"]
    capture_stdout(lambda: main(["fit", "-c", str(config), *true]))
    version = tmp_path / "runs" / "lightning_logs" / "version_0"
    metrics = read_metrics(version)
    assert all(np.isfinite(metrics[name]).all() and metrics[name] for name in ("train_loss", "val_loss", *METRICS))
    last = version / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=False)["state_dict"]
    assert {value.dtype for value in state.values() if value.is_floating_point()} == {dtype}
    capture_stdout(lambda: main(["predict", "-c", str(config), *true, f"--ckpt_path={last}"]))
    table = pd.read_csv(tmp_path / "runs" / "lightning_logs" / "version_1" / FORECASTS_FILE)
    assert len(table) == len(level_series()) * H and np.isfinite(table[["mean", "q0.1", "q0.5", "q0.9"]]).all().all()


def test_half_precision_of_data_beyond_float16_is_refused_before_the_run(tmp_path, monkeypatch):
    """``16-true`` casts every training batch to float16 (largest value 65504): larger data is refused at setup,
    naming the option and the alternatives, before the run writes anything."""
    entries = level_series()
    entries[1]["target"] = entries[1]["target"] * 1000  # up to about 2.2e5
    config = write_config(tmp_path, entries)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"--trainer.precision 16-true.*65504.*bf16-true"):
        main(["fit", "-c", str(config), *TINY, "--trainer.precision=16-true"])
    assert not (tmp_path / "runs").exists()


def test_fast_dev_run_writes_nothing(tmp_path, monkeypatch):
    """Lightning's smoke test keeps no logs or checkpoints; its test results must not land in the current folder."""
    config = write_config(tmp_path)
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    capture_stdout(lambda: main(["fit", "-c", str(config), *TINY, "--trainer.fast_dev_run=true"]))
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize("without", ["--data.init_args.validation_windows=0", "--trainer.limit_val_batches=0"])
def test_a_fit_without_validation_steps_the_plateau_schedule_on_the_training_loss(tmp_path, monkeypatch, without):
    config = write_config(tmp_path)
    monkeypatch.chdir(tmp_path)
    capture_stdout(lambda: main(["fit", "-c", str(config), *TINY, "--trainer.max_steps=4", without]))
    version = tmp_path / "runs" / "lightning_logs" / "version_0"
    assert "val_loss" not in read_metrics(version)
    (plateau,) = torch.load(version / "checkpoints" / "last.ckpt", weights_only=False)["lr_schedulers"]
    assert plateau["last_epoch"] == 2  # stepped after each of the two epochs
