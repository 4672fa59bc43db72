"""The ``pararnn-ts`` command: every experiment config parses, bad keys are refused, fit runs."""

from __future__ import annotations

import csv
import importlib
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch import LightningDataModule, LightningModule, Trainer

from pararnn_ts.cli import (
    TRACEBACK_ENV,
    VERBS,
    console,
    latest_last_checkpoint,
    lightning_cli,
    main,
    refusal,
    require_checkpoint,
)

ROOT = Path(__file__).resolve().parents[1]
# Benchmark runner settings (a top-level ``benchmark:`` key) are not CLI configs; their runners' tests parse them.
EXPERIMENTS = sorted(p for p in (ROOT / "experiments").rglob("*.yaml") if "benchmark" not in yaml.safe_load(p.open()))
# Paper-scale configs need GPUs, data and a tokenizer file the user supplies: parsed, not instantiated
# (tests/test_lm_paper_configs.py checks their sections against the classes' signatures).
RUNNABLE_HERE = [p for p in EXPERIMENTS if "paper" not in p.relative_to(ROOT).parts]
PARITY = sorted((ROOT / "experiments" / "synthetic").glob("parity_*.yaml"))
PARITY_GRU = ROOT / "experiments" / "synthetic" / "parity_paragru.yaml"

TINY = [
    "--trainer.max_steps=3",
    "--trainer.log_every_n_steps=1",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--data.init_args.batch_size=4",
    "--data.init_args.min_len=4",
    "--data.init_args.max_len=8",
    "--data.init_args.batches_per_epoch=3",
]


pytestmark = pytest.mark.usefixtures("bare_argv")


def name_of(path: Path) -> str:
    return str(path.relative_to(ROOT))


