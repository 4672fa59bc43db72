"""Resuming a fit through ``pararnn-ts``: ``--ckpt_path last``, a spent ``max_time``, what a checkpoint restores."""

from __future__ import annotations

import csv
import inspect
import logging
import os
import signal
import sys
import warnings
from pathlib import Path

import pytest
import torch

from pararnn_ts.cli import (
    drop_unused_folder,
    latest_last_checkpoint,
    left_to_default_none,
    main,
    warn_if_data_changed,
)

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "experiments" / "forecast" / "quickstart.yaml"
TINY = [
    "--trainer.max_steps=2",
    "--trainer.limit_val_batches=1",
    "--trainer.limit_test_batches=1",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--data.init_args.num_batches_per_epoch=2",
]


pytestmark = pytest.mark.usefixtures("bare_argv", "in_tmp_path")


def runs() -> list[str]:
    return sorted(p.name for p in Path("runs/quickstart").iterdir())


def test_ckpt_path_last_resumes_the_newest_runs_last_checkpoint(capsys):
    with pytest.raises(FileNotFoundError, match=r"--ckpt_path last: no last.ckpt .* in runs/quickstart/version_N/che"):
        main(["fit", "-c", str(QUICKSTART), *TINY, "--ckpt_path=last"])
    assert not Path("runs").exists()
    main(["fit", "-c", str(QUICKSTART), *TINY])
    main(["fit", "-c", str(QUICKSTART), *TINY])
    capsys.readouterr()
    main(["fit", "-c", str(QUICKSTART), *TINY, "--trainer.max_steps=4", "--ckpt_path=last"])
    err = capsys.readouterr().err
    last = Path("runs/quickstart/version_1/checkpoints/last.ckpt")
    assert f"--ckpt_path last: {last}" in err
    assert f"--ckpt_path {last}: resuming at step 2 (epoch " in err and "logs to runs/quickstart/version_2" in err
    resumed = torch.load("runs/quickstart/version_2/checkpoints/last.ckpt", weights_only=False)
    assert resumed["global_step"] == 4 and runs() == ["version_0", "version_1", "version_2"]


def test_ckpt_path_last_takes_the_checkpoint_of_a_ctrl_c_when_it_is_newer():
    """A fit stopped by Ctrl-C saves interrupted.ckpt after its last.ckpt (the last validation's), or before any."""
    config = {"trainer": {"logger": {"init_args": {"save_dir": "runs", "name": "x"}}}}
    saved = {}
    for run, name in [(0, "last.ckpt"), (1, "interrupted.ckpt"), (10, None)]:  # version_10: failed, no checkpoint
        folder = Path(f"runs/x/version_{run}/checkpoints")
        folder.mkdir(parents=True)
        if name:
            saved[run] = folder / name
            saved[run].write_bytes(b"")
    assert latest_last_checkpoint(config) == saved[1]  # the newest run, interrupted before its first last.ckpt
    last = saved[1].with_name("last.ckpt")
    last.write_bytes(b"")
    older, newer = saved[1].stat().st_mtime_ns - 10**9, saved[1].stat().st_mtime_ns
    os.utime(last, ns=(older, older))
    assert latest_last_checkpoint(config) == saved[1]
    os.utime(last, ns=(newer + 10**9, newer + 10**9))  # resumed after the interrupt and validated since
    assert latest_last_checkpoint(config) == last


def test_a_resume_whose_max_time_is_already_spent_is_refused_before_training():
    main(["fit", "-c", str(QUICKSTART), *TINY])
    checkpoint = torch.load("runs/quickstart/version_0/checkpoints/last.ckpt", weights_only=False)
    timer = next(key for key in checkpoint["callbacks"] if key == "Timer")
    checkpoint["callbacks"][timer]["time_elapsed"]["train"] = 3600.0  # a run that trained for an hour
    torch.save(checkpoint, "spent.ckpt")
    with pytest.raises(ValueError, match=r"trained for 1:00:00, which spends this fit's max_time \(0:05:00"):
        main(["fit", "-c", str(QUICKSTART), *TINY, "--trainer.max_steps=4", "--ckpt_path=spent.ckpt"])
    assert runs() == ["version_0"]
    main(
        [
            "fit",
            "-c",
            str(QUICKSTART),
            *TINY,
            "--trainer.max_steps=4",
            "--trainer.max_time=null",
            "--ckpt_path=spent.ckpt",
        ]
    )
    assert torch.load("runs/quickstart/version_1/checkpoints/last.ckpt", weights_only=False)["global_step"] == 4


