"""Baselines for the dynamics model, all predicting ``o_C .. o_{C+H-1}`` from a context and a plan:

- :func:`persistence`: ``o_{C-1+k} = o_{C-1}`` for every ``k``;
- :class:`MLPEnsemble`: PETS-style probabilistic MLPs ``(o_t, a_t) → o_{t+1} − o_t``, trained with
  a Gaussian NLL on bootstrapped transitions (:func:`fit_mlp_ensemble`), rolled out on their own
  predictions (each member its own trajectory, by its mean or by sampling);
- :func:`torch_gru_model`: a :class:`~pararnn_ts.world.model.DynamicsModel` whose backbone is a
  sequential ``torch.nn.GRU`` (:class:`TorchGRUBackbone`): same inputs, heads and losses as the
  ParaRNN model, trained by the same :class:`~pararnn_ts.world.module.WorldModelModule` (``cell="torch_gru"``).

Their predictors share the signature of ``DynamicsModel.imagine``: ``(context_obs (B, C, O),
context_actions (B, C-1, A), plan (B, H, A)) → obs (B, H, O)``, so
:func:`~pararnn_ts.world.evaluate.k_step_errors` scores them alike.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .collect import Episode
from .model import DynamicsModel, Normalizer, gaussian_nll, soft_clamp


def persistence(context_obs: Tensor, context_actions: Tensor, plan: Tensor) -> Tensor:
    """The last context observation repeated: ``(B, C, O)``, ``(B, C-1, A)``, ``(B, H, A)`` → ``(B, H, O)``."""
    return context_obs[:, -1:].expand(-1, plan.shape[1], -1)


# ---- sequential nn.GRU ----------------------------------------------------------------------
class TorchGRUBackbone(nn.Module):
    """A ``torch.nn.GRU`` stack of ``num_layers`` layers of width ``dim``, run step by step by cuDNN/ATen.

    Shapes: ``forward`` ``(B, T, dim)`` → ``(B, T, dim)``, ``step`` ``(B, dim)`` → ``(B, dim)``; the
    state is batch-first ``(B, num_layers, dim)`` so that it can be repeated per candidate plan.
    """

    def __init__(self, dim: int, num_layers: int = 2) -> None:
        super().__init__()
        if not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"TorchGRUBackbone: num_layers must be a positive int, got {num_layers!r}")
        self.gru = nn.GRU(dim, dim, num_layers, batch_first=True)

    def init_state(self, batch: int, device: torch.device | None = None, dtype: torch.dtype | None = None) -> Tensor:
        return torch.zeros(batch, self.gru.num_layers, self.gru.hidden_size, device=device, dtype=dtype)

    def forward(self, x: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        y, h = self.gru(x, state.transpose(0, 1).contiguous())
        return y, h.transpose(0, 1)

    def step(self, x_t: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        y, state = self(x_t.unsqueeze(1), state)
        return y[:, 0], state


def torch_gru_model(
    obs_dim: int, action_dim: int, hidden_size: int = 128, num_layers: int = 2, **kwargs: Any
) -> DynamicsModel:
    """A :class:`DynamicsModel` on :class:`TorchGRUBackbone`; ``kwargs``: the model's head options."""
    backbone = TorchGRUBackbone(hidden_size, num_layers)
    return DynamicsModel(obs_dim, action_dim, hidden_size=hidden_size, backbone=backbone, **kwargs)