def read_metrics(version_dir: Path) -> dict[str, list[str]]:
    with open(version_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return {key: [row[key] for row in rows if row[key]] for key in rows[0]}


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_our_verbs_are_dispatched_to_their_modules(verb, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([verb, "--help"])
    assert exit_info.value.code == 0
    assert "usage" in capsys.readouterr().out


def test_there_are_experiment_configs():
    assert PARITY_GRU in EXPERIMENTS and len(PARITY) == 3


@pytest.mark.parametrize("config", RUNNABLE_HERE, ids=name_of)
def test_experiment_config_instantiates_from_any_directory(config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # fragment paths must resolve relative to the config, not the cwd
    cli = lightning_cli(["-c", str(config)], run=False)
    assert isinstance(cli.model, LightningModule)
    assert isinstance(cli.datamodule, LightningDataModule)
    assert isinstance(cli.trainer, Trainer)


@pytest.mark.parametrize("config", EXPERIMENTS, ids=name_of)
def test_print_config_resolves_fragments(config, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "-c", str(config), "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    written = yaml.safe_load(config.read_text())
    for section in ("model", "data"):
        fragment = written[section]
        if isinstance(fragment, str):  # a fragment file, relative to the config
            fragment = yaml.safe_load((config.parent / fragment).read_text())
        # the same class: jsonargparse may print the shortest path it is importable by (pararnn_ts.forecast.X)
        assert named_class(printed[section]["class_path"]) is named_class(fragment["class_path"])


def named_class(path: str) -> type:
    module, name = path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize(
    "override, key, hint",
    [
        (
            "--model.init_args.cell.init_args.hiden_size=8",
            "hiden_size",
            "\ndid you mean --model.init_args.cell.init_args.hidden_size?",
        ),
        ("--model.init_args.learning_rate=0.1", "learning_rate", None),
        ("--data.init_args.max_length=9", "max_length", "\ndid you mean --data.init_args.max_len?"),
        ("--trainer.max_step=3", "max_step", "--trainer.max_step=3; did you mean --trainer.max_steps?"),
    ],
)
def test_unknown_key_on_the_command_line_is_an_error(override, key, hint, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "-c", str(PARITY_GRU), override])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert_short_error_naming(key, err)
    assert (hint in err) if hint else ("did you mean" not in err)


def test_unknown_key_in_a_config_file_is_an_error(tmp_path, capsys):
    config = tmp_path / "typo.yaml"
    config.write_text(f"model: {ROOT / 'models' / 'parity_paragru.yaml'}\ntrainer:\n  max_epoch: 1\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "-c", str(config)])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert_short_error_naming("max_epoch", err)
    assert "does not accept option 'trainer.max_epoch'; did you mean --trainer.max_epochs?" in err


def assert_short_error_naming(key: str, err: str) -> None:
    """The error names ``key`` after a one-line usage, not after argparse's list of every option."""
    assert key in err
    usage = [line for line in err.splitlines() if line.startswith("usage:")]
    assert len(usage) == 1 and "[--trainer.max_epochs" not in err, err


def test_missing_fragment_is_an_error_naming_it(tmp_path, capsys):
    config = tmp_path / "missing.yaml"
    config.write_text("model: ../models/no_such_model.yaml\n")
    with pytest.raises(SystemExit):
        main(["fit", "-c", str(config)])
    assert "no_such_model.yaml" in capsys.readouterr().err


@pytest.mark.parametrize("config", PARITY, ids=name_of)
def test_tiny_fit_logs_and_evaluates_the_test_split(config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["fit", "-c", str(config), *TINY])
    (version_dir,) = (tmp_path / "runs").glob("*/version_0")
    assert (version_dir / "config.yaml").is_file()
    assert list((version_dir / "checkpoints").glob("*.ckpt"))
    metrics = read_metrics(version_dir)
    assert len(metrics["train_loss"]) == 3
    for key in ("val_loss", "val_acc", "test_loss", "test_acc"):
        assert metrics[key], f"{key} was not logged"
    assert 0 <= float(metrics["test_acc"][-1]) <= 1


def test_rerun_gets_a_new_folder_and_never_overwrites(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["fit", "-c", str(PARITY_GRU), *TINY])
    main(["fit", "-c", str(PARITY_GRU), *TINY])
    assert sorted(p.name for p in (tmp_path / "runs" / "parity_paragru").iterdir()) == ["version_0", "version_1"]

    fixed = [*TINY, "--trainer.logger.init_args.version=fixed"]
    main(["fit", "-c", str(PARITY_GRU), *fixed])
    before = snapshot(tmp_path / "runs" / "parity_paragru" / "fixed")
    assert {"config.yaml", "metrics.csv"} <= set(before)
    with pytest.raises(FileExistsError, match="config.yaml"):
        main(["fit", "-c", str(PARITY_GRU), *fixed, "--model.init_args.lr=0.5"])
    assert snapshot(tmp_path / "runs" / "parity_paragru" / "fixed") == before


def test_a_verb_logging_to_the_fixed_folder_of_a_fit_is_refused_before_the_logger_starts(tmp_path, monkeypatch):
    """The run would fail on its config.yaml anyway, but only after CSVLogger had deleted the fit's metrics.csv."""
    monkeypatch.chdir(tmp_path)
    fixed = [*TINY, "--trainer.logger.init_args.version=fixed"]
    main(["fit", "-c", str(PARITY_GRU), *fixed])
    folder = tmp_path / "runs" / "parity_paragru" / "fixed"
    before = snapshot(folder)
    (checkpoint,) = (folder / "checkpoints").glob("epoch=*.ckpt")
    for verb in ("validate", "test"):
        with pytest.raises(FileExistsError, match="config.yaml belongs to an earlier run"):
            main([verb, "-c", str(PARITY_GRU), *fixed, f"--ckpt_path={checkpoint}"])
    assert snapshot(folder) == before


def test_without_a_logger_a_failed_fit_leaves_no_config_and_a_learning_rate_monitor_is_dropped(tmp_path, monkeypatch):
    """With --trainer.logger false runs share their folder: a run that failed must not leave a config.yaml that
    refuses every later run there; the LearningRateMonitor, which needs a logger, is dropped with a warning."""
    from pararnn_ts.synthetic import ParityDataModule

    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    no_logger = [*TINY, "--trainer.logger=false"]
    with monkeypatch.context() as patch:
        patch.setattr(ParityDataModule, "setup", lambda self, stage=None: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            main(["fit", "-c", str(PARITY_GRU), *no_logger])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    monitor = ["--trainer.callbacks+=LearningRateMonitor"]
    with pytest.warns(UserWarning, match="LearningRateMonitor .* no logger .* not used"):
        main(["fit", "-c", str(PARITY_GRU), *no_logger, *monitor])
    assert (tmp_path / "config.yaml").is_file() and list((tmp_path / "checkpoints").glob("*.ckpt"))


def test_validate_test_and_predict_need_a_checkpoint_and_predict_a_predict_split(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["fit", "-c", str(PARITY_GRU), *TINY])
    (checkpoint,) = (tmp_path / "runs" / "parity_paragru" / "version_0" / "checkpoints").glob("epoch=*.ckpt")
    for verb in ("validate", "test", "predict"):
        with pytest.raises(ValueError, match="--ckpt_path"):
            main([verb, "-c", str(PARITY_GRU), *TINY])
    with pytest.raises(ValueError, match="ParityDataModule serves nothing to predict"):
        main(["predict", "-c", str(PARITY_GRU), *TINY, f"--ckpt_path={checkpoint}"])
    main(["test", "-c", str(PARITY_GRU), *TINY, f"--ckpt_path={checkpoint}"])
    assert read_metrics(tmp_path / "runs" / "parity_paragru" / "version_1")["test_acc"]


def test_test_without_a_test_split_is_refused_before_the_run(tmp_path, monkeypatch):
    from pararnn_ts.synthetic import ParityDataModule

    monkeypatch.chdir(tmp_path)
    main(["fit", "-c", str(PARITY_GRU), *TINY, "--trainer.limit_test_batches=0"])
    (checkpoint,) = (tmp_path / "runs" / "parity_paragru" / "version_0" / "checkpoints").glob("epoch=*.ckpt")
    monkeypatch.setattr(ParityDataModule, "test_dataloader", LightningDataModule.test_dataloader)
    with pytest.raises(ValueError, match="no test split .* pararnn-ts validate"):
        main(["test", "-c", str(PARITY_GRU), *TINY, f"--ckpt_path={checkpoint}"])
    assert [p.name for p in (tmp_path / "runs" / "parity_paragru").iterdir()] == ["version_0"]


def test_arguments_a_checkpoint_replaces_are_named_in_a_warning(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["fit", "-c", str(PARITY_GRU), *TINY])
    (checkpoint,) = (tmp_path / "runs" / "parity_paragru" / "version_0" / "checkpoints").glob("epoch=*.ckpt")
    trained_lr = torch.load(checkpoint, weights_only=True)["hyper_parameters"]["lr"]
    with pytest.warns(UserWarning, match=rf"not used: lr=0\.123 \(checkpoint: {trained_lr}\)$"):
        main(["test", "-c", str(PARITY_GRU), *TINY, "--model.init_args.lr=0.123", f"--ckpt_path={checkpoint}"])
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*restores the model's arguments")
        main(["test", "-c", str(PARITY_GRU), *TINY, f"--ckpt_path={checkpoint}"])


@pytest.mark.parametrize("config", EXPERIMENTS, ids=name_of)
def test_configs_that_validate_every_n_steps_count_them_across_epochs(config):
    """An int val_check_interval counts batches within an epoch unless check_val_every_n_epoch is null: Lightning
    then refuses any dataset of fewer batches per epoch, and validates at irregular steps on larger ones."""
    trainer = yaml.safe_load(config.open()).get("trainer") or {}
    if isinstance(trainer.get("val_check_interval"), int):
        assert "check_val_every_n_epoch" in trainer and trainer["check_val_every_n_epoch"] is None


def test_a_fit_too_short_to_reach_its_first_validation_is_warned_about(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    by_steps = [*TINY, "--trainer.check_val_every_n_epoch=null"]
    with pytest.warns(
        UserWarning, match="max_steps=3 ends the fit before the first validation at val_check_interval=5"
    ):
        main(["fit", "-c", str(PARITY_GRU), *by_steps, "--trainer.val_check_interval=5"])
    assert not read_metrics(tmp_path / "runs" / "parity_paragru" / "version_0").get("val_loss")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*before the first validation")
        main(["fit", "-c", str(PARITY_GRU), *by_steps, "--trainer.val_check_interval=2"])
    assert read_metrics(tmp_path / "runs" / "parity_paragru" / "version_1")["val_loss"]


@pytest.mark.parametrize("warnoptions", [[], ["default"]])
def test_library_deprecation_noise_is_silenced_unless_warnings_are_asked_for(monkeypatch, warnoptions):
    monkeypatch.setattr(sys, "warnoptions", warnoptions)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(SystemExit):
            main(["fit", "--help"])
        for module in ("gluonts.time_feature.lag", "my_project.features"):
            warnings.warn_explicit(
                "'Q' is deprecated and will be removed in a future version", FutureWarning, "f", 1, module
            )
        for module in ("pararnn_ts.forecast.csv_data", "my_project.features"):  # freq="B"
            warnings.warn_explicit("Period with BDay freq is deprecated and will", FutureWarning, "f", 1, module)
        for module in ("lightning.pytorch.utilities._pytree", "my_project.features"):
            message = "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec)`"
            warnings.warn_explicit(message, FutureWarning, "f", 1, module)
    shown = [str(w.message) for w in caught if w.category is FutureWarning]
    assert len(shown) == (6 if warnoptions else 3)  # the user's own code always warns


def test_a_run_that_fails_before_writing_results_leaves_no_folder(tmp_path, monkeypatch):
    from pararnn_ts.synthetic import ParityDataModule, SequenceTagger

    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs" / "parity_paragru"
    with monkeypatch.context() as patch:
        patch.setattr(ParityDataModule, "setup", lambda self, stage=None: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            main(["fit", "-c", str(PARITY_GRU), *TINY])
        assert not (tmp_path / "runs").exists()  # runs/ and runs/parity_paragru/ were this run's too
    main(["fit", "-c", str(PARITY_GRU), *TINY])
    kept = snapshot(runs)
    with monkeypatch.context() as patch:
        patch.setattr(ParityDataModule, "setup", lambda self, stage=None: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            main(["fit", "-c", str(PARITY_GRU), *TINY])
    assert snapshot(runs) == kept and sorted(p.name for p in runs.iterdir()) == ["version_0"]
    with monkeypatch.context() as patch:  # a run that logged before failing keeps its folder
        patch.setattr(SequenceTagger, "test_step", lambda self, batch, batch_idx: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            main(["fit", "-c", str(PARITY_GRU), *TINY])
    assert "metrics.csv" in snapshot(runs / "version_1")


def test_the_command_prints_a_refusal_as_one_error_line_without_a_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        console(["validate", "-c", str(PARITY_GRU), *TINY])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err
    assert "error: pararnn-ts validate runs a trained model: pass a checkpoint" in err and TRACEBACK_ENV in err
    with pytest.raises(SystemExit):  # refusals of a verb of ours too
        console(["plan", "--env", "Pendulum-v1", "--checkpoint", str(tmp_path / "missing.ckpt")])
    assert "error: " in capsys.readouterr().err
    monkeypatch.setenv(TRACEBACK_ENV, "1")
    with pytest.raises(ValueError, match="--ckpt_path"):
        console(["validate", "-c", str(PARITY_GRU), *TINY])


def test_a_refusal_of_a_model_or_data_constructor_is_one_error_line_too(tmp_path, monkeypatch, capsys):
    """jsonargparse re-raises what an __init__ raised as its own error; the refusal under it is what is printed."""
    monkeypatch.chdir(tmp_path)
    for bad, said in [
        ("--data.init_args.batch_size=0", "ParityDataModule: batch_size"),
        ("--model.init_args.cell.init_args.max_iters=0", "max_iters must be >= 1"),  # the cell in the model
    ]:
        with pytest.raises(SystemExit) as exit_:
            console(["fit", "-c", str(PARITY_GRU), *TINY, bad])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and "Traceback" not in err and f"error: {said}" in err, err
    assert not (tmp_path / "runs").exists()


def test_the_prepare_script_prints_its_refusals_as_one_error_line(tmp_path):
    (tmp_path / "a.txt").write_text("hello\n")
    script = [sys.executable, str(ROOT / "datasets" / "text_files" / "prepare.py"), "--input", "a.txt", "--out", "out"]
    subprocess.run([*script, "--val-fraction=0.5"], cwd=tmp_path, check=True, capture_output=True)
    again = subprocess.run([*script, "--val-fraction=0.3"], cwd=tmp_path, capture_output=True, text=True)
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert again.stderr.startswith("error: out holds shards made with another config (differences in ['val_fraction'])")


def test_the_command_keeps_the_traceback_of_errors_that_are_not_refusals(tmp_path, monkeypatch):
    """An error not raised by a raise statement of pararnn_ts (a bug, or a library's) is shown as it is."""
    from pararnn_ts.synthetic import ParityDataModule

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(ParityDataModule, "setup", lambda self, stage=None: int("x"))
    with pytest.raises(ValueError, match="invalid literal"):
        console(["fit", "-c", str(PARITY_GRU), *TINY])


def test_only_what_a_raise_statement_of_pararnn_ts_raises_counts_as_a_refusal():
    with pytest.raises(ValueError) as refused:
        require_checkpoint(None, "test")
    with pytest.raises(TypeError) as bug:  # raised inside pararnn_ts, but not by a raise statement
        latest_last_checkpoint(5)
    with pytest.raises(ValueError) as elsewhere:
        int("x")
    assert refusal(refused.value) and not refusal(bug.value) and not refusal(elsewhere.value)


def test_a_missing_checkpoint_file_is_refused_before_the_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for verb in ("fit", "test"):
        with pytest.raises(FileNotFoundError, match="--ckpt_path nope.ckpt: no such file"):
            main([verb, "-c", str(PARITY_GRU), *TINY, "--ckpt_path=nope.ckpt"])
    assert not (tmp_path / "runs").exists()


def test_ckpt_path_says_what_pararnn_ts_takes_and_refuses_best(tmp_path, monkeypatch, capsys):
    """Lightning's help names "best", "hpc", "registry" and the previous fit's best checkpoint, which a command,
    a process of its own, never has: "best" failed with Lightning's traceback."""
    monkeypatch.chdir(tmp_path)
    for verb, says in (("validate", "The checkpoint to run (required)"), ("fit", "A checkpoint to resume from")):
        with pytest.raises(SystemExit):
            main([verb, "--help"])
        usage = " ".join(capsys.readouterr().out.split())
        assert f"--ckpt_path CKPT_PATH {says}: its path, or last: the newest last.ckpt" in usage
        assert '"best"' not in usage.split("--ckpt_path")[1].split("--")[0]
    with pytest.raises(ValueError, match="--ckpt_path best names the best checkpoint of a fit in the same process"):
        main(["test", "-c", str(PARITY_GRU), *TINY, "--ckpt_path=best"])
    assert not (tmp_path / "runs").exists()


def test_a_checkpoint_of_another_model_class_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["fit", "-c", str(PARITY_GRU), *TINY])
    (checkpoint,) = (tmp_path / "runs" / "parity_paragru" / "version_0" / "checkpoints").glob("epoch=*.ckpt")
    world = ROOT / "experiments" / "world" / "pendulum.yaml"
    with pytest.raises(ValueError, match=r"holds a \S*SequenceTagger checkpoint, but the config's model is \S*World"):
        main(["test", "-c", str(world), f"--ckpt_path={checkpoint}"])
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["parity_paragru"]


@pytest.mark.parametrize("module", ["pararnn_ts", "pararnn_ts.cli"])
def test_short_class_names_resolve_in_a_fresh_process(tmp_path, module):
    """The command (also as ``python -m``) imports every shipped class, so configs may name them without modules."""
    args = ["fit", "--model=SequenceTagger", "--model.cell=GatedLinearRNN", "--model.cell.input_size=4"]
    args += ["--model.cell.hidden_size=4", "--data=ParityDataModule", "--print_config"]
    done = subprocess.run([sys.executable, "-m", module, *args], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert yaml.safe_load(done.stdout)["model"]["init_args"]["cell"]["class_path"] == "pararnn_ts.nn.GatedLinearRNN"


def test_a_checkpoint_restores_the_cell_it_was_trained_with(tmp_path, monkeypatch):
    """The tagger's checkpoint records its cell's class_path and init_args: --ckpt_path restores that cell (not the
    config's), and the warning names the cell argument the checkpoint replaces."""
    from pararnn_ts import ParaGRU
    from pararnn_ts.synthetic import SequenceTagger

    monkeypatch.chdir(tmp_path)
    main(["fit", "-c", str(PARITY_GRU), *TINY])
    (checkpoint,) = (tmp_path / "runs" / "parity_paragru" / "version_0" / "checkpoints").glob("epoch=*.ckpt")
    cell = torch.load(checkpoint, weights_only=True)["hyper_parameters"]["cell"]
    assert cell["class_path"] == "pararnn_ts.ParaGRU"
    assert {key: cell["init_args"][key] for key in ("input_size", "hidden_size", "mode", "max_norm")} == {
        "input_size": 16,
        "hidden_size": 32,
        "mode": "sequential",
        "max_norm": None,
    }
    changed = ["--model.init_args.cell.init_args.hidden_size=64", "--model.init_args.cell.init_args.mode=parallel"]
    replaced = r"not used: cell.init_args.hidden_size=64 \(checkpoint: 32\), cell.init_args.mode='parallel' \("
    with pytest.warns(UserWarning, match=replaced):
        main(["test", "-c", str(PARITY_GRU), *TINY, *changed, f"--ckpt_path={checkpoint}"])
    assert read_metrics(tmp_path / "runs" / "parity_paragru" / "version_1")["test_acc"]
    used = yaml.safe_load((tmp_path / "runs" / "parity_paragru" / "version_1" / "config.yaml").read_text())
    assert used["model"]["init_args"]["cell"]["init_args"]["hidden_size"] == 32
    assert used["model"]["init_args"]["cell"]["init_args"]["mode"] == "sequential"
    # in Python too: the checkpoint alone builds the model
    model = SequenceTagger.load_from_checkpoint(checkpoint)
    assert isinstance(model.cell, ParaGRU) and model.cell.hidden_size == 32 and model.cell.mode == "sequential"
    # a cell that cannot be imported here: one error naming it and the fix, not jsonargparse's union dump
    trained = torch.load(checkpoint, weights_only=False)
    trained["hyper_parameters"]["cell"]["class_path"] = "my_missing_cells.TanhRNN"
    torch.save(trained, tmp_path / "elsewhere.ckpt")
    fix = r"--ckpt_path \S*elsewhere.ckpt was trained with the cell 'my_missing_cells.TanhRNN', which cannot be imp"
    with pytest.raises(ImportError, match=fix + r".*PYTHONPATH"):
        main(["test", "-c", str(PARITY_GRU), *TINY, f"--ckpt_path={tmp_path / 'elsewhere.ckpt'}"])


def test_limit_test_batches_0_skips_the_test_after_fit(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(Trainer, "test", lambda *args, **kwargs: pytest.fail("the test after fit ran"))
    main(["fit", "-c", str(PARITY_GRU), *TINY, "--trainer.limit_test_batches=0"])
    assert read_metrics(tmp_path / "runs" / "parity_paragru" / "version_0")["val_loss"]


def test_a_ddp_spawn_fit_runs_its_test_in_the_run_folder_and_keeps_its_metrics(tmp_path):
    """ddp_spawn starts new processes (2 on the CPU, gloo) for the test after fit, which must neither refuse the
    fit's config.yaml nor delete its metrics.csv."""
    spawn = ["--trainer.strategy=ddp_spawn", "--trainer.devices=2", "--trainer.accelerator=cpu"]
    command = [sys.executable, "-m", "pararnn_ts.cli", "fit", "-c", str(PARITY_GRU), *TINY, *spawn]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = read_metrics(tmp_path / "runs" / "parity_paragru" / "version_0")
    for key in ("train_loss", "val_loss", "test_loss", "test_acc"):
        assert metrics[key], f"{key} was not logged"


@pytest.mark.parametrize("config", sorted((ROOT / "experiments" / "world").glob("*.yaml")), ids=name_of)
def test_world_configs_write_the_last_checkpoint_that_ckpt_path_last_resumes(config):
    written = yaml.safe_load(config.read_text())["trainer"].get("callbacks", [])
    assert any(c["class_path"].endswith("ModelCheckpoint") and c["init_args"].get("save_last") for c in written)
