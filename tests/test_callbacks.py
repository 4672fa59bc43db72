"""LogNewtonStats: what Newton did in each training step, over all the ParaCell layers a model solved."""

from __future__ import annotations

import csv
import random
from types import SimpleNamespace
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from pararnn_ts import ParaGRU
from pararnn_ts.callbacks import LogNewtonStats, ResumeRandomState
from pararnn_ts.cli import lightning_cli
from pararnn_ts.loaders import EpochShuffleSampler, ResumableDataLoader
from pararnn_ts.run_callbacks import SaveLastAtEnd

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


class NoisySteps(pl.LightningModule):
    """Each step draws from torch's, NumPy's and Python's global random streams (as dropout or a sampled context
    do), so the weights after a resumed fit show whether those streams went on where they stopped."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(3))

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        noise = torch.randn(3) + float(np.random.rand()) + random.random()
        return (self.weight - noise).square().sum() + 0 * batch[0].sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit_noisy(folder, max_steps: int, callbacks: list, ckpt_path=None) -> torch.Tensor:
    """Fit :class:`NoisySteps` on a resumable loader of 3 batches an epoch, a checkpoint every 2 steps (mid-epoch
    and at epochs' ends)."""
    pl.seed_everything(0, verbose=False)
    module = NoisySteps()
    saving = ModelCheckpoint(folder, "{step}", every_n_train_steps=2, save_top_k=-1)
    trainer = pl.Trainer(
        max_steps=max_steps,
        callbacks=[saving, *callbacks],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    loader = ResumableDataLoader(TensorDataset(torch.zeros(3, 1)), sampler=EpochShuffleSampler(3))
    trainer.fit(module, loader, ckpt_path=ckpt_path)
    return module.weight.detach().clone()


@pytest.mark.parametrize("restored", [True, False])
def test_a_resumed_fit_draws_the_random_numbers_of_an_uninterrupted_one(tmp_path, restored):
    callbacks = [ResumeRandomState()] if restored else []
    straight = fit_noisy(tmp_path / "straight", 8, callbacks)
    for step in (2, 6):  # mid-epoch, and at the end of the second epoch
        resumed = fit_noisy(tmp_path / f"from{step}", 8, callbacks, tmp_path / "straight" / f"step={step}.ckpt")
        assert torch.equal(resumed, straight) is restored
    torch.load(tmp_path / "straight" / "step=2.ckpt", weights_only=True)  # plain tensors, lists and numbers


def test_a_checkpoint_taken_inside_a_step_keeps_the_state_of_the_steps_start():
    saving = ResumeRandomState()
    saving.on_train_batch_start(None, None, None, 0)
    started = [torch.rand(2), np.random.rand(), random.random()]
    torch.rand(5), np.random.rand(), random.random()  # the step's draws before Ctrl-C
    resuming = ResumeRandomState()
    resuming.load_state_dict(saving.state_dict())
    resuming.on_train_start(None, None)
    assert torch.equal(torch.rand(2), started[0]) and np.random.rand() == started[1] and random.random() == started[2]
    saving.on_train_batch_end(accumulating(False), None, None, None, 0)
    assert torch.equal(saving.state_dict()["torch"], torch.get_rng_state())  # between steps: the state as it is


def test_a_step_rewound_to_its_accumulation_window_keeps_the_state_of_the_windows_start():
    saving = ResumeRandomState()
    saving.on_train_batch_start(None, None, None, 0)
    window_start = torch.get_rng_state()
    torch.rand(5)
    saving.on_train_batch_end(accumulating(True), None, None, None, 0)  # its gradient waits for the next batch
    saving.on_train_batch_start(None, None, None, 1)
    torch.rand(5)
    saving.rewind_to_window()
    assert torch.equal(saving.state_dict()["torch"], window_start)
    saving.on_train_batch_end(accumulating(False), None, None, None, 1)  # the window's step
    saving.on_train_batch_start(None, None, None, 2)
    assert torch.equal(saving.window_start["torch"], torch.get_rng_state())  # the next window starts here


def test_the_cuda_state_saved_and_restored_is_that_of_the_device_the_fit_trains_on(monkeypatch):
    """Under DDP rank 0 writes the checkpoint and every rank resumes from it: rank 0 saves its own device's CUDA state
    and each rank restores it on its own device (a pretend CUDA generator per device here). Before, rank 0 saved every
    device's state and rank k restored device k's, which rank 0 never drew from."""
    generators = {index: torch.tensor([index], dtype=torch.uint8) for index in range(3)}
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: generators[torch.device(device).index].clone())
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: generators.update({device.index: state}))
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: pytest.fail("every device's state was read"))
    rank0 = ResumeRandomState()
    rank0.setup(SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cuda", 0))), None, "fit")
    generators[0] = torch.tensor([7], dtype=torch.uint8)  # rank 0 drew from its device
    saved = rank0.state_dict()
    rank2 = ResumeRandomState()
    rank2.setup(SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cuda", 2))), None, "fit")
    rank2.load_state_dict(saved)
    rank2.on_train_start(None, None)
    assert generators[2].tolist() == [7] and generators[1].tolist() == [1]


def accumulating(waits: bool) -> Any:
    """A stand-in ``Trainer`` whose batch ``waits`` for the next one's gradient before the optimizer steps."""
    return SimpleNamespace(fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(_should_accumulate=lambda: waits)))


class ThreeItems(torch.utils.data.IterableDataset):
    """An iterable of unknown length: Lightning learns where its epoch ends when it runs out."""

    def __iter__(self):
        return iter([torch.zeros(1)] * 3)


def test_an_iterable_epoch_that_ran_out_is_saved_as_finished(tmp_path):
    """SaveLastAtEnd saves a fit cut short within an epoch as the epoch under way; an iterable's epoch that ended
    because its data ran out is not cut short, though its length is unknown (infinite to Lightning)."""
    pl.seed_everything(0, verbose=False)
    trainer = pl.Trainer(
        max_epochs=1,
        callbacks=[ModelCheckpoint(tmp_path, save_last=True), SaveLastAtEnd()],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(NoisySteps(), DataLoader(ThreeItems(), batch_size=None))
    epochs = torch.load(tmp_path / "last.ckpt", weights_only=False)["loops"]["fit_loop"]["epoch_progress"]
    assert trainer.global_step == 3 and epochs["current"]["processed"] == 1
