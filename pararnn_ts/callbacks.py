"""Lightning callbacks for any model built on :class:`~pararnn_ts.core.cell.ParaCell` layers."""

from __future__ import annotations

from typing import Any

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
