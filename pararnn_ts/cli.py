"""The ``pararnn-ts`` command: Lightning's CLI (``fit``, ``validate``, ``test``, ``predict``) and a few verbs of
our own (:data:`VERBS`: ``pararnn-ts benchmark --help`` and so on).

    pararnn-ts fit -c experiments/synthetic/parity_paragru.yaml
    pararnn-ts fit -c experiments/synthetic/parity_paragru.yaml --model.init_args.lr=0.01 --print_config

``model:`` and ``data:`` take any LightningModule / LightningDataModule by ``class_path``, or the
path of a YAML fragment holding one (relative to the config that names it). After ``fit``, the
trained weights are evaluated on the data module's test split, if it has one, and the metrics are
printed (skip it with ``--trainer.limit_test_batches=0``).
"""

from __future__ import annotations

import csv
import importlib
import inspect
import linecache
import logging
import os
import pickle
import re
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Collection
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, Timer
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher
from lightning.pytorch.trainer.states import RunningStage
from lightning.pytorch.utilities.model_helpers import is_overridden

# Imported so that configs may name their classes without the module (class_path: GatedLinearRNN).
import pararnn_ts.lm  # noqa: F401
import pararnn_ts.nn  # noqa: F401
import pararnn_ts.synthetic  # noqa: F401
from pararnn_ts.callbacks import LogNewtonStats, ResumeRandomState
from pararnn_ts.cells.factory import describe_cell, require_recorded_cell
from pararnn_ts.cli_parser import SuggestingArgumentParser
from pararnn_ts.extras import missing_extra
from pararnn_ts.run_callbacks import (
    INTERRUPTED_CHECKPOINT,
    CountStepBeforeStopValidation,
    EndProcessGroupAtExit,
    SaveLastAtEnd,
    SaveOnInterrupt,
)

#: the seed of a run unless the config or ``--seed_everything`` says otherwise
DEFAULT_SEED = 0
#: where a checkpoint records the fit's budget (:class:`RecordBudget`)
BUDGET_KEY = "pararnn_ts_budget"

#: set to 1, the ``pararnn-ts`` command shows the traceback of a refused run too (:func:`console`)
TRACEBACK_ENV = "PARARNN_TS_TRACEBACK"
#: the kinds of error that pararnn_ts raises about what a user gave it (arguments, files, data, optional packages)
USER_ERRORS = (ValueError, TypeError, OSError, ImportError, RuntimeError)
PACKAGE_DIR = Path(__file__).resolve().parent
#: what ``--ckpt_path`` may name besides a file (Lightning resolves them)
LIGHTNING_CKPT_NAMES = ("best", "last", "hpc", "registry")

#: ``--ckpt_path``'s help: [validate, test and predict's; fit's]
CKPT_PATH_HELP = (
    "The checkpoint to run (required): its path, or last: the newest last.ckpt (or interrupted.ckpt, if newer) "
    "in the checkpoint folders of the config's runs.",
    "A checkpoint to resume from: its path, or last: the newest last.ckpt (or interrupted.ckpt, if newer) in the "
    "checkpoint folders of the config's runs; null: a new fit.",
)

#: verbs beside Lightning's: name → (module whose ``main(argv)`` runs it, what it does); imported on use
VERBS = {
    "benchmark": (
        "pararnn_ts.forecast.benchmark",
        "forecasts of datasets × models × seeds, scored into CSV and Markdown",
    ),
    "world-eval": ("pararnn_ts.world.evaluate", "open-loop k-step errors of a world model against baselines"),
    "plan": ("pararnn_ts.world.mpc", "model-predictive control in a real Gymnasium env with a learned world model"),
    "generate": ("pararnn_ts.lm.generate", "text from a language-model checkpoint, one step() per token"),
}


#: (category, message, module) of warnings that libraries raise about their own code on every run: nothing a
#: user of pararnn-ts can act on (GluonTS's pandas period aliases such as 'Q', and its json fallback; pandas'
#: deprecation of business-day periods, which GluonTS and the forecasters need for freq="B"; torch's deprecation
#: of a pytree API that Lightning calls)
LIBRARY_NOISE = (
    (FutureWarning, r".*is deprecated and will be removed in a future version", r"gluonts\."),
    (UserWarning, r"Using `json`-module for json-handling", r"gluonts\.json"),
    (FutureWarning, r"(Period with BDay freq|PeriodDtype\[B\]) is deprecated", r"(gluonts|pararnn_ts)\."),
    (Warning, r"`isinstance\(treespec, LeafSpec\)` is deprecated", r"lightning\."),
)


def not_a_tip(record: logging.LogRecord) -> bool:
    """``False`` for Lightning's advertisement of another product (the litlogger tip it logs on every run)."""
    return not str(record.msg).startswith("💡 Tip:")