# ---- PETS-style MLP ensemble ----------------------------------------------------------------
class EnsembleLinear(nn.Module):
    """``E`` independent linear layers applied at once: ``(E, N, in)`` → ``(E, N, out)``."""

    def __init__(self, ensemble_size: int, in_features: int, out_features: int) -> None:
        super().__init__()
        bound = 1 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(ensemble_size, in_features, out_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(ensemble_size, 1, out_features).uniform_(-bound, bound))

    def forward(self, x: Tensor) -> Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class MLPEnsemble(nn.Module):
    """``ensemble_size`` probabilistic MLPs ``[ô_t, â_t] → (mean, log-std)`` of the normalised delta.

    Args:
        obs_dim, action_dim: ``O`` and ``A`` (model action units, one-hot for Discrete).
        hidden_size: width of the hidden layers.
        num_layers: hidden layers (SiLU).
        ensemble_size: members, each trained on its own bootstrap of the data.
        min_log_std, max_log_std: soft bounds of the log-std.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden_size: int = 200,
        num_layers: int = 3,
        ensemble_size: int = 5,
        min_log_std: float = -6.0,
        max_log_std: float = 1.0,
    ) -> None:
        super().__init__()
        for name, value in (("hidden_size", hidden_size), ("num_layers", num_layers), ("ensemble_size", ensemble_size)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"MLPEnsemble: {name} must be a positive int, got {value!r}")
        self.obs_dim, self.action_dim, self.ensemble_size = obs_dim, action_dim, ensemble_size
        self.min_log_std, self.max_log_std = min_log_std, max_log_std
        self.normalizer = Normalizer(obs_dim, action_dim)
        sizes = [obs_dim + action_dim] + [hidden_size] * num_layers
        layers: list[nn.Module] = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [EnsembleLinear(ensemble_size, n_in, n_out), nn.SiLU()]
        self.body = nn.Sequential(*layers, EnsembleLinear(ensemble_size, hidden_size, 2 * obs_dim))

    def set_normalizer(self, stats: Mapping[str, Any]) -> None:
        self.normalizer.set(stats)

    def forward(self, obs: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
        """Raw ``obs`` ``(E, N, O)`` and ``action`` ``(E, N, A)`` → normalised delta mean and log-std ``(E, N, O)``."""
        x = torch.cat([self.normalizer.obs(obs), self.normalizer.action(action)], dim=-1)
        mean, log_std = self.body(x).chunk(2, dim=-1)
        return mean, soft_clamp(log_std, self.min_log_std, self.max_log_std)

    def nll(self, obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
        """Mean Gaussian NLL of the normalised deltas, ``(E, N, ...)`` inputs, over members, rows and dims."""
        mean, log_std = self(obs, action)
        return gaussian_nll(self.normalizer.delta(next_obs, obs), mean, log_std).mean()

    def rollout(
        self,
        context_obs: Tensor,
        context_actions: Tensor,
        plan: Tensor,
        sample: bool = False,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Each member rolls out its own trajectory from ``o_{C-1}`` (earlier context is unused: the
        model is Markov); returns the members' mean ``(B, H, O)``. ``sample``: draw each delta from
        the member's Gaussian instead of taking its mean."""
        obs = context_obs[:, -1].expand(self.ensemble_size, -1, -1)
        path = []
        for k in range(plan.shape[1]):
            mean, log_std = self(obs, plan[:, k].expand(self.ensemble_size, -1, -1))
            if sample:
                noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
                mean = mean + log_std.exp() * noise
            obs = obs + self.normalizer.raw_delta(mean)
            path.append(obs.mean(0))
        return torch.stack(path, dim=1)


def transitions(episodes: list[Episode]) -> tuple[Tensor, Tensor, Tensor]:
    """``obs``, ``action``, ``next_obs`` of all steps of ``episodes`` as float32 tensors ``(N, ...)``."""
    return tuple(
        torch.from_numpy(np.concatenate([getattr(e, f) for e in episodes])).float()
        for f in ("obs", "action", "next_obs")
    )


def fit_mlp_ensemble(
    model: MLPEnsemble,
    train_episodes: list[Episode],
    val_episodes: list[Episode] | None = None,
    epochs: int = 50,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
) -> list[dict[str, float]]:
    """Train ``model`` (its normaliser already set) on bootstrapped transitions with the Gaussian NLL.

    Each member draws its own bootstrap of the training transitions (with replacement) and its own
    batch order every epoch. With ``val_episodes``, the weights of the epoch with the lowest
    validation NLL are kept. Returns ``[{"epoch", "train_nll", "val_nll"?}, ...]``.
    """
    generator = torch.Generator().manual_seed(seed)
    data = transitions(train_episodes)
    n = len(data[0])
    boot = torch.randint(n, (model.ensemble_size, n), generator=generator)
    val = transitions(val_episodes) if val_episodes else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    history, best = [], (math.inf, None)
    for epoch in range(epochs):
        model.train()
        order = torch.stack([b[torch.randperm(n, generator=generator)] for b in boot])
        total = 0.0
        for start in range(0, n, batch_size):
            rows = order[:, start : start + batch_size]
            loss = model.nll(*(x[rows] for x in data))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * rows.shape[1]
        record = {"epoch": epoch, "train_nll": total / n}
        if val is not None:
            model.eval()
            with torch.no_grad():
                record["val_nll"] = model.nll(*(x.expand(model.ensemble_size, *x.shape) for x in val)).item()
            if record["val_nll"] < best[0]:
                best = (record["val_nll"], copy.deepcopy(model.state_dict()))
        history.append(record)
    if best[1] is not None:
        model.load_state_dict(best[1])
    model.eval()
    return history
