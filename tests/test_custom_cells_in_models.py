"""User cells (ParaCell subclasses of tests/custom_cells.py) in the forecaster, the LM's ParaRNN mixer and the world
model: each layer builds and runs the user's cell, its arguments reach it, bad cells are refused naming the argument,
checkpoints record it (CLI fit → validate/test/predict/resume, ``load_from_checkpoint``) and the GluonTS predictor
serializes it."""

from __future__ import annotations

import functools
import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import forecast_config, small_lm
from custom_cells import PairCell, TanhCell, linear_layer
from gluonts.model import Predictor

from pararnn_ts.cells.factory import CellWidthError, cell_record, record_cell, resolve_cell
from pararnn_ts.cli import main
from pararnn_ts.forecast.cli_module import CHECKPOINT_KEY, ParaRNNForecaster
from pararnn_ts.forecast.estimator import ParaRNNEstimator
from pararnn_ts.forecast.lightning_module import ParaRNNLightningModule
from pararnn_ts.forecast.module import ParaRNNForecastModel
from pararnn_ts.lm import CausalLM
from pararnn_ts.nn import LanguageModel
from pararnn_ts.nn.mixers import ParaRNNMixer
from pararnn_ts.world.model import DynamicsModel
from pararnn_ts.world.module import WorldModelModule

ROOT = Path(__file__).resolve().parents[1]
CELL = "custom_cells.TanhCell"
#: the user cell of the CLI runs, with an argument of its own and a solver mode
CLI_CELL = f"--model.init_args.cell={{class_path: {CELL}, init_args: {{gain: 0.5, mode: sequential}}}}"


def tanh_by_hand(cell: TanhCell, x: torch.Tensor) -> torch.Tensor:
    """``cell``'s outputs ``(B, T, D)`` on ``x`` by a plain loop over its recurrence."""
    u, h, ys = cell.proj(x), x.new_zeros(x.shape[0], cell.hidden_size), []
    for t in range(x.shape[1]):
        h = torch.tanh(cell.gain * cell.a * h + u[:, t])
        ys.append(h)
    return torch.stack(ys, 1)


def test_the_forecaster_runs_the_user_cell_with_its_arguments_in_every_layer():
    torch.manual_seed(0)
    cell = functools.partial(TanhCell, gain=0.5, mode="parallel")
    net = ParaRNNForecastModel("M", 8, 4, cell=cell, hidden_size=6, num_layers=2, dropout=0.0, copula_rank=0)
    cells = [layer.cell for layer in net.layers]
    assert [type(c) for c in cells] == [TanhCell, TanhCell] and cells[0] is not cells[1]
    assert all(c.gain == 0.5 and c.mode == "parallel" and c.input_size == 6 for c in cells)
    layer, x = net.layers[0], torch.randn(3, 12, 6)
    torch.testing.assert_close(layer(x), x + tanh_by_hand(layer.cell, layer.norm(x)))
    net.encode(torch.randn(2, 12, net.input_size)).square().sum().backward()
    for c in cells:
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in c.parameters())


def test_the_mixer_runs_the_user_cell_in_forward_and_step():
    torch.manual_seed(0)
    mixer = ParaRNNMixer(8, cell=TanhCell, hidden=6)
    assert type(mixer.cell) is TanhCell and (mixer.cell.input_size, mixer.cell.hidden_size) == (6, 6)
    x = torch.randn(2, 10, 8)
    y, _ = mixer(x)
    u, _ = mixer.conv(mixer.in_proj(x))
    h = tanh_by_hand(mixer.cell, F.silu(u))
    torch.testing.assert_close(y, mixer.out_proj(mixer.norm(h, mixer.gate_proj(x))))
    state, steps = None, []
    for t in range(x.shape[1]):
        y_t, state = mixer.step(x[:, t], state)
        steps.append(y_t)
    torch.testing.assert_close(torch.stack(steps, 1), y)


def test_the_language_model_keeps_the_user_cells_own_initialisation():
    torch.manual_seed(0)
    lm = LanguageModel(50, 16, 2, cell=TanhCell, mlp_ratio=1.0)
    cell, mixer = lm.blocks[1].mixer.cell, lm.blocks[1].mixer
    assert type(cell) is TanhCell
    assert cell.proj.weight.abs().max() > 0.1  # nn.Linear's init (bound 1/4), not the LM's normal(0, 0.02)
    before, in_proj = cell.proj.weight.clone(), mixer.in_proj.weight.clone()
    lm.reset_parameters()
    assert torch.equal(cell.proj.weight, before) and not torch.equal(mixer.in_proj.weight, in_proj)