class RecordBudget(Callback):
    """Record the fit's ``max_steps`` and ``max_epochs`` in its checkpoints (under :data:`BUDGET_KEY`): the
    step-based learning-rate schedules (cosine) span them, so a resume with another budget is warned about
    (:func:`warn_if_budget_changed`)."""

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[BUDGET_KEY] = budget(trainer)


class ParaRNNCLI(LightningCLI):
    """LightningCLI that refuses to reuse a run's folder, evaluates the test split after ``fit``, and refuses to
    ``validate``, ``test`` or ``predict`` without a checkpoint (the config alone builds untrained weights).

    Before ``predict`` it calls the data module's ``check_predict_split()``, if it has one, so that a predict
    split the data cannot serve is refused before anything is written. A ``--ckpt_path`` of another model class
    than the config's is refused, and a run that fails before writing more than its ``config.yaml`` leaves no
    run folder behind.
    """

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> Any:
        """Lightning's subcommand parser, with ``--ckpt_path``'s help saying what pararnn-ts takes."""
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        for action in parser._actions:
            if action.dest == "ckpt_path":
                action.help = CKPT_PATH_HELP[subcommand == "fit"]
        return parser

    def _parse_ckpt_path(self) -> None:
        # Lightning replaces the config's model by the class and the arguments the checkpoint's hyperparameters
        # name: a checkpoint of another class is refused (it would fail later, with that class's complaints about
        # this config), and arguments of the config or command line that the checkpoint replaces are warned about
        subcommand = self.config.get("subcommand")
        model = self.config[subcommand].get("model") if subcommand else None
        if not hasattr(model, "get"):
            return super()._parse_ckpt_path()
        ckpt_path = self.config[subcommand].get("ckpt_path")
        if ckpt_path == "best":
            raise ValueError(
                "--ckpt_path best names the best checkpoint of a fit in the same process, which a pararnn-ts command "
                "never has: pass the checkpoint's path (runs/<name>/version_N/checkpoints/...ckpt), or last"
            )
        if ckpt_path == "last":
            ckpt_path = self.config[subcommand]["ckpt_path"] = str(latest_last_checkpoint(self.config[subcommand]))
            print(f"--ckpt_path last: {ckpt_path}", file=sys.stderr)
        refuse_missing_checkpoint(ckpt_path)
        refuse_other_model_class(ckpt_path, model.get("class_path"))
        configured = init_args(model)
        super()._parse_ckpt_path()
        restored = init_args(self.config[subcommand]["model"])
        replaced = replaced_arguments(model.get("class_path"), configured, restored)
        if replaced:
            warnings.warn(
                f"--ckpt_path {ckpt_path} restores the model's arguments it was trained with, so these of the config "
                "or command line are not used: " + differences(replaced),
                stacklevel=1,
            )

    def _run_subcommand(self, subcommand: str) -> None:
        # a run that fails before writing more than its config.yaml (bad env id, wrong checkpoint) leaves no
        # version_N folder behind: the next run then takes its number; without a logger (a shared folder), no
        # config.yaml that would refuse every later run there
        created = new_log_folder(self.trainer)
        config_file = self.save_config_kwargs.get("config_filename", "config.yaml")
        config = Path(self.trainer.log_dir or ".").absolute() / config_file
        lone_config = created is None and not config.exists()
        started = time.time()
        try:
            super()._run_subcommand(subcommand)
        except BaseException:
            if self.trainer.is_global_zero:
                drop_unused_folder(created, config_file)
                if lone_config:
                    drop_unused_config(config, started)
            raise

    def before_fit(self) -> None:
        if self.trainer.fast_dev_run:  # Lightning's ModelCheckpoint still writes last.ckpt (to the current folder)
            for callback in self.trainer.checkpoint_callbacks:
                callback.save_last = False
        ckpt_path = self.config[self.subcommand].get("ckpt_path")
        refuse_used_log_dir(self.trainer, ckpt_path)
        if can_test(self.model, self.datamodule) and self.trainer.limit_test_batches != 0:
            refuse_existing_results(self.trainer, self.model, "test")  # the test after training writes them
        drop_monitors_without_logger(self.trainer)
        warn_if_never_validated(self.trainer)
        checkpoint = read_checkpoint(ckpt_path)  # once, for the three checks of a resume
        refuse_spent_max_time(self.trainer, ckpt_path, checkpoint)
        skip = getattr(self.datamodule, "predict_arguments", ())  # what only predict reads: no change to a fit
        warn_if_data_changed(ckpt_path, checkpoint, self.config[self.subcommand].get("data"), skip=skip)
        warn_if_budget_changed(ckpt_path, checkpoint, self.trainer)
        if checkpoint is not None and self.trainer.is_global_zero:
            print(resume_notice(ckpt_path, checkpoint, self.trainer), file=sys.stderr)

    def before_evaluation(self) -> None:
        """What validate, test and predict check first: a checkpoint to score, and a log folder of their own."""
        ckpt_path = self.config[self.subcommand].get("ckpt_path")
        require_checkpoint(ckpt_path, self.subcommand)
        refuse_used_log_dir(self.trainer, ckpt_path)
        # restoring the checkpoint's ModelCheckpoint state warns that its folder is not this run's, which only
        # matters to a fit's top-k bookkeeping
        warnings.filterwarnings("ignore", "The dirpath has changed from", UserWarning, r"lightning\.")

    def warn_if_scored_on_other_data(self) -> None:
        """Warn if the arguments by which the data module picks its held-out data (its ``split_arguments``; a module
        without them is not checked) differ from the checkpoint's."""
        split_arguments = getattr(self.datamodule, "split_arguments", None)
        if split_arguments is None:
            return
        ckpt_path = self.config[self.subcommand].get("ckpt_path")
        data = self.config[self.subcommand].get("data")
        warn_if_data_changed(ckpt_path, read_checkpoint(ckpt_path), data, self.subcommand, split_arguments)

    def before_validate(self) -> None:
        self.before_evaluation()
        self.warn_if_scored_on_other_data()

    def before_test(self) -> None:
        self.before_evaluation()
        self.warn_if_scored_on_other_data()
        refuse_existing_results(self.trainer, self.model, "test")
        check = getattr(self.datamodule, "check_test_split", None)
        if callable(check):  # a data module whose test split is optional says how to make one
            check()
        if not can_test(self.model, self.datamodule):
            raise ValueError(
                f"pararnn-ts test: {type(self.model).__name__} with {type(self.datamodule).__name__} has no test split "
                "(no test_dataloader) or no test_step; score this model with pararnn-ts validate instead"
            )

    def before_predict(self) -> None:
        self.before_evaluation()
        refuse_existing_results(self.trainer, self.model, "predict")
        if not can_predict(self.model, self.datamodule):
            raise ValueError(
                f"pararnn-ts predict: {type(self.datamodule).__name__} serves nothing to predict (it has no "
                "predict_dataloader; the forecasting and language-model data modules do); score this model with "
                "pararnn-ts test instead"
            )
        check = getattr(self.datamodule, "check_predict_split", None)
        if callable(check):  # refuse now: once the trainer runs, its logger has made the run's folder
            check()

    def after_fit(self) -> None:
        trainer = self.trainer
        if can_test(self.model, self.datamodule) and trainer.limit_test_batches != 0 and not trainer.interrupted:
            continue_run_in_new_processes(trainer)
            trainer.test(self.model, datamodule=self.datamodule)


