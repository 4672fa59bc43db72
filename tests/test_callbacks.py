"""LogNewtonStats: what Newton did in each training step, over all the ParaCell layers a model solved."""

from __future__ import annotations

import csv

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from pararnn_ts import ParaGRU
from pararnn_ts.callbacks import LogNewtonStats
from pararnn_ts.cli import lightning_cli

STEPS = 3
#: (B, T, F): Newton needs up to T updates, so max_iters=1 never converges here and 12 always does
SHAPE = (2, 8, 4)


class TwoLayers(pl.LightningModule):
    """Two stacked ParaGRU layers and a third one (``unused``) that training never runs."""

    def __init__(self, first: ParaGRU, second: ParaGRU) -> None:
        super().__init__()
        self.first, self.second = first, second
        self.unused = ParaGRU(SHAPE[2], 6, max_norm=None, mode="parallel", max_iters=1, chunk_size=None)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        y, _ = self.second(self.first(batch[0])[0])
        loss = y.square().mean()
        self.log("loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def layer(mode: str, max_iters: int = 12) -> ParaGRU:
    return ParaGRU(SHAPE[2], SHAPE[2], max_norm=None, mode=mode, max_iters=max_iters, chunk_size=None)


def fit(model: pl.LightningModule, tmp_path) -> dict[str, list[float]]:
    """``STEPS`` training steps with :class:`LogNewtonStats`, logged every step; the logged values by name."""
    torch.manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(STEPS * SHAPE[0], *SHAPE[1:])), batch_size=SHAPE[0])
    trainer = pl.Trainer(
        max_steps=STEPS,
        log_every_n_steps=1,
        logger=CSVLogger(tmp_path),
        callbacks=[LogNewtonStats()],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    with torch.no_grad():  # leaves `unused` with the stats of a solve that fell back
        model.unused(torch.randn(*SHAPE))
    trainer.fit(model, data)
    with open(f"{trainer.logger.log_dir}/metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return {key: [float(row[key]) for row in rows if row.get(key)] for key in rows[0]}


@pytest.mark.parametrize(
    "first, second, fell_back",
    [(layer("parallel", 12), layer("parallel", 1), 1.0), (layer("parallel", 12), layer("sequential"), 0.0)],
)
def test_the_worst_layer_that_newton_solved_is_logged_each_step(first, second, fell_back, tmp_path):
    logged = fit(TwoLayers(first, second), tmp_path)
    assert logged["newton_fell_back"] == [fell_back] * STEPS  # not the fallback of the layer left unused
    solved = [cell for cell in (first, second) if cell.mode == "parallel"]
    assert logged["newton_iters"][-1] == max(cell.last_stats.iterations for cell in solved)
    assert logged["newton_residual"][-1] == pytest.approx(max(cell.last_stats.residual for cell in solved))


def test_layers_solved_exactly_log_nothing(tmp_path):
    logged = fit(TwoLayers(layer("sequential"), layer("sequential")), tmp_path)
    assert len(logged["loss"]) == STEPS and not {"newton_iters", "newton_residual", "newton_fell_back"} & set(logged)


def test_every_fit_through_the_cli_logs_newton_statistics():
    cli = lightning_cli(["-c", "experiments/synthetic/parity_paragru.yaml"], run=False)
    assert any(isinstance(callback, LogNewtonStats) for callback in cli.trainer.callbacks)