def test_the_cli_leaves_optimizers_to_the_models(capsys):
    with pytest.raises(SystemExit) as refused:
        main(["fit", "-c", str(QUICKSTART), *TINY, "--optimizer=torch.optim.SGD"])
    assert refused.value.code == 2 and "optimizer" in capsys.readouterr().err


def test_arguments_left_to_a_none_default_are_not_reported_as_replaced():
    world = "pararnn_ts.world.module.WorldModelModule"
    arguments = {"obs_dim": None, "action_dim": 3, "hidden_size": None, "lr": 0.1}
    assert left_to_default_none(world, arguments) == {"obs_dim"}  # hidden_size=None was chosen: its default is 128
    assert left_to_default_none("no.such.Module", arguments) == set()


def test_a_folder_with_only_what_lightning_writes_at_the_start_is_dropped(tmp_path):
    folder = tmp_path / "version_3"
    folder.mkdir()
    (folder / "config.yaml").write_text("")
    (folder / "hparams.yaml").write_text("")
    drop_unused_folder(folder, "config.yaml")
    assert not folder.exists()
    folder.mkdir()
    (folder / "hparams.yaml").write_text("")
    (folder / "metrics.csv").write_text("step\n")
    drop_unused_folder(folder, "config.yaml")
    assert folder.exists()


def test_ctrl_c_during_fit_saves_a_checkpoint_that_resumes(monkeypatch, capsys):
    from pararnn_ts.forecast.cli_module import ParaRNNForecaster

    real = ParaRNNForecaster.training_step

    def interrupted_at_step_3(self, batch, batch_idx):
        if self.global_step == 3:
            raise KeyboardInterrupt
        return real(self, batch, batch_idx)

    with monkeypatch.context() as patch:
        patch.setattr(ParaRNNForecaster, "training_step", interrupted_at_step_3)
        with pytest.raises(SystemExit):
            main(["fit", "-c", str(QUICKSTART), *TINY, "--trainer.max_steps=6"])
    saved = Path("runs/quickstart/version_0/checkpoints/interrupted.ckpt")
    assert f"resume it with --ckpt_path {saved}" in capsys.readouterr().err
    assert torch.load(saved, weights_only=False)["global_step"] == 3
    main(["fit", "-c", str(QUICKSTART), *TINY, "--trainer.max_steps=6", f"--ckpt_path={saved}"])
    assert torch.load("runs/quickstart/version_1/checkpoints/last.ckpt", weights_only=False)["global_step"] == 6
    assert not Path("runs/quickstart/version_1/checkpoints/interrupted.ckpt").exists()  # only when interrupted