def continue_run_in_new_processes(trainer: Trainer) -> None:
    """Let the test after a ``ddp_spawn`` fit log to the fit's run folder. It runs in new processes, which start from
    this process's copies of the callbacks and loggers, left as they were by the fit's processes: its
    ``SaveConfigCallback`` would refuse the fit's ``config.yaml``, its ``CSVLogger`` delete the fit's metrics."""
    if not isinstance(trainer.strategy.launcher, _MultiProcessingLauncher):
        return
    for callback in trainer.callbacks:
        if isinstance(callback, SaveConfigCallback):
            callback.already_saved = True
    for logger in trainer.loggers:
        if isinstance(logger, CSVLogger) and logger._experiment is None:
            logger._experiment = ContinuedMetrics(logger.log_dir)


class ContinuedMetrics(ExperimentWriter):
    """``CSVLogger``'s writer, appending to the ``metrics.csv`` of an earlier stage of the run (the writer that the
    logger starts in a new process deletes it)."""

    def __init__(self, log_dir: str) -> None:
        super().__init__(log_dir)
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = next(csv.reader(file), [])

    def _check_log_dir_exists(self) -> None:
        """Keep the run's files."""


def new_log_folder(trainer: Trainer) -> Path | None:
    """The outermost folder of ``trainer.log_dir`` that does not exist yet (``runs/<name>/`` on a first run, else
    ``version_N/``), or ``None`` without a logger or when the log folder exists already."""
    if trainer.logger is None or not trainer.log_dir:
        return None
    folder = Path(trainer.log_dir).absolute()
    return next((path for path in [*reversed(folder.parents), folder] if not path.exists()), None)


def drop_unused_folder(folder: Path | None, config_file: str) -> None:
    """Delete ``folder`` if it holds no file but those Lightning writes at the start: the ``config_file``
    (``config.yaml``) and the logger's ``hparams.yaml``."""
    if folder is not None and folder.is_dir():
        if all(path.is_dir() or path.name in (config_file, "hparams.yaml") for path in folder.rglob("*")):
            shutil.rmtree(folder)