def test_the_world_model_runs_the_user_cell_and_trains_it():
    torch.manual_seed(0)
    model = DynamicsModel(3, 1, cell=TanhCell, hidden_size=8, num_layers=2)
    cells = [block.mixer.cell for block in model.backbone.blocks]
    assert [type(c) for c in cells] == [TanhCell, TanhCell]
    heads, _ = model(torch.randn(2, 7, 3), torch.randn(2, 7, 1), torch.ones(2, 7))
    heads.delta_mean.square().sum().backward()
    for c in cells:
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in c.parameters())
    obs, actions = torch.randn(2, 4, 3), torch.randn(2, 3, 1)
    plan = torch.randn(2, 5, 1)
    state = model.encode(obs[:, :-1], actions)  # the parallel solve and the step-by-step rollout agree
    predicted = model.imagine(obs, actions, plan).obs
    state, step = model.observe(state, obs[:, -1], plan[:, 0])
    rolled = [step.obs]
    for k in range(1, 5):
        state, step = model.imagine_step(state, step.obs, plan[:, k])
        rolled.append(step.obs)
    torch.testing.assert_close(torch.stack(rolled, 1), predicted, rtol=1e-4, atol=1e-5)


REFUSALS = [
    (lambda: ParaRNNForecastModel("M", 8, 4, cell="rnn"), ValueError, r"cell='rnn' is not one of \('gru', 'lstm'\)"),
    (lambda: ParaRNNForecastModel("M", 8, 4, cell=TanhCell(4, 4)), TypeError, "pass its class"),
    (lambda: ParaRNNForecastModel("M", 8, 4, cell=linear_layer), TypeError, "returned a Linear, not a ParaCell"),
    (lambda: ParaRNNForecastModel("M", 8, 4, cell=PairCell, hidden_size=6), CellWidthError, "hidden_size=6 wide"),
    (lambda: ParaRNNForecastModel("M", 8, 4, cell=lambda i, h: TanhCell(3, h)), ValueError, "input_size=3"),
    (lambda: ParaRNNMixer(8, cell=PairCell, hidden=4), CellWidthError, r"state_shape \(4, 2\).*hidden=4 wide"),
    (lambda: DynamicsModel(3, 1, cell=PairCell, hidden_size=8), CellWidthError, "DynamicsModel: hidden_size=8"),
    (lambda: ParaRNNForecaster(cell=TanhCell, num_heads=2), ValueError, r"num_heads=2 .* leave it .*num_heads=1"),
    (lambda: ParaRNNEstimator("M", 4, cell=TanhCell, mode="sequential"), ValueError, "mode='sequential' configures"),
    (lambda: ParaRNNEstimator("M", 4, cell=lambda i, h: TanhCell(i, h)), ValueError, "cell=<function .* top level"),
    (
        lambda: ParaRNNLightningModule(
            {"freq": "M", "context_length": 8, "prediction_length": 4, "cell": lambda i, h: TanhCell(i, h)}
        ),
        ValueError,
        r"ParaRNNLightningModule: model_kwargs\['cell'\]=<function .*<lambda> at .* functools.partial\(MyCell",
    ),
    (
        lambda: ParaRNNLightningModule({"freq": "M", "context_length": 8, "prediction_length": 4, "cell": "lstmm"}),
        ValueError,
        r"ParaRNNLightningModule: model_kwargs\['cell'\]='lstmm' is not one of",
    ),
    (lambda: ParaRNNMixer(8, cell=TanhCell, max_norm=None, tol=1e-3), ValueError, "max_norm=None, tol=0.001"),
    (lambda: DynamicsModel(3, 1, cell=TanhCell, max_norm=0.5), ValueError, "max_norm=0.5 configures"),
    (lambda: WorldModelModule(cell=TanhCell, mode="parallel"), ValueError, "mode='parallel' configures"),
    (lambda: CausalLM(257, mixer="transformer", cell=TanhCell), ValueError, "mixer='transformer' has none"),
    (lambda: CausalLM(257, cell=TanhCell, mixer_kwargs={"mode": "fused"}), ValueError, "mixer_kwargs.mode='fused'"),
    (lambda: LanguageModel(50, 16, 1, cell="gru"), ValueError, "the mixer names the built-in cell"),
]


