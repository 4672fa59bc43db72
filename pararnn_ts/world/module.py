"""``WorldModelModule``: trains a :class:`~pararnn_ts.world.model.DynamicsModel` on trajectory windows.

The objective mixes a teacher-forced one-step loss with an open-loop multi-step loss::

    loss = nll(δ) + mse(r) + bce(done)                                 every step observed
         + open_loop_weight · (mse(ô) + mse(r) + bce(done))            observations masked after c steps

Teacher forced: every step sees its observation; ``nll`` is the Gaussian NLL of the normalised
delta ``o_{t+1} − o_t``. Open loop: each window keeps a random number ``c ∈ [1, L−1]`` of observed
steps, the rest only see actions; from the last observation the predicted deltas accumulate,
``ô_{t+1} = o_{c-1} + Σ_{s=c-1..t} δ_s``, and ``mse(ô)`` is their squared error in units of the
observations' std over steps ``t >= c-1``; rewards and terminations are scored there too. Both
passes run as one solve over a doubled batch. Rewards are in normalised units, ``done`` is the
termination logit's binary cross-entropy; padded steps (``mask = 0``) count nowhere.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor

from ..cells.factory import CellSpec, record_cell, refuse_builtin_settings, resolve_cell
from ..core import Mode
from ..notices import warn
from .baselines import torch_gru_model
from .evaluate import DEFAULT_KS, k_step_errors
from .model import DynamicsModel, gaussian_nll

CELLS = ("gru", "lstm", "torch_gru")
#: the held-out splits whose k-step errors a stage logs (fit: validation, then the test that pararnn-ts fit runs)
SCORED_SPLITS = {"fit": ("val", "test"), "validate": ("val",), "test": ("test",)}


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` ``(B, T)`` where ``mask`` ``(B, T)`` is nonzero (0 if it is nowhere)."""
    return (values * mask).sum() / mask.sum().clamp_min(1)