def drop_unused_config(config: Path, since: float) -> None:
    """Delete the ``config`` file a failed run wrote into a folder it shares, if the run wrote nothing else there
    (nothing in that folder or its ``checkpoints/`` modified ``since`` then, a ``time.time()``)."""
    if not config.is_file():
        return
    written = [
        p for folder in (config.parent, config.parent / "checkpoints") if folder.is_dir() for p in folder.iterdir()
    ]
    if all(p == config or p.is_dir() or p.stat().st_mtime < since for p in written):
        config.unlink()


def drop_monitors_without_logger(trainer: Trainer) -> None:
    """Drop the trainer's ``LearningRateMonitor`` callbacks, with a warning, when it has no logger (they log the
    learning rate, and without a logger Lightning stops the fit at its start)."""
    monitors = [c for c in trainer.callbacks if isinstance(c, LearningRateMonitor)]
    if monitors and not trainer.loggers:
        trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, LearningRateMonitor)]
        warnings.warn(
            "the config's LearningRateMonitor callback logs the learning rate, and this run has no logger "
            "(--trainer.logger false): it is not used",
            stacklevel=1,
        )


def warn_if_never_validated(trainer: Trainer) -> None:
    """Warn when ``max_steps`` ends the fit before the first validation that ``val_check_interval`` (in steps)
    asks for: no validation metric is logged and no checkpoint that monitors one is written."""
    interval, steps = trainer.val_check_interval, trainer.max_steps
    if isinstance(interval, int) and 0 < steps < interval and trainer.limit_val_batches != 0:
        warnings.warn(
            f"--trainer.max_steps={steps} ends the fit before the first validation at val_check_interval={interval} "
            f"steps: nothing is validated; pass --trainer.val_check_interval={steps} (or fewer) to validate",
            stacklevel=1,
        )


def refuse_used_log_dir(trainer: Trainer, ckpt_path: str | None = None) -> None:
    """Raise ``FileExistsError`` if the run would save its config where an earlier run saved one. Without a logger
    the fix names the run's ``ckpt_path`` too: in another folder, ``--ckpt_path last`` would look there.

    Lightning's ``SaveConfigCallback`` makes the same check, but only after the loggers have
    started, and by then ``CSVLogger`` has deleted the earlier run's ``metrics.csv``.
    """
    for callback in trainer.callbacks:
        if not (isinstance(callback, SaveConfigCallback) and callback.save_to_log_dir and not callback.overwrite):
            continue
        path = os.path.join(trainer.log_dir, callback.config_filename)
        if not get_filesystem(path).isfile(path):
            continue
        if trainer.logger is None:
            checkpoint = f" with --ckpt_path {ckpt_path}" if ckpt_path else ""
            fix = f"pass another --trainer.default_root_dir{checkpoint} (without a logger, runs share that folder)"
        else:
            fix = (
                "drop a fixed --trainer.logger.init_args.version (each run then gets a new version_N folder), or pass "
                "another --trainer.logger.init_args.save_dir; or delete that folder"
            )
        raise FileExistsError(f"{path} belongs to an earlier run; to keep its results, log this run elsewhere: {fix}")


def refuse_existing_results(trainer: Trainer, model: LightningModule, verb: str) -> None:
    """Raise ``FileExistsError`` if the run's folder holds a file that ``verb`` would write there (the model's
    ``RESULT_FILES[verb]``): without a logger runs share ``default_root_dir``, which may hold a user's own files."""
    folder = Path(trainer.log_dir or trainer.default_root_dir)
    existing = [
        str(folder / name) for name in getattr(model, "RESULT_FILES", {}).get(verb, ()) if (folder / name).exists()
    ]
    if existing:
        raise FileExistsError(
            f"pararnn-ts {verb} would replace {', '.join(existing)}; move {'it' if len(existing) == 1 else 'them'} "
            "away, or write this run elsewhere: keep a logger (each run gets a new version_N folder) or pass another "
            "--trainer.default_root_dir"
        )


def init_args(model: Any) -> dict[str, Any]:
    """The ``init_args`` of a parsed ``model:`` section, as a plain dict (empty without any)."""
    arguments = model.get("init_args")
    return arguments.as_dict() if hasattr(arguments, "as_dict") else dict(arguments or {})


def refuse_missing_checkpoint(ckpt_path: str | None) -> None:
    """Raise ``FileNotFoundError`` if ``ckpt_path`` names a local file that is not there (Lightning's names such
    as ``best`` and remote URLs are left to Lightning)."""
    if (
        ckpt_path is None
        or ckpt_path.split(":")[0] in LIGHTNING_CKPT_NAMES
        or "://" in ckpt_path
        or os.path.isfile(ckpt_path)
    ):
        return
    raise FileNotFoundError(
        f"--ckpt_path {ckpt_path}: no such file; pass a checkpoint that fit wrote, e.g. "
        "runs/<name>/version_N/checkpoints/last.ckpt, or --ckpt_path last for the newest run's"
    )