@pytest.mark.parametrize("build, error, message", REFUSALS)
def test_bad_cells_and_contradictory_settings_are_refused_naming_the_argument(build, error, message):
    with pytest.raises(error, match=message):
        build()


def test_checkpoints_record_the_cell_as_a_config_names_it():
    partial = functools.partial(TanhCell, gain=0.5, mode="parallel")
    record = {"class_path": CELL, "init_args": {"gain": 0.5, "mode": "parallel"}}
    assert cell_record(TanhCell) == {"class_path": CELL} and cell_record(partial) == record
    rebuilt = resolve_cell(record, "test")(4, 6)
    assert type(rebuilt) is TanhCell and (rebuilt.gain, rebuilt.mode, rebuilt.input_size) == (0.5, "parallel", 4)
    module = ParaRNNForecaster(cell=partial, hidden_size=6)
    assert module.hparams["cell"] == record  # plain values: YAML and torch.load(weights_only=True) read them
    yaml.safe_dump(dict(module.hparams))

    class Local(TanhCell):
        pass

    assert cell_record(Local) is None and cell_record(lambda i, h: TanhCell(i, h)) is None
    hparams = {"cell": Local}
    with pytest.warns(UserWarning, match="load_from_checkpoint\\(path, cell=...\\)"):
        record_cell(hparams, "test")
    assert hparams == {"cell": None}


def test_a_forecaster_built_in_python_reloads_its_cell_from_a_checkpoint(tmp_path):
    """Outside the CLI the hyperparameters hold the cell's record too: ``load_from_checkpoint`` (whose
    ``torch.load`` reads plain values only) rebuilds it."""
    import lightning

    sizes = {"freq": "M", "prediction_length": 4, "num_feat_dynamic_real": 0, "cardinality": []}
    module = ParaRNNForecaster(cell=functools.partial(TanhCell, gain=0.5), hidden_size=6, num_layers=1)
    module.build(sizes)
    checkpoint = {
        "state_dict": module.state_dict(),
        "hyper_parameters": dict(module.hparams),
        CHECKPOINT_KEY: sizes,
        "pytorch-lightning_version": lightning.__version__,
    }
    torch.save(checkpoint, tmp_path / "module.ckpt")
    loaded = ParaRNNForecaster.load_from_checkpoint(tmp_path / "module.ckpt")
    (layer,) = loaded.model.layers
    assert type(layer.cell) is TanhCell and layer.cell.gain == 0.5
    assert all(torch.equal(loaded.state_dict()[name], value) for name, value in module.state_dict().items())


def test_the_estimator_trains_a_user_cell_and_its_predictor_serializes(tmp_path):
    rng = np.random.default_rng(0)
    start, wave = pd.Period("2000-01", freq="M"), 10 + np.sin(np.arange(40) / 2)
    data = [{"start": start, "target": (wave + rng.normal(0, 0.1, 40)).astype("float32")} for _ in range(3)]
    quiet = {"max_epochs": 1, "enable_progress_bar": False, "enable_model_summary": False, "logger": False}
    estimator = ParaRNNEstimator(
        "M",
        4,
        cell=functools.partial(TanhCell, gain=0.5, mode="sequential"),
        hidden_size=6,
        num_layers=1,
        batch_size=4,
        num_batches_per_epoch=2,
        num_parallel_samples=8,
        trainer_kwargs={**quiet, "default_root_dir": str(tmp_path / "train")},
    )
    torch.manual_seed(0)
    predictor = estimator.train(data)
    (tmp_path / "predictor").mkdir()
    predictor.serialize(tmp_path / "predictor")
    loaded = Predictor.deserialize(tmp_path / "predictor")
    for net in (predictor.prediction_net, loaded.prediction_net):
        (layer,) = net.model.layers
        assert type(layer.cell) is TanhCell and layer.cell.gain == 0.5
    samples = []
    for p in (predictor, loaded):
        torch.manual_seed(1)
        samples.append(np.stack([f.samples for f in p.predict(data)]))
    np.testing.assert_array_equal(samples[0], samples[1])

    class Local(TanhCell):
        pass

    with pytest.raises(ValueError, match="not a class importable by its name"):  # before any training
        ParaRNNEstimator("M", 4, cell=Local)


