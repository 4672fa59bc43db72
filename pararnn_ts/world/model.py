"""``DynamicsModel``: an action-conditioned ParaRNN world model.

Every step ``t`` reads ``x_t = [ô_t · f_t, f_t, â_t]`` with ``ô_t`` the normalised observation,
``f_t`` the observed flag and ``â_t`` the normalised action. With ``f_t = 0`` (no observation)
only actions drive the state, so an open-loop imagination of ``H`` steps after a context is one
parallel solve of the recurrence. Heads on the features of ``h_t`` predict the next-observation
delta ``o_{t+1} − o_t`` (a Gaussian in normalised delta units), the reward ``r_t`` and the
termination logit; nothing computed from ``h`` feeds back into the recurrence.

    model = DynamicsModel(obs_dim, action_dim, cell="gru", hidden_size=128, num_layers=2)
    model.set_normalizer(datamodule.stats)
    pred = model.imagine(context_obs (B, C, O), context_actions (B, C-1, A), plan (B, H, A))

    state = model.encode(context_obs[:, :-1], context_actions)       # MPC: the context once,
    state = model.repeat_state(state, n)                              # then n candidates per row
    pred = model.imagine_from_state(state, context_obs[:, -1].repeat_interleave(n, 0), plans (B·n, H, A))

    state = model.initial_state(B)                                    # closed loop, one step at a time
    state, pred = model.observe(state, obs (B, O), action (B, A))
    state, pred = model.imagine_step(state, pred.obs, action (B, A))

Actions are in the model's units: Box actions as the env takes them, Discrete actions one-hot
(:func:`~pararnn_ts.world.collect.encode_actions`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..cells.factory import CellSpec, CellWidthError, refuse_builtin_settings, resolve_cell, solver_settings
from ..cells.headwise import check_head_sizes
from ..core import Mode
from ..core.checks import all_finite
from ..nn import Block, ParaRNNMixer, RMSNorm

State = Any
#: normaliser buffers: name → whether it is per observation dim ("obs"), per action dim ("action") or a scalar
NORMALIZER = {
    "obs_mean": "obs",
    "obs_std": "obs",
    "delta_mean": "obs",
    "delta_std": "obs",
    "reward_mean": "scalar",
    "reward_std": "scalar",
    "action_mean": "action",
    "action_std": "action",
}


class Prediction(NamedTuple):
    """Predictions in raw units, for ``H`` steps ``(B, H, ...)`` or one step ``(B, ...)``.

    ``obs``: mean next observations (deltas accumulated from the last real observation);
    ``obs_std``: the std of each step's predicted delta (not accumulated); ``reward``: ``r_t``
    (``None`` when the model does not learn rewards); ``terminated``: probability that the
    episode ends at the next observation (zeros when the model does not learn terminations).
    """

    obs: Tensor
    obs_std: Tensor
    reward: Tensor | None
    terminated: Tensor


class HeadOutputs(NamedTuple):
    """Raw head outputs in normalised units, ``(B, T, ...)``: ``delta_mean``/``delta_log_std``
    ``(B, T, O)``, ``reward`` ``(B, T)`` or ``None``, ``termination_logit`` ``(B, T)`` or ``None``."""

    delta_mean: Tensor
    delta_log_std: Tensor
    reward: Tensor | None
    termination_logit: Tensor | None


def map_state(state: State, fn: Callable[[Tensor], Tensor]) -> State:
    """Apply ``fn`` to every tensor of a (nested tuple/list) state."""
    if isinstance(state, Tensor):
        return fn(state)
    if isinstance(state, (tuple, list)):
        return type(state)(map_state(s, fn) for s in state)
    return state


def soft_clamp(x: Tensor, low: float, high: float) -> Tensor:
    """Smoothly bound ``x`` to ``(low, high)`` (PETS' log-std bounding), differentiable everywhere."""
    x = high - F.softplus(high - x)
    return low + F.softplus(x - low)


def gaussian_nll(target: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
    """Elementwise ``−log N(target; mean, exp(log_std)²)``."""
    return 0.5 * ((target - mean) * torch.exp(-log_std)).pow(2) + log_std + 0.5 * math.log(2 * math.pi)


class Normalizer(nn.Module):
    """Buffers ``obs_mean``/``obs_std``/``delta_mean``/``delta_std`` ``(O,)``, ``reward_mean``/``reward_std``
    ``()`` and ``action_mean``/``action_std`` ``(A,)``, and ``fitted``; saved in the state dict."""

    def __init__(self, obs_dim: int, action_dim: int) -> None:
        super().__init__()
        self.obs_dim, self.action_dim = obs_dim, action_dim
        sizes = {"obs": (obs_dim,), "action": (action_dim,), "scalar": ()}
        for name, kind in NORMALIZER.items():
            self.register_buffer(name, torch.zeros(sizes[kind]) if name.endswith("mean") else torch.ones(sizes[kind]))
        self.register_buffer("fitted", torch.tensor(False))

    def set(self, stats: Mapping[str, Any]) -> None:
        """Copy ``stats`` (arrays or tensors by the buffers' names) into the buffers and mark them fitted.

        ``action_mean``/``action_std`` may be left out (then 0 and 1); every other key is required.
        """
        for name in NORMALIZER:
            buffer = getattr(self, name)
            if name not in stats:
                if name.startswith("action"):
                    continue
                raise ValueError(f"Normalizer.set: stats lack {name!r}; expected keys {list(NORMALIZER)}")
            value = torch.as_tensor(np.asarray(stats[name]), dtype=buffer.dtype, device=buffer.device)
            if value.shape != buffer.shape:
                raise ValueError(
                    f"Normalizer.set: {name} has shape {tuple(value.shape)}, expected {tuple(buffer.shape)} "
                    f"(obs_dim={self.obs_dim}, action_dim={self.action_dim}): the data and the model disagree"
                )
            if name.endswith("std") and not bool((value > 0).all()):
                raise ValueError(f"Normalizer.set: {name} must be > 0")
            buffer.copy_(value)
        self.fitted.fill_(True)

    def obs(self, obs: Tensor) -> Tensor:
        """Raw observations ``(..., O)`` → normalised."""
        return (obs - self.obs_mean) / self.obs_std

    def action(self, action: Tensor) -> Tensor:
        """Actions in model units ``(..., A)`` → normalised."""
        return (action - self.action_mean) / self.action_std

    def delta(self, next_obs: Tensor, obs: Tensor) -> Tensor:
        """The normalised delta ``(next_obs − obs − delta_mean) / delta_std`` ``(..., O)``."""
        return (next_obs - obs - self.delta_mean) / self.delta_std

    def raw_delta(self, delta: Tensor) -> Tensor:
        """Normalised deltas ``(..., O)`` → raw units."""
        return self.delta_mean + self.delta_std * delta

    def reward(self, reward: Tensor) -> Tensor:
        """Raw rewards → normalised."""
        return (reward - self.reward_mean) / self.reward_std

    def raw_reward(self, reward: Tensor) -> Tensor:
        """Normalised rewards → raw units."""
        return self.reward_mean + self.reward_std * reward


class ParaRNNBackbone(nn.Module):
    """``num_layers`` residual blocks of a ParaRNN mixer (ParaGRU/ParaLSTM, or a user cell) and a SwiGLU MLP.

    ``cell``: ``"gru"``, ``"lstm"``, or a user cell's factory ``cell(input_size, hidden_size) → ParaCell``, called
    as ``cell(dim, dim)`` in each block (see :mod:`pararnn_ts.cells.factory`); ``num_heads``, ``max_norm`` and
    ``solver_kwargs`` configure the built-in cells only and keep their defaults with a user cell.

    Shapes: ``forward`` ``(B, T, dim)`` → ``(B, T, dim)``, ``step`` ``(B, dim)`` → ``(B, dim)``;
    the state is a list with one :class:`~pararnn_ts.nn.mixers.ParaRNNMixer` state per block.
    """

    def __init__(
        self,
        dim: int,
        cell: CellSpec = "gru",
        num_layers: int = 2,
        num_heads: int = 1,
        mlp_ratio: float = 2.0,
        conv_kernel: int = 4,
        max_norm: float | None = None,
        **solver_kwargs: Any,
    ) -> None:
        super().__init__()
        if not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"ParaRNNBackbone: num_layers must be a positive int, got {num_layers!r}")
        cell = resolve_cell(cell, "ParaRNNBackbone")
        settings = {"num_heads": (num_heads, 1), "max_norm": (max_norm, None), **solver_settings(solver_kwargs)}
        refuse_builtin_settings("ParaRNNBackbone", cell, **settings)
        # a user cell takes its own settings; the built-in ones get these
        cell_kwargs = {"max_norm": max_norm, **solver_kwargs} if isinstance(cell, str) else {}
        mlp_hidden = max(1, round(mlp_ratio * dim)) if mlp_ratio > 0 else 0
        self.blocks = nn.ModuleList(
            Block(dim, ParaRNNMixer(dim, cell, num_heads, conv_kernel=conv_kernel, **cell_kwargs), mlp_hidden)
            for _ in range(num_layers)
        )

    def init_state(self, batch: int, device: torch.device | None = None, dtype: torch.dtype | None = None) -> list:
        return [block.init_state(batch, device, dtype) for block in self.blocks]

    def forward(self, x: Tensor, state: list) -> tuple[Tensor, list]:
        state = list(state)
        for i, block in enumerate(self.blocks):
            x, state[i] = block(x, state[i])
        return x, state

    def step(self, x_t: Tensor, state: list) -> tuple[Tensor, list]:
        state = list(state)
        for i, block in enumerate(self.blocks):
            x_t, state[i] = block.step(x_t, state[i])
        return x_t, state


class DynamicsModel(nn.Module):
    """Action-conditioned dynamics ``(o_≤t, a_≤t) → (o_{t+1}, r_t, done_{t+1})`` on a ParaRNN backbone.

    Args:
        obs_dim: features of an observation ``O``.
        action_dim: features of the model's action vector ``A`` (one-hot size for Discrete).
        cell: ``"gru"`` (ParaGRU), ``"lstm"`` (ParaLSTM), or a user cell: a callable ``cell(input_size,
            hidden_size) → ParaCell`` such as a :class:`~pararnn_ts.core.cell.ParaCell` subclass, called as
            ``cell(hidden_size, hidden_size)`` in each block, whose output (``output_size``) must be ``hidden_size``
            wide (see :mod:`pararnn_ts.cells.factory`).
        hidden_size: width of the features and of the cells.
        num_layers: residual blocks.
        num_heads: heads of the cells' block-diagonal input projection (divides ``hidden_size``).
        mode: solver mode of the cells (``"auto"``, ``"sequential"``, ``"parallel"``, ``"fused"``).
        learn_reward, learn_termination: whether to have those heads.
        max_norm: norm clip of the cells' recurrent diagonals (``None``: free). ``num_heads``, ``mode`` and
            ``max_norm`` configure the built-in cells only: a user cell takes its own settings through its
            arguments, and they must then keep their defaults (1, ``"auto"``, ``None``).
        mlp_ratio: SwiGLU width over ``hidden_size`` in each block (0: no MLP).
        conv_kernel: taps of each block's causal convolution.
        min_log_std, max_log_std: soft bounds of the delta's log-std (normalised units).
        backbone: a module to use instead of the ParaRNN blocks (same ``init_state``/``forward``/
            ``step`` contract, widths ``hidden_size``; e.g. the ``nn.GRU`` baseline). ``cell``,
            ``num_layers``, ``num_heads``, ``mode``, ``max_norm``, ``mlp_ratio`` and ``conv_kernel``
            are then unused.

    The :class:`Normalizer` (buffers, saved in the state dict) is set by :meth:`set_normalizer`.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        cell: CellSpec = "gru",
        hidden_size: int = 128,
        num_layers: int = 2,
        num_heads: int = 1,
        mode: Mode = "auto",
        learn_reward: bool = True,
        learn_termination: bool = True,
        *,
        max_norm: float | None = None,
        mlp_ratio: float = 2.0,
        conv_kernel: int = 4,
        min_log_std: float = -6.0,
        max_log_std: float = 1.0,
        backbone: nn.Module | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("obs_dim", obs_dim), ("action_dim", action_dim)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"DynamicsModel: {name} must be a positive int, got {value!r}")
        if not min_log_std < max_log_std:
            raise ValueError(f"DynamicsModel: min_log_std={min_log_std} must be < max_log_std={max_log_std}")
        if backbone is None:
            cell = resolve_cell(cell, "DynamicsModel")
            check_head_sizes("DynamicsModel", num_heads, hidden_size=hidden_size)
            settings = {"num_heads": (num_heads, 1), "mode": (mode, "auto"), "max_norm": (max_norm, None)}
            refuse_builtin_settings("DynamicsModel", cell, **settings)
            try:
                backbone = ParaRNNBackbone(
                    hidden_size, cell, num_layers, num_heads, mlp_ratio, conv_kernel, max_norm, mode=mode
                )
            except CellWidthError as error:  # the mixer's width is this model's hidden_size
                raise CellWidthError(f"DynamicsModel: hidden_size={hidden_size} is the cells' width; {error}") from None
        self.obs_dim, self.action_dim, self.hidden_size = obs_dim, action_dim, hidden_size
        self.learn_reward, self.learn_termination = learn_reward, learn_termination
        self.min_log_std, self.max_log_std = min_log_std, max_log_std
        self.embed = nn.Linear(obs_dim + 1 + action_dim, hidden_size)
        self.backbone = backbone
        self.norm = RMSNorm(hidden_size)
        self.delta_head = nn.Linear(hidden_size, 2 * obs_dim)
        self.reward_head = nn.Linear(hidden_size, 1) if learn_reward else None
        self.termination_head = nn.Linear(hidden_size, 1) if learn_termination else None
        self.normalizer = Normalizer(obs_dim, action_dim)

    def set_normalizer(self, stats: Mapping[str, Any]) -> None:
        """Set the normaliser from ``stats`` (e.g. ``TrajectoryDataModule.stats``); see :meth:`Normalizer.set`."""
        self.normalizer.set(stats)

    @property
    def normalizer_fitted(self) -> bool:
        return bool(self.normalizer.fitted)

    # ---- the sequence model -------------------------------------------------------------
    def initial_state(self, batch_size: int) -> State:
        """The zero state of ``batch_size`` rows, on the model's device and dtype."""
        weight = self.embed.weight
        return self.backbone.init_state(batch_size, weight.device, weight.dtype)

    @staticmethod
    def repeat_state(state: State, n: int) -> State:
        """Each batch row repeated ``n`` times, in the order ``[b0 × n, b1 × n, ...]``."""
        return map_state(state, lambda s: s.repeat_interleave(n, dim=0))

    def forward(
        self, obs: Tensor, actions: Tensor, observed: Tensor, state: State | None = None
    ) -> tuple[HeadOutputs, State]:
        """One solve over ``T`` steps.

        Args:
            obs: ``(B, T, O)`` raw observations; ignored where not observed (any finite value).
            actions: ``(B, T, A)`` actions in model units.
            observed: ``(B, T)`` flags (bool or 0/1).
            state: from :meth:`initial_state` or an earlier call; ``None``: zeros.

        Returns:
            the heads in normalised units (:class:`HeadOutputs`) and the state after the last step.
        """
        state = self.initial_state(obs.shape[0]) if state is None else state
        features, state = self.backbone(self._inputs(obs, actions, observed), state)
        return self._heads(self.norm(features)), state

    def _inputs(self, obs: Tensor, actions: Tensor, observed: Tensor) -> Tensor:
        flag = observed.to(obs.dtype).unsqueeze(-1)
        obs_n = torch.where(flag > 0, self.normalizer.obs(obs), torch.zeros_like(obs))
        return self.embed(torch.cat([obs_n, flag, self.normalizer.action(actions)], dim=-1))

    def _heads(self, features: Tensor) -> HeadOutputs:
        mean, log_std = self.delta_head(features).chunk(2, dim=-1)
        return HeadOutputs(
            mean,
            soft_clamp(log_std, self.min_log_std, self.max_log_std),
            None if self.reward_head is None else self.reward_head(features).squeeze(-1),
            None if self.termination_head is None else self.termination_head(features).squeeze(-1),
        )

    def raw_delta(self, heads: HeadOutputs) -> Tensor:
        """The mean delta ``o_{t+1} − o_t`` in raw units ``(..., O)``."""
        return self.normalizer.raw_delta(heads.delta_mean)

    def _prediction(self, heads: HeadOutputs, next_obs: Tensor) -> Prediction:
        reward = None if heads.reward is None else self.normalizer.raw_reward(heads.reward)
        logit = heads.termination_logit
        terminated = torch.zeros_like(heads.delta_mean[..., 0]) if logit is None else torch.sigmoid(logit)
        return Prediction(next_obs, self.normalizer.delta_std * heads.delta_log_std.exp(), reward, terminated)

    # ---- the world-model interface ------------------------------------------------------
    def encode(self, obs: Tensor, actions: Tensor, state: State | None = None) -> State:
        """The state after observing ``obs`` ``(B, T, O)`` with ``actions`` ``(B, T, A)`` (``T`` may be 0)."""
        self._check("obs", obs, 3, "obs_dim")
        self._check("actions", actions, 3, "action_dim")
        if obs.shape[:2] != actions.shape[:2]:
            raise ValueError(
                f"DynamicsModel.encode: obs {tuple(obs.shape)} and actions {tuple(actions.shape)} differ in (B, T)"
            )
        state = self.initial_state(obs.shape[0]) if state is None else state
        if obs.shape[1] == 0:
            return state
        _, state = self(obs, actions, obs.new_ones(obs.shape[:2]), state)
        return state

    def imagine(self, context_obs: Tensor, context_actions: Tensor, plan: Tensor) -> Prediction:
        """Open-loop predictions of ``o_C .. o_{C+H-1}`` after a context, in one solve of ``C-1+H`` steps.

        Steps ``t < C`` read ``[o_t, 1, a_t]`` (``a_t = context_actions[:, t]``, ``a_{C-1} = plan[:, 0]``),
        steps ``C .. C+H-2`` read ``[0, 0, plan[:, t-C+1]]``; predicted deltas accumulate from ``o_{C-1}``.

        Args:
            context_obs: ``(B, C, O)``, ``C >= 1``.
            context_actions: ``(B, C-1, A)``, the actions taken between the context observations.
            plan: ``(B, H, A)``, the actions from ``o_{C-1}`` on.

        Returns:
            :class:`Prediction` with fields ``(B, H, O)`` / ``(B, H)``.
        """
        self._check("context_obs", context_obs, 3, "obs_dim")
        self._check("context_actions", context_actions, 3, "action_dim")
        self._check("plan", plan, 3, "action_dim")
        batch, context = context_obs.shape[:2]
        if context < 1 or context_actions.shape[:2] != (batch, context - 1) or plan.shape[0] != batch:
            raise ValueError(
                f"DynamicsModel.imagine: context_obs {tuple(context_obs.shape)} needs C >= 1, context_actions "
                f"(B, C-1, A) and plan (B, H, A) with the same B; got {tuple(context_actions.shape)} and "
                f"{tuple(plan.shape)}"
            )
        return self._open_loop(None, context_obs, context_actions, plan)

    def imagine_from_state(self, state: State, last_obs: Tensor, plan: Tensor) -> Prediction:
        """:meth:`imagine` from a state that has seen ``o_0 .. o_{C-2}`` (see :meth:`encode`).

        One solve of ``H`` steps: ``[last_obs, 1, plan[:, 0]]``, then ``[0, 0, plan[:, k]]``. With
        ``state = encode(context_obs[:, :-1], context_actions)`` and ``last_obs = context_obs[:, -1]``
        it equals ``imagine(context_obs, context_actions, plan)``; for MPC, :meth:`repeat_state` the
        state and ``last_obs`` once per candidate plan.

        Args:
            state: ``B`` rows.
            last_obs: ``(B, O)`` the last real observation ``o_{C-1}``.
            plan: ``(B, H, A)``.

        Returns:
            :class:`Prediction` with fields ``(B, H, O)`` / ``(B, H)``.
        """
        self._check("last_obs", last_obs, 2, "obs_dim")
        self._check("plan", plan, 3, "action_dim")
        if plan.shape[0] != last_obs.shape[0]:
            raise ValueError(f"DynamicsModel: plan has {plan.shape[0]} rows, last_obs {last_obs.shape[0]}")
        return self._open_loop(state, last_obs.unsqueeze(1), plan[:, :0], plan)

    def _open_loop(self, state: State | None, context_obs: Tensor, context_actions: Tensor, plan: Tensor) -> Prediction:
        batch, context, _ = context_obs.shape
        horizon = plan.shape[1]
        if horizon < 1:
            raise ValueError("DynamicsModel: plan needs at least one step (B, H >= 1, A)")
        obs = torch.cat([context_obs, context_obs.new_zeros(batch, horizon - 1, self.obs_dim)], dim=1)
        observed = torch.arange(context + horizon - 1, device=obs.device) < context
        heads, _ = self(obs, torch.cat([context_actions, plan], dim=1), observed.expand(batch, -1), state)
        heads = HeadOutputs(*(None if h is None else h[:, context - 1 :] for h in heads))
        next_obs = context_obs[:, -1:] + self.raw_delta(heads).cumsum(dim=1)
        return self._prediction(heads, next_obs)

    def observe(self, state: State, obs: Tensor, action: Tensor) -> tuple[State, Prediction]:
        """One step with a real observation ``obs`` ``(B, O)`` and ``action`` ``(B, A)``; predicts the next step."""
        return self._step(state, obs, action, observed=True)

    def imagine_step(self, state: State, last_obs_estimate: Tensor, action: Tensor) -> tuple[State, Prediction]:
        """One masked step (no observation): ``pred.obs = last_obs_estimate + delta``."""
        return self._step(state, last_obs_estimate, action, observed=False)

    def _step(self, state: State, obs: Tensor, action: Tensor, observed: bool) -> tuple[State, Prediction]:
        self._check("obs" if observed else "last_obs_estimate", obs, 2, "obs_dim")
        self._check("action", action, 2, "action_dim")
        flag = obs.new_full((obs.shape[0], 1), float(observed))
        x_t = self._inputs(obs.unsqueeze(1), action.unsqueeze(1), flag)[:, 0]
        features, state = self.backbone.step(x_t, state)
        heads = self._heads(self.norm(features))
        return state, self._prediction(heads, obs + self.raw_delta(heads))

    def _check(self, name: str, x: Tensor, ndim: int, size: Literal["obs_dim", "action_dim"]) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"DynamicsModel: {name} must be a Tensor, got {type(x).__name__}")
        features = getattr(self, size)
        if x.dim() != ndim or x.shape[-1] != features:
            layout = "(B, T, features)" if ndim == 3 else "(B, features)"
            hint = "; Discrete actions are one-hot (see collect.encode_actions)" if size == "action_dim" else ""
            raise ValueError(
                f"DynamicsModel: {name} must be {layout} with {size}={features} features, "
                f"got shape {tuple(x.shape)}{hint}"
            )
        if not all_finite(x):
            kind = "observations" if size == "obs_dim" else "actions"
            raise ValueError(f"DynamicsModel: {name} contains NaN or inf; the model needs finite {kind}")
