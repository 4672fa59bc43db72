"""Lightning modules that train a :class:`~pararnn_ts.forecast.module.ParaRNNForecastModel` on GluonTS batches.

``ParaRNNLightningModule`` is the GluonTS-style one (``@validated()``, built from ``model_kwargs``) that
:class:`~pararnn_ts.forecast.estimator.ParaRNNEstimator` trains and its predictor serializes. Both it
and the Lightning CLI's :class:`~pararnn_ts.forecast.cli_module.ParaRNNForecaster` share
:class:`ForecastTrainingModule`: the losses, their logging and the optimizer.
"""

# No ``from __future__ import annotations``: GluonTS's ``@validated()`` reads the annotations at runtime.

import copy
import math
from typing import Any

import lightning.pytorch as pl
import torch
from gluonts.core.component import validated
from gluonts.itertools import select
from gluonts.torch.model.lightning_util import has_validation_loop
from torch import Tensor

from ..cells.factory import portable_cell
from .module import ForecastLoss, ParaRNNForecastModel

LR_SCHEDULES = ("plateau", "cosine", "none")
#: the batch entries the network's ``forward`` reads (GluonTS's DeepAR inputs)
MODEL_INPUT_NAMES = (
    "feat_static_cat",
    "feat_static_real",
    "past_time_feat",
    "past_target",
    "past_observed_values",
    "future_time_feat",
)


class ForecastTrainingModule(pl.LightningModule):
    """Training and validation on GluonTS batches, AdamW, an optional LR schedule and weight EMA.

    Subclasses give the network to :meth:`set_model`.

    Batches are dicts of the network's inputs (:data:`MODEL_INPUT_NAMES`) plus ``future_target`` and
    ``future_observed_values`` ``(B, H)``. Logged per epoch: ``train_loss``, the batch mean of the network's
    training loss (:meth:`~pararnn_ts.forecast.module.ParaRNNForecastModel.loss`, context term included), and
    ``val_loss``, that of the forecast's own loss (horizon marginals + copula, without the context term), so
    that checkpoints and the plateau schedule follow forecast quality.

    Args:
        lr, weight_decay: of AdamW.
        lr_schedule: ``"plateau"`` (halve the LR after ``patience`` epochs without improvement of
            ``val_loss``, or ``train_loss`` without validation), ``"cosine"`` (cosine decay to 0 over
            ``trainer.estimated_stepping_batches``, stepped every batch) or ``"none"``.
        patience: of ``"plateau"``.
        ema_decay: ``None`` (off) or the decay ``β`` of an exponential moving average of the weights,
            bias-corrected as in Adam: after optimizer step ``t``, ``θ̄_t = Σ_{s≤t} β^{t−s} (1 − β) θ_s / (1 − β^t)``,
            so the initial weights get no share however few the steps. Out of training mode (validation,
            prediction) the module runs the averaged copy ``self.averaged``; checkpoints hold both.
    """

    model: ParaRNNForecastModel | None
    averaged: ParaRNNForecastModel | None

    def __init__(
        self,
        lr: float = 1e-3,
        weight_decay: float = 1e-8,
        lr_schedule: str = "plateau",
        patience: int = 10,
        ema_decay: float | None = None,
    ):
        super().__init__()
        if not lr > 0 or weight_decay < 0:
            raise ValueError(f"lr must be > 0 and weight_decay >= 0, got lr={lr}, weight_decay={weight_decay}")
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule={lr_schedule!r} is not one of {LR_SCHEDULES}")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(
                f"patience must be an int >= 0 (epochs without improvement before a halving), got {patience!r}"
            )
        check_ema_decay(ema_decay)
        self.lr, self.weight_decay, self.lr_schedule, self.patience = lr, weight_decay, lr_schedule, patience
        self.ema_decay = ema_decay
        self.model = self.averaged = None

    def set_model(self, model: ParaRNNForecastModel) -> None:
        """Train ``model``; with ``ema_decay``, also keep its moving average (a frozen copy, for now equal)."""
        self.model = model
        if self.ema_decay is not None:
            self.averaged = copy.deepcopy(model).requires_grad_(False)

    @property
    def network(self) -> ParaRNNForecastModel:
        """The network that runs now: the averaged copy out of training mode (when there is one), else the model."""
        return self.model if self.training or self.averaged is None else self.averaged

    def forward(self, *args: Tensor, **kwargs: Any) -> Tensor:
        """The network's forward: sample paths ``(B, num_parallel_samples, H)`` (what the predictor calls)."""
        return self.network(*args, **kwargs)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """Lightning's step (once per ``accumulate_grad_batches`` batches), then the moving average's update."""
        super().optimizer_step(*args, **kwargs)
        if self.averaged is not None:
            self.update_average(self.trainer.global_step + 1)  # Lightning counts this step once the hook returns

    @torch.no_grad()
    def update_average(self, step: int) -> None:
        """Fold the weights after optimizer step ``step`` (1, 2, ...) into the bias-corrected average: the step
        moves ``θ̄`` towards ``θ`` by ``(1 − β) / (1 − β^step)``, 1 at the first step."""
        if step < 1:
            raise ValueError(f"update_average: step counts optimizer steps from 1, got {step}")
        beta = self.ema_decay
        weight = (1.0 - beta) / (1.0 - beta**step)
        for average, current in zip(self.averaged.parameters(), self.model.parameters(), strict=True):
            average.lerp_(current, weight)

    def batch_terms(self, batch: dict[str, Tensor]) -> ForecastLoss:
        """The running network's per-series loss terms ``(B,)`` on ``batch``."""
        return self.network.loss_terms(
            **select(MODEL_INPUT_NAMES, batch),
            future_target=batch["future_target"],
            future_observed_values=batch["future_observed_values"],
        )

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self.model.training_loss(self.batch_terms(batch)).mean()
        self.log_epoch_mean("train_loss", loss, batch)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self.batch_terms(batch).forecast.mean()
        self.log_epoch_mean("val_loss", loss, batch)
        return loss

    def log_epoch_mean(self, name: str, loss: Tensor, batch: dict[str, Tensor]) -> None:
        """Log ``name``: the epoch's mean of ``loss`` per series, over the series of every process (under DDP each
        has its own batches; the plateau schedule and checkpoints of every process then follow the same value)."""
        batch_size = len(batch["future_target"])
        self.log(name, loss, on_epoch=True, on_step=False, prog_bar=True, batch_size=batch_size, sync_dist=True)

    def on_train_epoch_end(self) -> None:
        """Step the plateau schedule on the monitored loss of a training epoch that ran all its batches.

        Here, not where Lightning steps it (after this hook, and after the epoch's checkpoint is saved): Lightning
        skips it in the first epoch of a resumed ``max_steps`` fit and cannot step it after a fit resumed from an
        epoch's end (the monitored loss is not in the checkpoint). Stepped here, the checkpoint holds it, and a
        resumed fit follows the uninterrupted one's schedule.
        """
        config = plateau_config(self.trainer)
        if config is None or not self.trainer.fit_loop.epoch_loop._num_ready_batches_reached():
            return
        value = self.trainer.callback_metrics.get(config.monitor)
        if value is not None:  # none when a fit resumed from an epoch's end repeats its end: stepped already
            config.scheduler.step(value)

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        """Lightning's step of a schedule, but for the plateau schedule's: :meth:`on_train_epoch_end` steps it."""
        if not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            super().lr_scheduler_step(scheduler, metric)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay, eps=adam_eps(self.model)
        )
        if self.lr_schedule == "none":
            return {"optimizer": optimizer}
        if self.lr_schedule == "plateau":
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="min", factor=0.5, patience=self.patience
            )
            monitor = "val_loss" if validates(self.trainer) else "train_loss"
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": monitor}}
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise ValueError("lr_schedule='cosine' needs a finite run: set trainer max_steps or max_epochs")
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, int(total)))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class ParaRNNLightningModule(ForecastTrainingModule):
    """GluonTS-style module: builds ``ParaRNNForecastModel(**model_kwargs)`` at once; serializable by GluonTS.

    Args:
        model_kwargs: the network's arguments (:meth:`ParaRNNEstimator.model_kwargs
            <pararnn_ts.forecast.estimator.ParaRNNEstimator.model_kwargs>`). A user cell in them is saved as its
            ``{"class_path", "init_args"}`` (:func:`~pararnn_ts.cells.factory.portable_cell`), so that
            ``load_from_checkpoint`` rebuilds it with ``weights_only=True``; one that has none (a lambda, a class
            defined inside a function) is refused.
        lr, weight_decay, lr_schedule, patience, ema_decay: see :class:`ForecastTrainingModule`.
    """

    @validated()
    def __init__(
        self,
        model_kwargs: dict,
        lr: float = 1e-3,
        weight_decay: float = 1e-8,
        lr_schedule: str = "plateau",
        patience: int = 10,
        ema_decay: float | None = None,
    ) -> None:
        super().__init__(
            lr=lr, weight_decay=weight_decay, lr_schedule=lr_schedule, patience=patience, ema_decay=ema_decay
        )
        if "cell" in model_kwargs:  # saved as plain values, which torch.load(weights_only=True) reads
            cell = portable_cell(model_kwargs["cell"], "ParaRNNLightningModule", "model_kwargs['cell']")
            model_kwargs = {**model_kwargs, "cell": cell}
        self.save_hyperparameters()  # reads model_kwargs as it is now
        self.set_model(ParaRNNForecastModel(**model_kwargs))