def sample_context(mask: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Observed steps ``c`` ``(B,)`` per window: uniform in ``[1, L−1]``, ``L`` its valid steps (1 if ``L <= 2``)."""
    length = mask.sum(1).long()
    u = torch.rand(length.shape, generator=generator).to(mask.device)
    return 1 + (u * (length - 1).clamp_min(1)).long()


def world_model_losses(
    model: DynamicsModel, batch: dict[str, Tensor], context: Tensor, open_loop_weight: float = 1.0
) -> dict[str, Tensor]:
    """The objective of the module docstring and its parts, for a batch of windows.

    Args:
        model: the dynamics model (normaliser set).
        batch: ``obs``/``next_obs`` ``(B, T, O)``, ``action`` ``(B, T, A)``,
            ``reward``/``terminated``/``mask`` ``(B, T)``.
        context: ``(B,)`` observed steps of each window in the open-loop pass, ``>= 1``.
        open_loop_weight: weight of the open-loop part.

    Returns:
        ``loss`` and its parts ``tf_nll``, ``ol_mse`` and, as the model learns them, ``tf_reward``,
        ``ol_reward``, ``tf_termination``, ``ol_termination`` (scalars).
    """
    obs, action, next_obs, mask = batch["obs"], batch["action"], batch["next_obs"], batch["mask"]
    steps = torch.arange(obs.shape[1], device=obs.device)
    observed = torch.cat([mask > 0, steps < context[:, None]])
    heads, _ = model(torch.cat([obs, obs]), torch.cat([action, action]), observed)
    tf, ol = (type(heads)(*(None if h is None else h.chunk(2)[i] for h in heads)) for i in (0, 1))

    norm = model.normalizer
    parts = {
        "tf_nll": masked_mean(gaussian_nll(norm.delta(next_obs, obs), tf.delta_mean, tf.delta_log_std).mean(-1), mask)
    }
    open_loop = mask * (steps >= context[:, None] - 1)
    last_obs = obs.gather(1, (context - 1)[:, None, None].expand(-1, 1, obs.shape[-1]))
    predicted = last_obs + (model.raw_delta(ol) * open_loop[..., None]).cumsum(1)
    parts["ol_mse"] = masked_mean(((predicted - next_obs) / norm.obs_std).pow(2).mean(-1), open_loop)
    if tf.reward is not None:
        target = norm.reward(batch["reward"])
        parts["tf_reward"] = masked_mean((tf.reward - target).pow(2), mask)
        parts["ol_reward"] = masked_mean((ol.reward - target).pow(2), open_loop)
    if tf.termination_logit is not None:
        done = batch["terminated"]
        parts["tf_termination"] = masked_mean(
            F.binary_cross_entropy_with_logits(tf.termination_logit, done, reduction="none"), mask
        )
        parts["ol_termination"] = masked_mean(
            F.binary_cross_entropy_with_logits(ol.termination_logit, done, reduction="none"), open_loop
        )
    teacher = sum(v for k, v in parts.items() if k.startswith("tf_"))
    multi = sum(v for k, v in parts.items() if k.startswith("ol_"))
    return {"loss": teacher + open_loop_weight * multi, **parts}


class WorldModelModule(pl.LightningModule):
    """Trains a :class:`~pararnn_ts.world.model.DynamicsModel` with the objective of the module docstring.

    ``obs_dim``/``action_dim`` come from the data module in :meth:`setup` (or are given) and are
    saved with the hyperparameters, the normaliser with the weights, so ``load_from_checkpoint``
    rebuilds the trained model. Logged: ``{train,val,test}/loss`` and its parts, and after each
    validation / test epoch ``{val,test}/mse_k{k}``, the normalised open-loop ``k``-step MSE of
    :func:`~pararnn_ts.world.evaluate.k_step_errors` on the data module's held-out episodes
    (normalised by the training observations' variance).

    Args:
        cell: ``"gru"`` (ParaGRU), ``"lstm"`` (ParaLSTM), ``"torch_gru"`` (the sequential
            ``nn.GRU`` baseline of :func:`~pararnn_ts.world.baselines.torch_gru_model`), or a user cell: in a config
            ``cell: {class_path: my_cells.MyCell, init_args: {...}}`` (without ``input_size`` and ``hidden_size``: each
            block calls it as ``cell(hidden_size, hidden_size)``), in Python a ParaCell subclass or a
            ``functools.partial`` of one, whose output is ``hidden_size`` wide; ``num_heads``, ``mode`` and
            ``model_kwargs``' ``max_norm`` then keep their defaults (see :class:`DynamicsModel`). Checkpoints record
            it as its ``{class_path, init_args}`` (see :mod:`pararnn_ts.cells.factory`).
        hidden_size, num_layers, num_heads, mode, learn_reward, learn_termination: of the model.
        model_kwargs: more :class:`DynamicsModel` keyword arguments (``max_norm``, ``mlp_ratio``, ...).
        obs_dim, action_dim: the data's sizes; ``None``: taken from the data module.
        lr, weight_decay: of AdamW; the learning rate decays to ``min_lr_ratio · lr`` by a cosine.
        open_loop_weight: weight of the open-loop loss (10: the best of 1, 10, 30 on Pendulum's
            validation episodes; with 1 the one-step NLL dominates and open-loop errors stay high).
        eval_ks, eval_context, eval_stride: the k-step evaluation's horizons, context and window stride.
    """

    def __init__(
        self,
        cell: Literal["torch_gru"] | CellSpec = "gru",
        hidden_size: int = 128,
        num_layers: int = 2,
        num_heads: int = 1,
        mode: Mode = "auto",
        learn_reward: bool = True,
        learn_termination: bool = True,
        model_kwargs: dict[str, Any] | None = None,
        obs_dim: int | None = None,
        action_dim: int | None = None,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        min_lr_ratio: float = 0.1,
        open_loop_weight: float = 10.0,
        eval_ks: tuple[int, ...] = DEFAULT_KS,
        eval_context: int = 16,
        eval_stride: int = 5,
    ) -> None:
        super().__init__()
        # hparams hold a user cell as a config names it
        self.cell_spec = cell if cell == "torch_gru" else resolve_cell(cell, "WorldModelModule")
        refuse_builtin_settings("WorldModelModule", self.cell_spec, num_heads=(num_heads, 1), mode=(mode, "auto"))
        if cell == "torch_gru" and (num_heads, mode) != (1, "auto"):  # a warning: checkpoints that have them load
            warn(
                f"WorldModelModule: cell='torch_gru' is torch.nn.GRU, which has no heads or solver modes: "
                f"num_heads={num_heads!r}, mode={mode!r} are ignored (leave them at the defaults, 1 and 'auto')",
                UserWarning,
            )
        if open_loop_weight < 0 or not 0 <= min_lr_ratio <= 1:
            raise ValueError(
                f"WorldModelModule: open_loop_weight must be >= 0 and min_lr_ratio in [0, 1], "
                f"got {open_loop_weight} and {min_lr_ratio}"
            )
        self.save_hyperparameters()
        record_cell(self.hparams, "WorldModelModule")
        self.model: DynamicsModel | None = None
        if obs_dim is not None and action_dim is not None:
            self.configure_model()

    def configure_model(self) -> None:
        """Build the model once ``obs_dim`` and ``action_dim`` are known."""
        if self.model is not None:
            return
        hp = self.hparams
        if hp.obs_dim is None or hp.action_dim is None:
            raise RuntimeError(
                "WorldModelModule: obs_dim and action_dim are unknown; give them or fit with a data module"
            )
        heads = {"learn_reward": hp.learn_reward, "learn_termination": hp.learn_termination, **(hp.model_kwargs or {})}
        if self.cell_spec == "torch_gru":
            self.model = torch_gru_model(hp.obs_dim, hp.action_dim, hp.hidden_size, hp.num_layers, **heads)
        else:
            self.model = DynamicsModel(
                hp.obs_dim, hp.action_dim, self.cell_spec, hp.hidden_size, hp.num_layers, hp.num_heads, hp.mode, **heads
            )

    def setup(self, stage: str) -> None:
        """Take the sizes (checked against given ones) and, when fitting, the normaliser from the data module."""
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "stats"):
            return
        for name in ("obs_dim", "action_dim"):
            given, found = self.hparams[name], getattr(datamodule, name)
            if given is not None and given != found:
                raise ValueError(
                    f"WorldModelModule: {name}={given} (given, or recorded in the checkpoint), but the data "
                    f"({datamodule.source_env}, observation space {datamodule.observation_space}, action space "
                    f"{datamodule.action_space}) has {found}; score a checkpoint on data of the env it was trained "
                    f"on, or, training a new model, drop {name} to take it from the data"
                )
            self.hparams[name] = found
        self.configure_model()
        if stage == "fit" or not self.model.normalizer_fitted:
            self.model.set_normalizer(datamodule.stats)
        if hasattr(datamodule, "episodes"):
            self.check_eval_context(datamodule, SCORED_SPLITS.get(stage, ()))

    def check_eval_context(self, datamodule: Any, splits: tuple[str, ...]) -> None:
        """Refuse an ``eval_context`` that no held-out episode of ``splits`` (those with episodes) is long enough for:
        their k-step errors need an episode of at least ``eval_context`` steps."""
        context = self.hparams.eval_context
        held = {split: datamodule.episodes(split) for split in splits}
        longest = {split: max(len(e.obs) for e in episodes) for split, episodes in held.items() if episodes}
        short = [f"the longest {split} episode has {n} steps" for split, n in longest.items() if n < context]
        if short:
            raise ValueError(
                f"WorldModelModule: eval_context={context} needs {'/'.join(longest)} episodes of at least {context} "
                f"steps ({context} observations, then the steps to predict), but {' and '.join(short)}; lower "
                f"eval_context to at most {min(longest.values())} (pararnn-ts fit: --model.init_args.eval_context; "
                "world-eval: --context), or collect longer episodes"
            )

    def forward(self, context_obs: Tensor, context_actions: Tensor, plan: Tensor) -> Tensor:
        """Open-loop mean observations ``(B, H, O)`` (see ``DynamicsModel.imagine``)."""
        return self.model.imagine(context_obs, context_actions, plan).obs

    # ---- steps --------------------------------------------------------------------------
    def _losses(self, batch: dict[str, Tensor], split: str, generator: torch.Generator | None) -> Tensor:
        context = sample_context(batch["mask"], generator)
        losses = world_model_losses(self.model, batch, context, self.hparams.open_loop_weight)
        size = int(batch["mask"].sum().item())
        parts = {f"{split}/{k}": v.detach() for k, v in losses.items() if k != "loss"}
        held_out = split != "train"  # under DDP: the mean over every rank's batches, which checkpoints monitor
        self.log_dict(parts, batch_size=size, sync_dist=held_out)
        self.log(f"{split}/loss", losses["loss"].detach(), prog_bar=True, batch_size=size, sync_dist=held_out)
        return losses["loss"]

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._losses(batch, "train", None)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._losses(batch, "val", torch.Generator().manual_seed(batch_idx))

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._losses(batch, "test", torch.Generator().manual_seed(batch_idx))

    def on_validation_epoch_end(self) -> None:
        self._log_k_step("val")

    def on_test_epoch_end(self) -> None:
        self._log_k_step("test")

    def k_step_errors(self, episodes: list, **kwargs: Any) -> dict[int, float]:
        """:func:`~pararnn_ts.world.evaluate.k_step_errors` of the model on ``episodes`` with the module's settings."""
        hp = self.hparams
        settings = {"ks": hp.eval_ks, "context": hp.eval_context, "stride": hp.eval_stride, **kwargs}
        var = self.model.normalizer.obs_std.double().pow(2).cpu()
        dtype = self.model.embed.weight.dtype
        return k_step_errors(self, episodes, obs_var=var, device=self.device, dtype=dtype, **settings)

    def _log_k_step(self, split: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "episodes"):
            return
        errors = self.k_step_errors(datamodule.episodes(split))
        # every rank scores all of the split's episodes: the same numbers, which the mean over ranks keeps
        self.log_dict({f"{split}/mse_k{k}": v for k, v in errors.items() if math.isfinite(v)}, sync_dist=True)

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            return {"optimizer": optimizer}
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, max(1, int(total)), eta_min=hp.min_lr_ratio * hp.lr
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
