"""Run by tests/test_lm_module.py: ``python lm_ddp_fit.py DEVICES OUT``.

Fits a tiny :class:`CausalLM` for ``STEPS`` steps on fixed global batches of ``GLOBAL_BATCH`` windows,
on ``DEVICES`` CPU processes (``strategy="ddp"``, gloo; each process gets its rows of every global
batch), and saves the global mean loss of every step and the final weights to ``OUT``.
"""

from __future__ import annotations

import sys

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from pararnn_ts.lm import CausalLM

GLOBAL_BATCH, SEQ_LEN, STEPS, VOCAB = 4, 16, 3, 257


class FixedBatches(pl.LightningDataModule):
    """``STEPS`` random global batches; process ``r`` of ``w`` gets rows ``r, r + w, ...`` of each."""

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(0)
        windows = torch.randint(0, VOCAB, (STEPS, GLOBAL_BATCH, SEQ_LEN + 1), generator=generator)
        mine = windows[:, self.trainer.global_rank :: self.trainer.world_size]
        return DataLoader([{"inputs": w[:, :-1], "targets": w[:, 1:]} for w in mine], batch_size=None)


class GlobalLoss(pl.Callback):
    """The training objective of every step, averaged over the processes."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(trainer.strategy.reduce(outputs["loss"].detach(), reduce_op="mean").item())


def main(devices: int, out: str) -> None:
    pl.seed_everything(0)
    model = CausalLM(VOCAB, dim=32, num_layers=2, num_heads=2, mixer_kwargs={"mode": "sequential"}, lr=1e-2)
    record = GlobalLoss()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        max_steps=STEPS,
        use_distributed_sampler=False,
        limit_val_batches=0,
        callbacks=[record],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=FixedBatches())
    if trainer.global_rank == 0:
        torch.save({"losses": record.losses, "state_dict": model.state_dict()}, out)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