def refuse_other_model_class(ckpt_path: str | None, configured: str | None) -> None:
    """Raise ``ValueError`` if the checkpoint at ``ckpt_path`` was written by another model class than the
    config's ``configured`` class path (as recorded by the CLI that trained it), and ``ImportError`` if the cell it
    records cannot be imported here (:func:`~pararnn_ts.cells.factory.require_recorded_cell`)."""
    checkpoint = read_checkpoint(ckpt_path) if configured else None
    if checkpoint is None:
        return
    require_recorded_cell(checkpoint.get("hyper_parameters", {}), f"--ckpt_path {ckpt_path}")
    trained = checkpoint.get("hyper_parameters", {}).get("_class_path")
    if trained is not None and trained != configured:
        raise ValueError(
            f"--ckpt_path {ckpt_path} holds a {trained} checkpoint, but the config's model is {configured}: pass a "
            "checkpoint that this config's fit wrote, or the config of the checkpoint's model"
        )


def read_checkpoint(ckpt_path: str | None) -> dict[str, Any] | None:
    """The checkpoint at ``ckpt_path``, memory-mapped and without unpickling code, or ``None`` when there is no
    file there or it cannot be read that way (Lightning's own loading then says why)."""
    if not (ckpt_path and os.path.isfile(ckpt_path)):
        return None
    try:
        return torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, pickle.UnpicklingError):
        return None


def latest_last_checkpoint(config: Any) -> Path:
    """What ``--ckpt_path last`` resumes: in the checkpoint folder of the newest run of ``config`` (a subcommand's
    parsed config) that holds one (:func:`checkpoint_folders`), the newest of ``last.ckpt`` and ``interrupted.ckpt``
    (:class:`SaveOnInterrupt`), or of their ``-vN`` versions that runs sharing a ``dirpath`` write. Raises
    ``FileNotFoundError`` naming where it looked and what is there."""
    pattern, folders = checkpoint_folders(config["trainer"])
    names = re.compile(rf"(last|{re.escape(Path(INTERRUPTED_CHECKPOINT).stem)})(-v\d+)?\.ckpt")
    for folder in folders:
        saved = [p for p in folder.glob("*.ckpt") if names.fullmatch(p.name) and p.is_file()]
        if saved:
            return max(saved, key=lambda p: p.stat().st_mtime_ns)
    found = sorted(str(p) for folder in folders for p in folder.glob("*.ckpt"))
    there = (
        f"the checkpoints there: {', '.join(found)}; pass one as --ckpt_path (a ModelCheckpoint with save_last: true "
        "in the config writes last.ckpt)"
        if found
        else "no checkpoint there either (no earlier run of this config?); pass the checkpoint to resume as --ckpt_path"
    )
    raise FileNotFoundError(f"--ckpt_path last: no last.ckpt (or {INTERRUPTED_CHECKPOINT}) in {pattern}; {there}")


def checkpoint_folders(trainer: Any) -> tuple[str, list[Path]]:
    """Where the runs of a config whose ``trainer:`` section is ``trainer`` write checkpoints, newest run first, and
    how to say where: a ``ModelCheckpoint``'s ``dirpath``; else, without a logger, ``default_root_dir/checkpoints``;
    else the logger's ``save_dir/name/version_N/checkpoints``."""
    root = Path(trainer.get("default_root_dir") or ".")
    callbacks = trainer.get("callbacks") or []
    callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
    dirpath = next((d for d in (init_args(c).get("dirpath") for c in callbacks if hasattr(c, "get")) if d), None)
    logger = trainer.get("logger")
    logger = logger[0] if isinstance(logger, list) and logger else logger
    if dirpath or logger is False:
        folder = Path(dirpath) if dirpath else root / "checkpoints"
        return str(folder), [folder]
    arguments = init_args(logger) if hasattr(logger, "get") else {}
    name = arguments.get("name", "lightning_logs")
    logs = Path(arguments.get("save_dir") or root) / (name or "")
    runs = {p: p.name.removeprefix("version_") for p in logs.glob("version_*")}
    newest_first = sorted((p for p, n in runs.items() if n.isdigit()), key=lambda p: int(runs[p]), reverse=True)
    return str(logs / "version_N" / "checkpoints"), [run / "checkpoints" for run in newest_first]


