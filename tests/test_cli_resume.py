"""Resuming a fit through ``pararnn-ts``: ``--ckpt_path last``, a spent ``max_time``, what a checkpoint restores."""

from __future__ import annotations

import logging
import os
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
    with pytest.raises(FileNotFoundError, match=r"--ckpt_path last: no runs/quickstart/version_N/checkpoints/last"):
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


def test_resuming_with_another_budget_is_warned_about():
    main(["fit", "-c", str(QUICKSTART), *TINY])
    last = "runs/quickstart/version_0/checkpoints/last.ckpt"
    assert torch.load(last, weights_only=False)["pararnn_ts_budget"] == {"max_steps": 2, "max_epochs": None}
    with pytest.warns(UserWarning, match=r"another budget.* spans: max_steps=4 \(checkpoint: 2\); to finish the run"):
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