@pytest.mark.parametrize(
    "cell, gain", [(TanhCell, 1.0), (functools.partial(TanhCell, gain=0.5, mode="sequential"), 0.5)]
)
def test_a_gluonts_module_built_in_python_records_its_cell_for_weights_only_loading(tmp_path, cell, gain):
    """``ParaRNNLightningModule`` given a cell class or partial in ``model_kwargs`` saves its ``{class_path,
    init_args}``: ``load_from_checkpoint(..., weights_only=True)`` rebuilds it, and a predictor on the module
    serializes as the estimator's does."""
    import lightning

    estimator = ParaRNNEstimator("M", 4, cell=cell, hidden_size=6, num_layers=1, num_parallel_samples=4)
    module = ParaRNNLightningModule({**estimator.model_kwargs(), "cell": cell})
    checkpoint = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
    torch.save({**checkpoint, "pytorch-lightning_version": lightning.__version__}, tmp_path / "module.ckpt")
    loaded = ParaRNNLightningModule.load_from_checkpoint(tmp_path / "module.ckpt", weights_only=True)
    predictor = estimator.create_predictor(estimator.create_transformation(), module)
    predictor.serialize(tmp_path)
    deserialized = Predictor.deserialize(tmp_path).prediction_net
    record = cell_record(cell)
    assert estimator.model_kwargs()["cell"] == record
    for net in (module, loaded, deserialized):
        (layer,) = net.model.layers
        assert type(layer.cell) is TanhCell and layer.cell.gain == gain
        assert net.hparams["model_kwargs"]["cell"] == record
        assert all(torch.equal(net.state_dict()[name], value) for name, value in module.state_dict().items())


@pytest.fixture
def cli(monkeypatch, tmp_path):
    """``pararnn-ts VERB ARGS`` in ``tmp_path``; pytest's ``sys.argv`` out of the way."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["pararnn-ts"])
    return lambda *args: main(list(args))


def checkpoint_cells(path: Path) -> tuple[dict, list[str]]:
    """The cell a checkpoint records (read as ``weights_only``) and the names of its cells' parameters."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    return checkpoint["hyper_parameters"]["cell"], [k for k in checkpoint["state_dict"] if ".cell." in k]


def tiny_forecaster(folder: Path) -> list[str]:
    """The arguments of a tiny forecaster's CLI run in ``folder`` on Tourism quarterly, its config written there
    (``tiny.yaml``, whose cell is ``models/forecast_paragru.yaml``'s gru); runs log to ``runs/lightning_logs``."""
    dataset = {
        "class_path": "pararnn_ts.forecast.data.FCompDataset",
        "init_args": {"collection": "tourism", "subset": "quarterly"},
    }
    config = forecast_config(
        dataset,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_test_batches=1,
        limit_predict_batches=1,
    )
    (folder / "tiny.yaml").write_text(yaml.safe_dump(config))
    tiny = ["-c", "tiny.yaml", "--model.init_args.hidden_size=8", "--model.init_args.num_layers=1"]
    return tiny + ["--model.init_args.num_parallel_samples=8"]