def test_resuming_with_other_data_arguments_is_warned_about(tmp_path):
    path = tmp_path / "lm.ckpt"
    recorded = {"_class_path": "pararnn_ts.lm.TextDataModule", "batch_size": 16, "seq_len": 256, "paths": None}
    torch.save({"datamodule_hyper_parameters": recorded}, path)
    data = {"class_path": "pararnn_ts.lm.TextDataModule", "init_args": {"batch_size": 8, "seq_len": 256}}
    with pytest.warns(UserWarning, match=r"goes on with the config's: batch_size=8 \(checkpoint: 16\)$"):
        warn_if_data_changed(str(path), torch.load(path, weights_only=True), data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = {**data, "init_args": {"batch_size": 16, "paths": None}}
        warn_if_data_changed(str(path), torch.load(path, weights_only=True), same)
        warn_if_data_changed(None, None, data)
        torch.save({}, path)  # a data module that records nothing
        warn_if_data_changed(str(path), torch.load(path, weights_only=True), data)


def test_arguments_only_predict_reads_are_not_compared_on_a_resume(tmp_path):
    from pararnn_ts.forecast import ForecastDataModule
    from pararnn_ts.lm import TextDataModule

    for module in (TextDataModule, ForecastDataModule):  # the names are the data modules' own arguments
        assert set(module.predict_arguments) <= set(inspect.signature(module).parameters)
    path = tmp_path / "lm.ckpt"
    torch.save({"datamodule_hyper_parameters": {"temperature": 0.8, "seq_len": 256}}, path)
    data = {"class_path": "pararnn_ts.lm.TextDataModule", "init_args": {"temperature": 0.0, "seq_len": 256}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_data_changed(
            str(path), torch.load(path, weights_only=True), data, skip=TextDataModule.predict_arguments
        )


def test_resuming_with_another_budget_is_warned_about():
    main(["fit", "-c", str(QUICKSTART), *TINY])
    last = "runs/quickstart/version_0/checkpoints/last.ckpt"
    assert torch.load(last, weights_only=False)["pararnn_ts_budget"] == {"max_steps": 2, "max_epochs": None}
    spans = r"another budget: max_steps=4 \(checkpoint: 2\); a learning-rate schedule set over the run's steps"
    with pytest.warns(UserWarning, match=spans):
        main(["fit", "-c", str(QUICKSTART), *TINY, "--trainer.max_steps=4", f"--ckpt_path={last}"])
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*another budget")
        main(["fit", "-c", str(QUICKSTART), *TINY, f"--ckpt_path={last}"])


def test_ctrl_c_and_predict_print_no_lightning_tips_nor_notes_on_checkpoint_bookkeeping(monkeypatch):
    """Lightning's litlogger tip (every run), its weights_only default (on saving interrupted.ckpt) and, when
    predict restores a fit's checkpoint, its ModelCheckpoint folder change are nothing a user can act on."""
    from pararnn_ts.forecast.cli_module import ParaRNNForecaster

    real = ParaRNNForecaster.training_step

    def interrupted_at_step_1(self, batch, batch_idx):
        if self.global_step == 1:
            raise KeyboardInterrupt
        return real(self, batch, batch_idx)

    logged: list[str] = []
    collect = logging.Handler()
    collect.emit = lambda record: logged.append(record.getMessage())
    logging.getLogger("lightning.pytorch").addHandler(collect)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with monkeypatch.context() as patch, pytest.raises(SystemExit):
                patch.setattr(ParaRNNForecaster, "training_step", interrupted_at_step_1)
                main(["fit", "-c", str(QUICKSTART), *TINY])
            saved = "runs/quickstart/version_0/checkpoints/interrupted.ckpt"
            main(["predict", "-c", str(QUICKSTART), *TINY, f"--ckpt_path={saved}"])
    finally:
        logging.getLogger("lightning.pytorch").removeHandler(collect)
    assert Path("runs/quickstart/version_1/forecasts.csv").exists()
    assert any("GPU available" in line for line in logged)  # Lightning's other lines are kept
    assert not [line for line in logged if "Tip:" in line or "weights_only" in line]
    assert not [str(w.message) for w in caught if "dirpath has changed" in str(w.message)]


# Validations every 3 steps across epochs of 4 batches: they fall mid-epoch, and on the batch before a Ctrl-C
CTRL_C_FIT = [
    "fit",
    "-c",
    str(QUICKSTART),
    *TINY,
    "--trainer.max_steps=8",
    "--trainer.limit_val_batches=2",
    "--trainer.limit_test_batches=0",
    "--trainer.val_check_interval=3",
    "--trainer.check_val_every_n_epoch=null",
    "--data.init_args.num_batches_per_epoch=4",
    "--model.init_args.dropout=0",  # dropout's random draws are not restored
]


def val_losses(*runs: Path) -> list[tuple[str, str]]:
    """``(step, val_loss)`` of every validation that ``runs`` (one run's sessions) logged."""
    rows = []
    for run in runs:
        if (run / "metrics.csv").is_file():
            with open(run / "metrics.csv") as f:
                rows += [(row["step"], row["val_loss"]) for row in csv.DictReader(f) if row.get("val_loss")]
    return sorted(rows, key=lambda row: int(row[0]))


def optimizer_tensors(checkpoint: dict) -> list[torch.Tensor]:
    return [tensor for state in checkpoint["optimizer_states"][0]["state"].values() for tensor in state.values()]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[dict, list[tuple[str, str]]]:
    """The last checkpoint and the validations of the fit that the Ctrl-C tests interrupt."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setattr(sys, "argv", ["pararnn-ts"])
        main(CTRL_C_FIT)
    run = folder / "runs" / "quickstart" / "version_0"
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=False), val_losses(run)


@pytest.mark.parametrize(
    ("hook", "step"),
    [
        ("training_step", 3),  # mid-step, just after a validation
        ("training_step", 4),  # in the first step of an epoch
        ("optimizer_step", 4),  # while step 5 updates the weights: held until the next batch starts
        ("optimizer_step", 3),  # the same in the last step of an epoch: held until the next epoch's first batch
        ("optimizer_step", 5),  # the same before a validation: held until it starts
        ("validation_step", 6),  # on the validation's second batch
        ("on_train_batch_end", 5),  # twice, as the step's end hooks run: the second one stops at once
    ],
)
def test_a_fit_resumed_after_ctrl_c_is_the_uninterrupted_fit(uninterrupted, monkeypatch, hook, step):
    """A Ctrl-C (SIGINT) wherever it lands: the fit resumed from interrupted.ckpt trains on the same batches and
    validates at the same steps as the uninterrupted fit, to bit-identical weights."""
    from pararnn_ts.forecast.cli_module import ParaRNNForecaster

    real = getattr(ParaRNNForecaster, hook)

    def ctrl_c_at_step(self, *args, **kwargs):
        validating = hook == "validation_step"
        second_batch = not validating or args[1] == 1  # validation_step(batch, batch_idx)
        now = self.global_step == step and self.trainer.validating == validating and second_batch
        if now and hook != "optimizer_step":
            for _ in range(2 if hook == "on_train_batch_end" else 1):
                os.kill(os.getpid(), signal.SIGINT)
        result = real(self, *args, **kwargs)
        if now and hook == "optimizer_step":
            os.kill(os.getpid(), signal.SIGINT)
        return result

    with monkeypatch.context() as patch, pytest.raises(SystemExit):
        patch.setattr(ParaRNNForecaster, hook, ctrl_c_at_step)
        main(CTRL_C_FIT)
    main([*CTRL_C_FIT, "--ckpt_path=runs/quickstart/version_0/checkpoints/interrupted.ckpt"])
    resumed = torch.load("runs/quickstart/version_1/checkpoints/last.ckpt", weights_only=False)
    expected, validations = uninterrupted
    assert resumed["global_step"] == expected["global_step"] == 8
    for name, weights in expected["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], weights), name
    assert all(map(torch.equal, optimizer_tensors(resumed), optimizer_tensors(expected)))
    assert val_losses(*Path("runs/quickstart").iterdir()) == validations


# Optimizer steps of 2 batches: the windows are batches (0, 1), (2, 3) of each epoch of 4
ACCUMULATED_FIT = [
    "fit",
    "-c",
    str(QUICKSTART),
    *TINY,
    "--trainer.max_steps=4",
    "--trainer.accumulate_grad_batches=2",
    "--trainer.limit_test_batches=0",
    "--data.init_args.num_batches_per_epoch=4",
]


@pytest.fixture(scope="module")
def accumulated_to_the_end(tmp_path_factory) -> dict:
    """The last checkpoint of :data:`ACCUMULATED_FIT` uninterrupted."""
    folder = tmp_path_factory.mktemp("accumulated")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setattr(sys, "argv", ["pararnn-ts"])
        main(ACCUMULATED_FIT)
    return torch.load(folder / "runs/quickstart/version_0/checkpoints/last.ckpt", weights_only=False)


@pytest.mark.parametrize("batch", [3, 5])  # the second batch of a window: in epoch 0, in epoch 1
def test_a_ctrl_c_within_an_accumulation_window_resumes_from_its_start(accumulated_to_the_end, monkeypatch, batch):
    """The gradients of the window's first batch are not in the checkpoint: the fit goes back to the window's start
    (batches, step counts, random state), so that the resumed fit is the uninterrupted one, dropout and all."""
    from pararnn_ts.forecast.cli_module import ParaRNNForecaster

    real = ParaRNNForecaster.training_step

    def ctrl_c_in_batch(self, *args):
        if self.trainer.fit_loop.total_batch_idx == batch:
            os.kill(os.getpid(), signal.SIGINT)
        return real(self, *args)

    with monkeypatch.context() as patch, pytest.raises(SystemExit):
        patch.setattr(ParaRNNForecaster, "training_step", ctrl_c_in_batch)
        main(ACCUMULATED_FIT)
    main([*ACCUMULATED_FIT, "--ckpt_path=runs/quickstart/version_0/checkpoints/interrupted.ckpt"])
    resumed = torch.load("runs/quickstart/version_1/checkpoints/last.ckpt", weights_only=False)
    assert resumed["global_step"] == accumulated_to_the_end["global_step"] == 4
    for name, weights in accumulated_to_the_end["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], weights), name


PARITY_FIT = [
    "fit",
    "-c",
    str(ROOT / "experiments" / "synthetic" / "parity_paragru.yaml"),
    "--trainer.max_steps=6",
    "--trainer.limit_val_batches=1",
    "--trainer.limit_test_batches=0",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--data.init_args.batches_per_epoch=4",
    "--data.init_args.batch_size=4",
    "--data.init_args.max_len=24",
]


def test_a_parity_fit_resumed_mid_epoch_trains_on_the_rest_of_the_epoch(monkeypatch):
    """The Parity task's training batches resume mid-epoch too (its loader restarted the epoch at batch 0)."""
    from pararnn_ts.synthetic import SequenceTagger

    main(PARITY_FIT)
    real = SequenceTagger.training_step

    def ctrl_c_in_the_sixth_step(self, *args):  # the second epoch's second batch
        if self.global_step == 5:
            os.kill(os.getpid(), signal.SIGINT)
        return real(self, *args)

    with monkeypatch.context() as patch, pytest.raises(SystemExit):
        patch.setattr(SequenceTagger, "training_step", ctrl_c_in_the_sixth_step)
        main(PARITY_FIT)
    run = Path("runs/parity_paragru")
    main([*PARITY_FIT, f"--ckpt_path={run}/version_1/checkpoints/interrupted.ckpt"])
    expected, resumed = (torch.load(run / f"version_{v}/checkpoints/last.ckpt", weights_only=False) for v in (0, 2))
    assert resumed["global_step"] == expected["global_step"] == 6
    for name, weights in expected["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], weights), name


def test_ctrl_c_before_any_step_finished_saves_nothing(monkeypatch, capsys):
    from pararnn_ts.forecast.cli_module import ParaRNNForecaster

    def ctrl_c(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)

    with monkeypatch.context() as patch, pytest.raises(SystemExit):
        patch.setattr(ParaRNNForecaster, "training_step", ctrl_c)
        main(["fit", "-c", str(QUICKSTART), *TINY])
    assert "nothing to save" in capsys.readouterr().err
    assert not Path("runs/quickstart/version_0/checkpoints/interrupted.ckpt").exists()


def test_last_ckpt_holds_the_last_steps_of_a_fit_that_ends_between_validations(monkeypatch, capsys):
    """Validation (and with it Lightning's last.ckpt) every 2 steps, max_steps 3, within the second epoch of 2
    batches: last.ckpt holds step 3, the weights the test after the fit scores, and --ckpt_path last resumes from
    there, mid-epoch, to the weights of the uninterrupted fit (the same batches and dropout)."""
    from pararnn_ts.forecast.cli_module import ParaRNNForecaster

    every_2_steps = [*TINY, "--trainer.val_check_interval=2", "--trainer.check_val_every_n_epoch=null"]
    main(["fit", "-c", str(QUICKSTART), *every_2_steps, "--trainer.max_steps=4"])
    tested = {}
    monkeypatch.setattr(
        ParaRNNForecaster, "on_test_start", lambda self: tested.update(self.state_dict()), raising=False
    )
    main(["fit", "-c", str(QUICKSTART), *every_2_steps, "--trainer.max_steps=3"])
    last = torch.load("runs/quickstart/version_1/checkpoints/last.ckpt", weights_only=False)
    assert last["global_step"] == 3 and last["epoch"] == 1 and tested.keys() == last["state_dict"].keys()
    assert all(torch.equal(tested[name], weights) for name, weights in last["state_dict"].items())
    capsys.readouterr()
    main(["fit", "-c", str(QUICKSTART), *every_2_steps, "--trainer.max_steps=4", "--ckpt_path=last"])
    assert "resuming at step 3 (epoch 1)" in capsys.readouterr().err
    resumed, uninterrupted = (
        torch.load(f"runs/quickstart/version_{v}/checkpoints/last.ckpt", weights_only=False)["state_dict"]
        for v in (2, 0)
    )
    assert all(torch.equal(resumed[name], weights) for name, weights in uninterrupted.items())


# Epochs of 4 batches, validations (when limit_val_batches > 0) every 3 steps across them
STOPPED_FIT = [
    "fit",
    "-c",
    str(QUICKSTART),
    *TINY,
    "--trainer.max_steps=8",
    "--trainer.limit_test_batches=0",
    "--trainer.val_check_interval=3",
    "--trainer.check_val_every_n_epoch=null",
    "--data.init_args.num_batches_per_epoch=4",
]


def logged_steps(run: Path) -> list[tuple[str, str]]:
    """``(step, "val" or "train")`` of each row of a run's ``metrics.csv``."""
    with open(run / "metrics.csv") as f:
        return [(row["step"], "val" if row.get("val_loss") else "train") for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def fits_to_the_end(tmp_path_factory) -> dict[str, tuple[dict, list[tuple[str, str]]]]:
    """The weights and logged steps of :data:`STOPPED_FIT` uninterrupted, by ``limit_val_batches``."""
    ends = {}
    for validations in ("0", "1"):
        folder = tmp_path_factory.mktemp(f"to_the_end_{validations}")
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(folder)
            patch.setattr(sys, "argv", ["pararnn-ts"])
            main([*STOPPED_FIT, f"--trainer.limit_val_batches={validations}"])
        run = folder / "runs" / "quickstart" / "version_0"
        ends[validations] = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False), logged_steps(run)
    return ends


@pytest.mark.parametrize(
    ("validations", "step"),
    [
        ("1", 5),  # mid-epoch, between validations: Lightning validates before it stops
        ("0", 5),  # mid-epoch, no validation: last.ckpt is written at the epoch's end, cut short
        ("0", 4),  # at an epoch's last batch, no validation
        ("0", 6),  # where a validation is scheduled but has no batches
    ],
)
def test_a_fit_resumed_after_a_stop_is_the_uninterrupted_fit(fits_to_the_end, monkeypatch, validations, step):
    """A fit that trainer.should_stop (max_time's Timer, a user's callback) stops as a step ends, resumed with
    --ckpt_path last: the uninterrupted fit's weights, and its metrics logged at the same steps."""
    from pararnn_ts.forecast.cli_module import ParaRNNForecaster

    def stop_at_step(self, *args):
        self.trainer.should_stop = self.trainer.should_stop or self.global_step == step

    fit = [*STOPPED_FIT, f"--trainer.limit_val_batches={validations}"]
    with monkeypatch.context() as patch:
        patch.setattr(ParaRNNForecaster, "on_train_batch_end", stop_at_step, raising=False)
        main(fit)
    main([*fit, "--ckpt_path=last"])
    runs = sorted(Path("runs/quickstart").iterdir())
    stopped = torch.load(runs[0] / "checkpoints" / "last.ckpt", weights_only=False)
    resumed = torch.load(runs[1] / "checkpoints" / "last.ckpt", weights_only=False)
    expected, steps = fits_to_the_end[validations]
    assert stopped["global_step"] == step and resumed["global_step"] == expected["global_step"] == 8
    for name, weights in expected["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], weights), name
    resumed_steps = logged_steps(runs[1])
    assert resumed_steps == [(at, kind) for at, kind in steps if int(at) >= step]


def test_ckpt_path_last_without_a_logger_is_the_checkpoint_in_the_root_folder(capsys):
    """Without a logger a fit writes root/checkpoints/last.ckpt; a fit resuming it writes to another root, which the
    refusal to reuse this one says with the checkpoint's path; a ModelCheckpoint's dirpath is where it looks too."""
    main(["fit", "-c", str(QUICKSTART), *TINY, "--trainer.logger=false"])
    capsys.readouterr()
    with pytest.raises(FileExistsError, match=r"another --trainer.default_root_dir with --ckpt_path checkpoints/last"):
        main(["fit", "-c", str(QUICKSTART), *TINY, "--trainer.logger=false", "--ckpt_path=last"])
    assert "--ckpt_path last: checkpoints/last.ckpt" in capsys.readouterr().err
    resumed = Path("resumed/checkpoints/last.ckpt")  # what a fit with --trainer.default_root_dir=resumed writes
    resumed.parent.mkdir(parents=True)
    resumed.write_bytes(b"")
    assert latest_last_checkpoint({"trainer": {"logger": False, "default_root_dir": "resumed"}}) == resumed
    callbacks = [{"class_path": "ModelCheckpoint", "init_args": {"dirpath": "mine"}}]
    with pytest.raises(FileNotFoundError, match=r"no last.ckpt \(or interrupted.ckpt\) in mine; no checkpoint"):
        latest_last_checkpoint({"trainer": {"logger": None, "callbacks": callbacks}})


def test_ckpt_path_last_in_a_dirpath_that_runs_share_is_the_newest_versioned_one():
    """Runs of one ModelCheckpoint dirpath: Lightning names the second run's files last-v1.ckpt, ... ."""
    folder = Path("shared")
    folder.mkdir()
    config = {"trainer": {"callbacks": [{"class_path": "ModelCheckpoint", "init_args": {"dirpath": "shared"}}]}}
    # newest first; the first two are not what a fit ends with
    for age, name in enumerate(["epoch=0-step=3-v1.ckpt", "last-x.ckpt", "last-v2.ckpt", "last-v1.ckpt", "last.ckpt"]):
        (folder / name).write_bytes(b"")
        os.utime(folder / name, ns=(10**18 - age * 10**9,) * 2)
    assert latest_last_checkpoint(config) == folder / "last-v2.ckpt"
    (folder / "interrupted-v1.ckpt").write_bytes(b"")
    assert latest_last_checkpoint(config) == folder / "interrupted-v1.ckpt"


def test_ckpt_path_last_names_the_checkpoints_it_found_when_none_is_last():
    saved = Path("runs/x/version_0/checkpoints/epoch=1-step=10.ckpt")
    saved.parent.mkdir(parents=True)
    saved.write_bytes(b"")
    config = {"trainer": {"logger": {"init_args": {"save_dir": "runs", "name": "x"}}}}
    with pytest.raises(
        FileNotFoundError, match=rf"in runs/x/version_N/checkpoints; the checkpoints there: {saved}; pass"
    ):
        latest_last_checkpoint(config)