def flat(arguments: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``arguments`` with nested mappings (a cell's ``class_path`` and ``init_args``) spelled out as dotted keys:
    ``{"cell": {"init_args": {"hidden_size": 32}}}`` → ``{"cell.init_args.hidden_size": 32}``."""
    items: dict[str, Any] = {}
    for key, value in arguments.items():
        value = plain(value)
        if isinstance(value, dict) and value:
            items.update(flat(value, f"{prefix}{key}."))
        else:
            items[f"{prefix}{key}"] = value
    return items


def differences(replaced: dict[str, tuple[Any, Any]]) -> str:
    """``key=value (checkpoint: value)`` for every ``key: (given, recorded)`` of ``replaced``; a
    ``{class_path, init_args}`` value (a user cell) as its class path and the arguments that differ from its
    class's defaults (:func:`~pararnn_ts.cells.factory.describe_cell`)."""

    def shown(value: Any) -> str:
        return describe_cell(value) if isinstance(value, dict) and "class_path" in value else repr(value)

    return ", ".join(
        f"{key}={shown(given)} (checkpoint: {shown(recorded)})" for key, (given, recorded) in replaced.items()
    )


def replaced_arguments(
    class_path: str | None, configured: dict[str, Any], recorded: dict[str, Any]
) -> dict[str, tuple[Any, Any]]:
    """The ``configured`` arguments of ``class_path`` (a section's ``init_args``) whose value differs from the
    checkpoint's ``recorded`` one, as ``(configured, recorded)`` by dotted key (:func:`flat`), but for those left to a
    ``None`` default. An argument recorded in another form (a cell's name where the checkpoint records a user cell's
    ``class_path`` and ``init_args``, or the reverse) is named whole."""
    unset = left_to_default_none(class_path, configured)
    replaced: dict[str, tuple[Any, Any]] = {}
    for name, value in configured.items():
        if name in unset or name not in recorded:
            continue
        given, kept = flat({name: value}), flat({name: recorded[name]})
        if given.keys().isdisjoint(kept):
            replaced[name] = (plain(value), plain(recorded[name]))
            continue
        replaced.update({key: (v, kept[key]) for key, v in given.items() if key in kept and kept[key] != v})
    return replaced


def plain(value: Any) -> Any:
    """``value`` with jsonargparse's namespaces as dicts (for messages)."""
    return value.as_dict() if hasattr(value, "as_dict") else value


def left_to_default_none(class_path: str | None, arguments: dict[str, Any]) -> set[str]:
    """The ``arguments`` that are ``None`` and whose parameter in ``class_path``'s ``__init__`` defaults to
    ``None``: left unset (e.g. sizes inferred from the data), not chosen, so a checkpoint's value is no news."""
    try:
        module, _, name = (class_path or "").rpartition(".")
        parameters = inspect.signature(getattr(importlib.import_module(module), name)).parameters
    except (ImportError, AttributeError, ValueError, TypeError):
        return set()
    return {
        key
        for key, value in arguments.items()
        if value is None and key in parameters and parameters[key].default is None
    }


def refuse_spent_max_time(trainer: Trainer, ckpt_path: str | None, checkpoint: dict[str, Any] | None) -> None:
    """Raise ``ValueError`` when the run the ``checkpoint`` read from ``ckpt_path`` continues has already trained for
    the ``max_time`` of this fit: Lightning's timer counts every session of a run, so the fit would stop at once,
    having trained nothing."""
    timer = next((callback for callback in trainer.callbacks if isinstance(callback, Timer)), None)
    if checkpoint is None or timer is None or timer._duration is None:
        return
    state = checkpoint.get("callbacks", {}).get(timer.state_key, {})
    elapsed = state.get("time_elapsed", {}).get(RunningStage.TRAINING.value, 0.0)
    if elapsed >= timer._duration:
        raise ValueError(
            f"--ckpt_path {ckpt_path} continues a run that has trained for {timedelta(seconds=int(elapsed))}, which "
            f"spends this fit's max_time ({timedelta(seconds=int(timer._duration))}; it counts every session of a "
            "run): pass a larger --trainer.max_time (DD:HH:MM:SS), or --trainer.max_time=null, to train on"
        )


def warn_if_data_changed(
    ckpt_path: str | None,
    checkpoint: dict[str, Any] | None,
    data: Any,
    verb: str = "fit",
    only: Collection[str] | None = None,
    skip: Collection[str] = (),
) -> None:
    """Warn about the arguments of the ``data:`` section (those named in ``only``, if given; not those in ``skip``)
    that differ from those the data module of the ``checkpoint`` read from ``ckpt_path`` recorded (sizes, seeds,
    files): a resumed fit goes on with the config's, not the data it started on; a ``validate`` or ``test`` scores
    the model on held-out data picked otherwise, which may then hold data it trained on. Data modules that record
    none are not checked."""
    recorded = (checkpoint or {}).get("datamodule_hyper_parameters")
    if not (recorded and hasattr(data, "get")):
        return
    recorded = {key: value for key, value in recorded.items() if not key.startswith("_")}
    changed = replaced_arguments(data.get("class_path"), init_args(data), recorded)
    if only is not None:
        changed = {key: value for key, value in changed.items() if key.split(".")[0] in only}
    changed = {key: value for key, value in changed.items() if key.split(".")[0] not in skip}
    if not changed:
        return
    if verb == "fit":
        what = "continues a run whose data had other arguments; this fit goes on with the config's"
    else:
        what = (
            f"was trained on data picked and split with other arguments; this {verb} scores it on the config's "
            "held-out data, which may then hold data it trained on (pass the fit's data arguments to score it on its "
            "own)"
        )
    warnings.warn(f"--ckpt_path {ckpt_path} {what}: {differences(changed)}", stacklevel=1)


def budget(trainer: Trainer) -> dict[str, int | None]:
    """The fit's ``max_steps`` and ``max_epochs`` (``None`` without one: Lightning says -1 once fitting, or
    ``None`` before)."""
    max_epochs = trainer.max_epochs
    return {"max_steps": trainer.max_steps, "max_epochs": None if max_epochs in (None, -1) else max_epochs}


def warn_if_budget_changed(ckpt_path: str | None, checkpoint: dict[str, Any] | None, trainer: Trainer) -> None:
    """Warn, when resuming a fit from the ``checkpoint`` read from ``ckpt_path``, if its ``max_steps`` or
    ``max_epochs`` differ from the run's (as :class:`RecordBudget` recorded them): learning-rate schedules were set
    up for the run's budget, so a cosine schedule then cycles back up and a warmup-cosine one is stretched mid-run."""
    recorded = (checkpoint or {}).get(BUDGET_KEY)
    if not recorded:
        return
    now = budget(trainer).items()
    changed = {key: (value, recorded[key]) for key, value in now if key in recorded and recorded[key] != value}
    if changed:
        warnings.warn(
            f"--ckpt_path {ckpt_path} continues a run trained for another budget: {differences(changed)}; "
            "a learning-rate schedule set over the run's steps (cosine, warmup then cosine; not a plateau schedule) "
            "then ends elsewhere than planned; to finish the run as planned, resume with its budget",
            stacklevel=1,
        )


def resume_notice(ckpt_path: str, checkpoint: dict[str, Any], trainer: Trainer) -> str:
    """The line a resumed fit prints: where it continues from, and where this session logs (a new folder: the
    earlier sessions' metrics stay in theirs)."""
    where = f"; this session logs to {trainer.log_dir}" if trainer.logger is not None and trainer.log_dir else ""
    step, epoch = checkpoint.get("global_step", "?"), checkpoint.get("epoch", "?")
    return f"--ckpt_path {ckpt_path}: resuming at step {step} (epoch {epoch}){where}"


def require_checkpoint(ckpt_path: str | None, verb: str) -> None:
    """Raise ``ValueError`` if ``verb`` would run the untrained weights a config builds (no ``ckpt_path``)."""
    if ckpt_path is None:
        raise ValueError(
            f"pararnn-ts {verb} runs a trained model: pass a checkpoint that fit wrote, e.g. "
            "--ckpt_path runs/<name>/version_N/checkpoints/last.ckpt (or the epoch=…ckpt file there)"
        )


def can_predict(model: LightningModule, datamodule: LightningDataModule | None) -> bool:
    """Whether ``model`` or ``datamodule`` serves a predict split."""
    return is_overridden("predict_dataloader", model, LightningModule) or (
        datamodule is not None and is_overridden("predict_dataloader", datamodule, LightningDataModule)
    )


def can_test(model: LightningModule, datamodule: LightningDataModule | None) -> bool:
    """Whether ``model`` or ``datamodule`` has a test split and ``model`` a ``test_step``."""
    has_split = is_overridden("test_dataloader", model, LightningModule) or (
        datamodule is not None and is_overridden("test_dataloader", datamodule, LightningDataModule)
    )
    return has_split and is_overridden("test_step", model, LightningModule)


#: the usage line of each Lightning verb (``%(prog)s`` is e.g. ``pararnn-ts fit``); ``--help`` lists the options
VERB_USAGE = "%(prog)s [-h] [-c CONFIG] [--print_config[=flags]] [--KEY VALUE ...]"


def lightning_cli(args: list[str] | None = None, run: bool = True) -> ParaRNNCLI:
    """Parse ``args`` (default ``sys.argv[1:]``), build model, data and trainer, and run the verb.

    With ``run=False`` there is no verb: ``args`` is a config (``-c``, overrides) and the CLI only
    instantiates the classes, e.g. to check a config.
    """
    return ParaRNNCLI(
        parser_class=SuggestingArgumentParser,
        subclass_mode_model=True,
        subclass_mode_data=True,
        parser_kwargs={
            "parser_mode": "omegaconf",
            "description": "Train and evaluate ParaRNN models. Other verbs: "
            + "; ".join(f"{verb} ({purpose})" for verb, (_, purpose) in VERBS.items()),
            "allow_abbrev": False,  # a typo such as --trainer.max_step must not pass for max_steps
            # the verbs' own parsers too: jsonargparse before 4.53 let them take abbreviations
            # and a one-line usage: argparse's would list every option before the error that names the bad one
            **{verb: {"allow_abbrev": False, "usage": VERB_USAGE} for verb in LightningCLI.subcommands()},
        },
        seed_everything_default=DEFAULT_SEED,
        # SaveLastAtEnd before SaveOnInterrupt: a Ctrl-C held until the fit ends stops it in on_train_end
        trainer_defaults={
            "callbacks": [
                SaveLastAtEnd(),
                SaveOnInterrupt(),
                CountStepBeforeStopValidation(),
                RecordBudget(),
                LogNewtonStats(),
                EndProcessGroupAtExit(),
                ResumeRandomState(),
            ]
        },
        # every model configures its own optimizer and schedule; the CLI's --optimizer would replace them
        # silently or fail on the parameters the models build in configure_model
        auto_configure_optimizers=False,
        # Each run logs to a fresh version_N folder, so reruns never meet an old config.yaml; a
        # log folder that already holds one (fixed version, or no logger) stops the run instead.
        save_config_kwargs={"overwrite": False},
        args=args,
        run=run,
    )


def main(args: list[str] | None = None) -> None:
    """Entry point of ``pararnn-ts``; ``args`` defaults to ``sys.argv[1:]``."""
    argv = sys.argv[1:] if args is None else args
    if not sys.warnoptions:  # python -W or PYTHONWARNINGS shows them again
        for category, message, module in LIBRARY_NOISE:
            warnings.filterwarnings("ignore", message, category, module)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(not_a_tip)
    if argv and argv[0] in VERBS:
        import_verb(argv[0]).main(argv[1:])
    else:
        lightning_cli(args)


def import_verb(verb: str) -> Any:
    """The module of ``verb`` (:data:`VERBS`). A third-party module it needs that is missing is refused naming the
    extra that installs it (the verb's subpackage: ``pararnn_ts.world.mpc`` needs ``pararnn-ts[world]``)."""
    module = VERBS[verb][0]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as missing:
        if (missing.name or "pararnn_ts").partition(".")[0] == "pararnn_ts":  # our own module: a bug
            raise
        extra = module.split(".")[1]
        raise missing_extra(f"pararnn-ts {verb}", extra) from missing


def console(args: list[str] | None = None) -> None:
    """The ``pararnn-ts`` command: :func:`main` through :func:`exit_on_refusal`."""
    exit_on_refusal(lambda: main(args))


def exit_on_refusal(run: Callable[[], Any]) -> None:
    """Call ``run()``; an error that pararnn_ts raised about what it was given (:func:`refusal_in`) is printed as
    one ``error:`` line and exits with status 2, without a traceback (set ``PARARNN_TS_TRACEBACK=1`` to see it).
    Any other error keeps its traceback. For commands and scripts (``datasets/*/prepare.py``)."""
    try:
        run()
    except USER_ERRORS as raised:
        error = refusal_in(raised)
        if os.environ.get(TRACEBACK_ENV, "") not in ("", "0") or error is None:
            raise
        cause = error.__cause__
        because = f"\n  (from {type(cause).__name__}: {cause})" if cause is not None else ""
        print(f"error: {error}{because}\n({TRACEBACK_ENV}=1 shows where it was raised)", file=sys.stderr)
        raise SystemExit(2) from None


def refusal_in(error: BaseException) -> BaseException | None:
    """The refusal (:func:`refusal`) that ``error`` is, or, for an error that jsonargparse raised while it built the
    model or data classes, the refusal of their ``__init__`` that it re-raised as its own; else ``None``."""
    if refusal(error):
        return error
    if _raised_in(error) != "jsonargparse":
        return None
    link = error.__cause__ or error.__context__
    while link is not None and not refusal(link):
        link = link.__cause__ or link.__context__
    return link


def _raised_in(error: BaseException) -> str:
    """The top-level package of the module whose line raised ``error`` (``""`` if unknown)."""
    frame = _raising_frame(error)
    return "" if frame is None else str(frame.tb_frame.f_globals.get("__name__", "")).partition(".")[0]


def _raising_frame(error: BaseException) -> TracebackType | None:
    """The innermost traceback entry of ``error``: the line that raised it."""
    frame = error.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    return frame


def refusal(error: BaseException) -> bool:
    """Whether ``error`` was raised, with a message, by a ``raise`` statement of pararnn_ts: a refusal written for
    the user (a bad argument, file or datum, with its fix), not a bug, which keeps its traceback."""
    frame = _raising_frame(error)
    if isinstance(error, NotImplementedError) or not str(error) or frame is None:
        return False
    path = Path(frame.tb_frame.f_code.co_filename).resolve()
    line = linecache.getline(str(path), frame.tb_lineno).lstrip()
    return path.is_relative_to(PACKAGE_DIR) and line.startswith("raise ")


if __name__ == "__main__":
    console()