def test_cli_forecaster_fits_validates_tests_predicts_and_resumes_a_user_cell(cli, tmp_path):
    tiny = tiny_forecaster(tmp_path)
    cli("fit", *tiny, "--trainer.max_steps=2", CLI_CELL)
    run = tmp_path / "runs" / "lightning_logs" / "version_0"
    record, names = checkpoint_cells(run / "checkpoints" / "last.ckpt")
    assert record["class_path"] == CELL and record["init_args"]["gain"] == 0.5
    assert names and all(n.split(".cell.")[1] in ("a", "proj.weight", "proj.bias") for n in names)
    assert yaml.safe_load((run / "hparams.yaml").read_text())["cell"]["class_path"] == CELL
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["init_args"]["cell"]["class_path"] == CELL
    last = str(run / "checkpoints" / "last.ckpt")
    for verb in ("validate", "test", "predict"):  # the config's cell is gru: the checkpoint's replaces it
        cli(verb, *tiny, "--ckpt_path", last)
    assert json.loads((run.parent / "version_2" / "test_metrics.json").read_text())["test_MASE"] > 0
    assert (run.parent / "version_3" / "forecasts.csv").is_file()
    cli("fit", *tiny, "--trainer.max_steps=4", "--ckpt_path", last)
    resumed = torch.load(run.parent / "version_4" / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == 4 and resumed["hyper_parameters"]["cell"] == record
    loaded = ParaRNNForecaster.load_from_checkpoint(last)
    (layer,) = loaded.model.layers
    assert type(layer.cell) is TanhCell and (layer.cell.gain, layer.cell.mode) == (0.5, "sequential")


def test_cli_names_a_cell_the_checkpoint_replaces_in_the_config(cli, tmp_path):
    """--ckpt_path restores the cell a checkpoint was trained with: a user cell where the config says gru, or gru
    where it names a user cell, is named in the warning about the config's arguments not used."""
    tiny = [*tiny_forecaster(tmp_path), "--trainer.max_steps=1", "--trainer.limit_test_batches=0"]
    cli("fit", *tiny)
    cli("fit", *tiny, CLI_CELL)
    gru, user = (tmp_path / "runs" / "lightning_logs" / f"version_{n}" / "checkpoints" / "last.ckpt" for n in (0, 1))
    record = re.escape(f"{CELL}(gain=0.5, mode='sequential')")  # the arguments that differ from the defaults
    with pytest.warns(UserWarning, match=rf"not used: cell='gru' \(checkpoint: {record}\)$"):
        cli("validate", *tiny, "--ckpt_path", str(user))
    with pytest.warns(UserWarning, match=rf"not used: cell={record} \(checkpoint: 'gru'\)$"):
        cli("validate", *tiny, CLI_CELL, "--ckpt_path", str(gru))


def test_cli_language_model_fits_validates_predicts_and_resumes_a_user_cell(cli, tmp_path):
    config = ["-c", str(ROOT / "experiments" / "lm" / "tiny_paragru.yaml"), *small_lm(tmp_path / "cache")]
    config += ["--trainer.limit_val_batches=1", "--trainer.val_check_interval=2", "--model.init_args.num_heads=1"]
    cli("fit", *config, "--trainer.max_steps=2", CLI_CELL)
    run = tmp_path / "runs" / "tiny_paragru" / "version_0"
    last = str(run / "checkpoints" / "last.ckpt")
    record, names = checkpoint_cells(last)
    assert record["class_path"] == CELL and names
    cli("validate", *config, "--ckpt_path", last)
    cli("predict", *config, "--ckpt_path", last, "--data.init_args.max_new_tokens=4")
    assert (run.parent / "version_2" / "predictions.jsonl").is_file()
    cli("fit", *config, "--trainer.max_steps=3", "--ckpt_path", last)
    assert torch.load(run.parent / "version_3" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3
    loaded = CausalLM.load_from_checkpoint(last)
    loaded.configure_model()
    assert type(loaded.model.blocks[0].mixer.cell) is TanhCell
    with pytest.raises(ValueError, match="CausalLM: num_heads=2 configures the built-in cells"):  # the shipped 2
        cli("fit", *config, "--model.init_args.num_heads=2", CLI_CELL)


def test_cli_world_model_fits_tests_and_resumes_a_user_cell(cli, tmp_path):
    config = ["-c", str(ROOT / "experiments" / "world" / "pendulum.yaml"), "--trainer.enable_progress_bar=false"]
    config += ["--data.init_args.num_steps=600", "--model.init_args.hidden_size=4", "--model.init_args.num_layers=1"]
    config += ["--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1", "--trainer.limit_test_batches=1"]
    config += ["--model.init_args.eval_ks=[1, 5]", "--model.init_args.eval_context=4"]
    cli("fit", *config, "--trainer.max_epochs=1", CLI_CELL)
    run = tmp_path / "runs" / "world_pendulum" / "version_0"
    last = str(run / "checkpoints" / "last.ckpt")
    record, names = checkpoint_cells(last)
    assert record["class_path"] == CELL and names
    cli("test", *config, "--ckpt_path", last)
    cli("fit", *config, "--trainer.max_epochs=2", "--ckpt_path", last)
    first = torch.load(last, weights_only=True)
    resumed = torch.load(run.parent / "version_2" / "checkpoints" / "last.ckpt", weights_only=True)
    assert (first["epoch"], resumed["epoch"]) == (0, 1) and resumed["global_step"] > first["global_step"]
    assert resumed["hyper_parameters"]["cell"] == record
    loaded = WorldModelModule.load_from_checkpoint(last)
    assert type(loaded.model.backbone.blocks[0].mixer.cell) is TanhCell
    # world-eval scores the checkpoint on fresh episodes, its row named by the cell's class path
    cli("world-eval", "--checkpoint", last, "--models", "pararnn", "--steps", "300", "--seed", "5", "--out", "eval")
    (report,) = (tmp_path / "eval").glob("kstep_*.json")
    assert CELL in report.read_text()
