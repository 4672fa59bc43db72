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

import importlib
import os
import sys

from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities.model_helpers import is_overridden

# Imported so that configs may name their classes without the module (class_path: GatedLinearRNN).
import pararnn_ts.lm  # noqa: F401
import pararnn_ts.nn  # noqa: F401
import pararnn_ts.synthetic  # noqa: F401

#: the seed of a run unless the config or ``--seed_everything`` says otherwise
DEFAULT_SEED = 0

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


class ParaRNNCLI(LightningCLI):
    """LightningCLI that refuses to reuse a run's folder, evaluates the test split after ``fit``, and refuses to
    ``test`` or ``predict`` without a checkpoint (the config alone builds untrained weights).

    Before ``predict`` it calls the data module's ``check_predict_split()``, if it has one, so that a predict
    split the data cannot serve is refused before anything is written.
    """

    def before_fit(self) -> None:
        refuse_used_log_dir(self.trainer)

    def before_test(self) -> None:
        require_checkpoint(self.config[self.subcommand].get("ckpt_path"), self.subcommand)

    def before_predict(self) -> None:
        require_checkpoint(self.config[self.subcommand].get("ckpt_path"), self.subcommand)
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
        if can_test(self.model, self.datamodule) and not self.trainer.interrupted:
            self.trainer.test(self.model, datamodule=self.datamodule)


def refuse_used_log_dir(trainer: Trainer) -> None:
    """Raise ``FileExistsError`` if the run would save its config where an earlier run saved one.

    Lightning's ``SaveConfigCallback`` makes the same check, but only after the loggers have
    started, and by then ``CSVLogger`` has deleted the earlier run's ``metrics.csv``.
    """
    for callback in trainer.callbacks:
        if not (isinstance(callback, SaveConfigCallback) and callback.save_to_log_dir and not callback.overwrite):
            continue
        path = os.path.join(trainer.log_dir, callback.config_filename)
        if get_filesystem(path).isfile(path):
            raise FileExistsError(
                f"{path} belongs to an earlier run; to keep its results, log this run elsewhere: drop a fixed "
                "--trainer.logger.init_args.version (each run then gets a new version_N folder), or pass "
                "another --trainer.default_root_dir; or delete that folder"
            )


def require_checkpoint(ckpt_path: str | None, verb: str) -> None:
    """Raise ``ValueError`` if ``verb`` would run the untrained weights a config builds (no ``ckpt_path``)."""
    if ckpt_path is None:
        raise ValueError(
            f"pararnn-ts {verb} runs a trained model: pass its checkpoint, e.g. "
            "--ckpt_path runs/<name>/version_N/checkpoints/last.ckpt (fit writes it)"
        )


def can_predict(model: LightningModule, datamodule: LightningDataModule | None) -> bool:
    """Whether ``model`` or ``datamodule`` serves a predict split."""
    return is_overridden("predict_dataloader", model, LightningModule) or (
        datamodule is not None and is_overridden("predict_dataloader", datamodule, LightningDataModule)
    )


def can_test(model: LightningModule, datamodule: LightningDataModule | None) -> bool:
    """Whether ``datamodule`` has a test split and ``model`` a ``test_step``."""
    return (
        datamodule is not None
        and is_overridden("test_dataloader", datamodule, LightningDataModule)
        and is_overridden("test_step", model, LightningModule)
    )


def lightning_cli(args: list[str] | None = None, run: bool = True) -> ParaRNNCLI:
    """Parse ``args`` (default ``sys.argv[1:]``), build model, data and trainer, and run the verb.

    With ``run=False`` there is no verb: ``args`` is a config (``-c``, overrides) and the CLI only
    instantiates the classes, e.g. to check a config.
    """
    return ParaRNNCLI(
        subclass_mode_model=True,
        subclass_mode_data=True,
        parser_kwargs={
            "parser_mode": "omegaconf",
            "description": "Train and evaluate ParaRNN models. Other verbs: "
            + "; ".join(f"{verb} ({purpose})" for verb, (_, purpose) in VERBS.items()),
            "allow_abbrev": False,  # a typo such as --trainer.max_step must not pass for max_steps
        },
        seed_everything_default=DEFAULT_SEED,
        # Each run logs to a fresh version_N folder, so reruns never meet an old config.yaml; a
        # log folder that already holds one (fixed version, or no logger) stops the run instead.
        save_config_kwargs={"overwrite": False},
        args=args,
        run=run,
    )


def main(args: list[str] | None = None) -> None:
    """Entry point of ``pararnn-ts``; ``args`` defaults to ``sys.argv[1:]``."""
    argv = sys.argv[1:] if args is None else args
    if argv and argv[0] in VERBS:
        importlib.import_module(VERBS[argv[0]][0]).main(argv[1:])
    else:
        lightning_cli(args)


if __name__ == "__main__":
    main()
