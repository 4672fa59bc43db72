"""Lightning callbacks for any model built on :class:`~pararnn_ts.core.cell.ParaCell` layers."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from .core import ParaCell, SolverStats


class LogNewtonStats(Callback):
    """Log what Newton's method did in every training step, over all the model's ParaCell layers that it solved.

    Logged per step, when at least one layer ran Newton (``parallel`` mode, or the fused Newton kernels on GPU;
    the sequential loop and the fused CPU kernels solve exactly and log nothing):

    - ``newton_iters``: the most Newton updates any layer needed (of its ``max_iters``);
    - ``newton_residual``: the largest final residual (relative, see :class:`~pararnn_ts.core.SolverStats`);
    - ``newton_fell_back``: 1.0 when any layer did not converge and its trajectory was recomputed exactly
      (``fallback="sequential"``): that step paid for the Newton iterations and the loop.

    The ``pararnn-ts`` CLI adds it to every fit; add it to ``Trainer(callbacks=[...])`` in Python. Layers the
    step did not run log nothing (their stats are cleared before each step).
    """

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        for cell in cells(pl_module):
            cell.last_stats = None

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        solved = newton_stats(pl_module)
        if solved:
            pl_module.log("newton_iters", float(max(s.iterations for s in solved)), batch_size=1)
            pl_module.log("newton_residual", max(s.residual for s in solved), batch_size=1)
            pl_module.log("newton_fell_back", float(any(s.fell_back for s in solved)), batch_size=1)


def cells(module: LightningModule) -> list[ParaCell]:
    """The :class:`ParaCell` layers of ``module``."""
    return [layer for layer in module.modules() if isinstance(layer, ParaCell)]


def newton_stats(module: LightningModule) -> list[SolverStats]:
    """The last solve's stats of every layer of ``module`` that Newton solved."""
    return [
        cell.last_stats
        for cell in cells(module)
        if cell.last_stats is not None and cell.last_stats.algorithm == "newton"
    ]


class ResumeRandomState(Callback):
    """Save the global random state (torch, CUDA, NumPy, Python) in checkpoints and restore it when a fit resumes,
    so that dropout, sampled contexts and anything else drawn from it continue as in the uninterrupted fit.

    A checkpoint taken inside a training step (Ctrl-C) keeps the state from the step's start, which the resumed
    fit runs again (from the start of its accumulation window, where the fit is rewound to it:
    :meth:`rewind_to_window`). The state is restored at the start of training, after the sanity-check validation.
    Checkpoints stay loadable with ``torch.load(..., weights_only=True)``. CUDA's state is that of the device the fit
    trains on. Under DDP every rank resumes with rank 0's state (its CUDA state on the rank's own device). The
    ``pararnn-ts`` CLI adds it to every fit.
    """

    def __init__(self) -> None:
        self.step_start: dict[str, Any] | None = None  # the state at the start of the training step under way
        # the state at the start of the first batch of the optimizer step under way (accumulate_grad_batches > 1)
        self.window_start: dict[str, Any] | None = None
        self.resumed: dict[str, Any] | None = None
        self.device: torch.device | None = None  # the device the fit trains on (CUDA: whose generator is saved)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.device = trainer.strategy.root_device

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self.step_start = random_state(self.device)
        if self.window_start is None:
            self.window_start = self.step_start

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.step_start = None
        if not trainer.fit_loop.epoch_loop._should_accumulate():  # the batch stepped the optimizer
            self.window_start = None

    def rewind_to_window(self) -> None:
        """Save the state from the start of the accumulation window under way: a Ctrl-C within it rewinds the fit
        to the window's start (the gradients accumulated so far are not saved)."""
        self.step_start = self.window_start

    def state_dict(self) -> dict[str, Any]:
        return self.step_start if self.step_start is not None else random_state(self.device)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.resumed = state_dict

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.resumed is not None:
            set_random_state(self.resumed, self.device)
            self.resumed = None


def random_state(device: torch.device | None = None) -> dict[str, Any]:
    """The global random state of torch (and of ``device``'s generator if it is a CUDA device), NumPy and Python, as
    tensors, lists and numbers."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    version, python, python_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": [torch.cuda.get_rng_state(device)] if device is not None and device.type == "cuda" else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss],
        "python": [version, list(python), python_gauss],
    }


def set_random_state(state: dict[str, Any], device: torch.device | None = None) -> None:
    """Restore a :func:`random_state`, its CUDA state on ``device`` if that is a CUDA device (a checkpoint written
    by an older version holds every device's state: restored where there are as many devices)."""
    torch.set_rng_state(state["torch"])
    cuda = state["cuda"]
    if len(cuda) == 1 and device is not None and device.type == "cuda":
        torch.cuda.set_rng_state(cuda[0], device)
    elif len(cuda) > 1 and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    kind, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    version, python, python_gauss = state["python"]
    random.setstate((version, tuple(python), python_gauss))