def validates(trainer: pl.Trainer) -> bool:
    """Whether ``trainer``'s fit validates: it has a validation loop with batches to run (not with
    ``limit_val_batches=0``, nor a data module that holds out no validation windows)."""
    if not has_validation_loop(trainer) or trainer.limit_val_batches == 0:
        return False
    held_out = getattr(trainer.datamodule, "val_entries", None)
    return held_out is None or len(held_out) > 0


def plateau_config(trainer: pl.Trainer) -> Any:
    """The configuration of ``trainer``'s plateau schedule (``ReduceLROnPlateau``), or ``None`` without one."""
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau
    return next((c for c in trainer.lr_scheduler_configs if isinstance(c.scheduler, plateau)), None)


def adam_eps(model: torch.nn.Module, eps: float = 1e-8) -> float:
    """AdamW's ``eps`` for ``model``'s parameters: ``eps``, or the smallest normal number of their dtype where that
    is larger. Under ``--trainer.precision 16-true`` the optimizer's state is float16, where 1e-8 is 0 and a gradient
    that is (or underflows to) 0 gives the step 0 / 0; 6.1e-5 keeps it finite."""
    return max(eps, torch.finfo(next(model.parameters()).dtype).tiny)


def check_ema_decay(ema_decay: float | None, owner: str = "") -> None:
    """``ema_decay`` is ``None`` or lies in ``(0, 1)``; else a ``ValueError`` that says so, prefixed by ``owner``."""
    if ema_decay is not None and not 0.0 < ema_decay < 1.0:
        raise ValueError(
            f"{owner}ema_decay must be None (no weight average) or lie in (0, 1), e.g. 0.99; got {ema_decay}"
        )
