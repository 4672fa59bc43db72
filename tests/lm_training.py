"""Shared by the LM tests: a short CPU training run that records what every step saw and did."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl

from pararnn_ts.lm import CausalLM, TextDataModule


class Record(pl.Callback):
    """Per training step: the objective, the learning rate, and the first window of the batch."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.lrs: list[float] = []
        self.windows: list[list[int]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])
        self.windows.append(batch["inputs"][0].tolist())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(outputs["loss"].item())


def fit(
    model: CausalLM, data: TextDataModule, max_steps: int, callbacks=(), ckpt_path: Path | None = None, **trainer_kwargs
) -> Record:
    """Train ``model`` on ``data`` for ``max_steps`` (seed 0, deterministic, no logger) and return the record."""
    pl.seed_everything(0)
    record = Record()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        callbacks=[record, *callbacks],
        logger=False,
        enable_checkpointing=bool(callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
        **trainer_kwargs,
    )
    trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)
    return record
