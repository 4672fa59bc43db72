"""Sampling-based MPC planners over a learned dynamics model: ``CEMPlanner`` and ``MPPIPlanner``.

Planners are kept apart from models (as in mbrl-lib): they see the model only through
:func:`~pararnn_ts.world.vector_env.rollout`, which scores a whole population of candidate plans
with ONE parallel solve over the horizon. Each call of :meth:`SamplingPlanner.plan` runs
``iterations`` rounds of *sample → score → refit* of a distribution over plans of ``horizon``
steps, returns the first action of the refitted plan, and keeps the rest, shifted by one step,
as the warm start of the next call.

    planner = CEMPlanner(model, env.action_space, horizon=30, population=400)
    action = planner.plan(history_obs, history_actions)      # (C, O), (C-1, ...) real history
    planner.reset()                                          # at the start of an episode

Box actions are planned as independent Gaussians per step and action feature, samples clipped
to the bounds; Discrete actions as independent categorical distributions per step, sampled as
one-hot sequences.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn

from .collect import check_action_space
from .env import (
    ActionSpace,
    Outcome,
    RewardFn,
    TerminationFn,
    action_vectors,
    check_model_spaces,
    check_observations,
    model_like,
)
from .vector_env import rollout


class GaussianPlans:
    """Independent Gaussians over Box plans ``(H, A)``; samples clipped to ``[low, high]``.

    ``init_std`` is a fraction of ``high − low``; the initial mean is the middle of the bounds.
    """

    def __init__(self, space: spaces.Box, horizon: int, init_std: float, like: Tensor) -> None:
        if not (np.isfinite(space.low).all() and np.isfinite(space.high).all()):
            raise ValueError(f"planning needs bounded Box actions, got {space}")
        self.low, self.high = (
            torch.as_tensor(b, dtype=like.dtype, device=like.device) for b in (space.low, space.high)
        )
        self.horizon, self.dtype = horizon, space.dtype
        self.init_mean = (self.low + self.high) / 2
        self.init_std = init_std * (self.high - self.low)
        self.reset()

    def reset(self) -> None:
        self.mean = self.init_mean.expand(self.horizon, -1).clone()
        self.std = self.init_std.expand(self.horizon, -1).clone()

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """``n`` plans ``(n, H, A)``; the first is the current mean."""
        noise = torch.randn(n, *self.mean.shape, generator=generator, dtype=self.mean.dtype, device=self.mean.device)
        noise[0] = 0
        return torch.clamp(self.mean + self.std * noise, self.low, self.high)

    def fit(self, samples: Tensor, weights: Tensor, smoothing: float, spread: bool) -> None:
        """Move to the ``weights``-weighted mean (and spread) of ``samples``, keeping ``smoothing`` of the old."""
        w = weights[:, None, None]
        mean = (w * samples).sum(0)
        if spread:
            std = (w * (samples - mean) ** 2).sum(0).sqrt()
            self.std = smoothing * self.std + (1 - smoothing) * std
        self.mean = smoothing * self.mean + (1 - smoothing) * mean

    def first_action(self) -> np.ndarray:
        return self.mean[0].cpu().numpy().astype(self.dtype)

    def shift(self) -> None:
        """Warm start: the plan without its first step, the initial mean appended; the initial spread."""
        self.mean = torch.cat([self.mean[1:], self.init_mean[None]])
        self.std = self.init_std.expand(self.horizon, -1).clone()


class CategoricalPlans:
    """Independent categorical distributions over Discrete plans, sampled as one-hot ``(H, n)`` sequences."""

    def __init__(self, space: spaces.Discrete, horizon: int, like: Tensor) -> None:
        self.start, self.horizon = int(space.start), horizon
        self.uniform = like.new_full((int(space.n),), 1 / int(space.n))
        self.reset()

    def reset(self) -> None:
        self.probs = self.uniform.expand(self.horizon, -1).clone()

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """``n`` one-hot plans ``(n, H, K)``; the first takes each step's most likely action."""
        index = torch.multinomial(self.probs, n, replacement=True, generator=generator).T
        index[0] = self.probs.argmax(-1)
        return nn.functional.one_hot(index, len(self.uniform)).to(self.probs.dtype)

    def fit(self, samples: Tensor, weights: Tensor, smoothing: float, spread: bool) -> None:
        """Move to the ``weights``-weighted action frequencies of ``samples``, keeping ``smoothing`` of the old."""
        self.probs = smoothing * self.probs + (1 - smoothing) * (weights[:, None, None] * samples).sum(0)

    def first_action(self) -> np.int64:
        return np.int64(self.probs[0].argmax().item() + self.start)

    def shift(self) -> None:
        """Warm start: the plan without its first step, a uniform step appended, all blended half with uniform."""
        probs = torch.cat([self.probs[1:], self.uniform[None]])
        self.probs = (probs + self.uniform) / 2


class SamplingPlanner:
    """Base of :class:`CEMPlanner` and :class:`MPPIPlanner`: sample, score with one solve, refit.

    Args:
        model: a dynamics model (:class:`~pararnn_ts.world.model.DynamicsModel` interface).
        action_space: the real env's action space (bounded Box, or Discrete).
        horizon: planned steps.
        population: candidate plans scored per iteration, in one parallel solve.
        iterations: sample → score → refit rounds per :meth:`plan`.
        smoothing: share of the old distribution kept at each refit.
        init_std: initial standard deviation of Box plans, as a fraction of ``high − low``.
        context: most real observations of the history the model sees (``None``: all); long
            episodes otherwise grow every solve.
        reward_fn, termination_fn: see :class:`~pararnn_ts.world.env.Outcome`
            (default: the model's learned heads). Candidates are scored by their expected return
            under the predicted terminations (see :func:`~pararnn_ts.world.vector_env.rollout`).
        seed: of the planner's sampling generator.
        observation_space: the real env's observation space (a 1-D Box): :meth:`plan` then refuses
            observations outside it, as :class:`~pararnn_ts.world.env.WorldModelEnv` refuses such histories.
            ``None``: only their shape and finiteness are checked.
    """

    #: whether a refit also fits the spread (CEM) or keeps the sampling noise fixed (MPPI)
    fits_spread = True

    def __init__(
        self,
        model: nn.Module,
        action_space: ActionSpace,
        horizon: int = 30,
        population: int = 400,
        iterations: int = 5,
        smoothing: float = 0.1,
        init_std: float = 0.25,
        context: int | None = None,
        reward_fn: RewardFn | None = None,
        termination_fn: TerminationFn | None = None,
        seed: int = 0,
        observation_space: spaces.Box | None = None,
    ) -> None:
        name = type(self).__name__
        for arg, value in (("horizon", horizon), ("population", population), ("iterations", iterations)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: {arg} must be a positive int, got {value!r}")
        if context is not None and context < 1:
            raise ValueError(f"{name}: context must be a positive int or None (the whole history), got {context!r}")
        if not 0 <= smoothing < 1:
            raise ValueError(f"{name}: smoothing must lie in [0, 1), got {smoothing}")
        if not init_std > 0:
            raise ValueError(f"{name}: init_std must be > 0 (a fraction of the action range), got {init_std}")
        check_action_space(action_space, f"{name}'s action_space")
        self.model, self.action_space, self.observation_space = model, action_space, observation_space
        self.observation_dim = model.obs_dim
        check_model_spaces(model, observation_space, action_space)
        self.population, self.iterations, self.smoothing, self.context = population, iterations, smoothing, context
        self.outcome = Outcome(reward_fn, termination_fn)
        self.like = model_like(model)
        self.generator = torch.Generator(self.like.device).manual_seed(seed)
        if isinstance(action_space, spaces.Box):
            self.plans: GaussianPlans | CategoricalPlans = GaussianPlans(action_space, horizon, init_std, self.like)
        else:
            self.plans = CategoricalPlans(action_space, horizon, self.like)

    def reset(self) -> None:
        """Forget the warm start (call at the start of an episode)."""
        self.plans.reset()

    @torch.no_grad()
    def plan(self, history_obs: Any, history_actions: Any = None) -> Any:
        """The next action, in the env's form, given the real history so far.

        Args:
            history_obs: real observations ``(C, O)`` (or ``(O,)``), the last being the current one.
            history_actions: the ``C − 1`` actions taken between them, in the env's form (Box
                ``(C-1, A)``, Discrete ``(C-1,)``) or as model vectors ``(C-1, A)``; ``None`` when ``C = 1``.
        """
        obs = self._observations(history_obs)
        actions = self._action_vectors(history_actions, len(obs) - 1)
        if self.context is not None:
            obs, actions = obs[-self.context :], actions[len(actions) - min(self.context - 1, len(actions)) :]
        for _ in range(self.iterations):
            candidates = self.plans.sample(self.population, self.generator)
            returns = rollout(self.model, obs, candidates, actions, self.outcome, action_space=self.action_space)
            returns = torch.nan_to_num(returns, nan=-torch.inf)
            if not torch.isfinite(returns).any():  # no usable prediction: keep the distribution
                continue
            self.plans.fit(candidates, self.weights(returns), self.smoothing, self.fits_spread)
        action = self.plans.first_action()
        self.plans.shift()
        return action

    def weights(self, returns: Tensor) -> Tensor:
        """Weights ``(N,)`` summing to 1 that the refit gives to candidates with ``returns`` ``(N,)``."""
        raise NotImplementedError

    def _observations(self, history_obs: Any) -> Tensor:
        """Real observations ``(C, O)`` (or ``(O,)``) as the model's ``(C, O)`` tensor; refused unless of that shape,
        finite and (with an ``observation_space``) inside it."""
        obs = np.asarray(history_obs, dtype=np.float64)
        obs = obs[None] if obs.ndim == 1 else obs
        if obs.ndim != 2 or obs.shape[1] != self.observation_dim or len(obs) == 0:
            raise ValueError(
                f"history_obs must be real observations of shape (C, {self.observation_dim}) or "
                f"({self.observation_dim},), got shape {np.shape(history_obs)}"
            )
        check_observations(self.observation_space, obs, "history_obs")
        return torch.as_tensor(obs, dtype=self.like.dtype, device=self.like.device)

    def _action_vectors(self, history_actions: Any, expected: int) -> Tensor:
        actions = np.asarray([] if history_actions is None else history_actions)
        if actions.size == 0:  # e.g. np.array([]) at the start of an episode
            actions = actions.reshape(0, *self.action_space.shape)
        if isinstance(self.action_space, spaces.Discrete) and actions.ndim == 2:  # already one-hot
            n = int(self.action_space.n)
            one_hot = actions.shape[1] == n and np.isin(actions, (0, 1)).all() and (actions.sum(axis=1) == 1).all()
            if actions.size and not one_hot:
                raise ValueError(
                    f"history_actions of shape {actions.shape} are taken as one-hot vectors, each {n} numbers of "
                    f"which one is 1 and the others 0, for the action space {self.action_space}; they are not "
                    "(pass the actions as integers, shape (C-1,))"
                )
            vectors = torch.as_tensor(actions, dtype=self.like.dtype, device=self.like.device)
        else:
            vectors = action_vectors(self.action_space, actions, self.like, ("C-1",), "history_actions")
        if vectors.dim() != 2 or len(vectors) != expected:
            raise ValueError(
                f"history_actions must hold one action fewer than history_obs ({expected}), got shape {actions.shape}"
            )
        return vectors


class CEMPlanner(SamplingPlanner):
    """Cross-entropy method: refit the plan distribution to the ``elites`` best candidates (equal weights).

    Box plans refit mean and standard deviation, Discrete plans the action frequencies of the
    elites. ``elites=None``: a tenth of the population (at least 1; 40 of the default 400). See
    :class:`SamplingPlanner` for the other arguments.
    """

    def __init__(
        self, model: nn.Module, action_space: ActionSpace, *, elites: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(model, action_space, **kwargs)
        elites = max(1, self.population // 10) if elites is None else elites
        if not isinstance(elites, int) or not 1 <= elites <= self.population:
            raise ValueError(f"CEMPlanner: elites must be an int in [1, population={self.population}], got {elites!r}")
        self.elites = elites

    def weights(self, returns: Tensor) -> Tensor:
        weights = torch.zeros_like(returns)
        weights[returns.topk(self.elites).indices] = 1 / self.elites
        return weights


class MPPIPlanner(SamplingPlanner):
    """Model-predictive path integral control: weights ``softmax(returns / temperature)``, fixed sampling noise.

    Box plans move their mean to the weighted mean of the candidates and keep the noise
    ``init_std`` (a fraction of the action range); Discrete plans move to the weighted action
    frequencies. See :class:`SamplingPlanner` for the other arguments.
    """

    fits_spread = False

    def __init__(
        self,
        model: nn.Module,
        action_space: ActionSpace,
        *,
        temperature: float = 1.0,
        smoothing: float = 0.0,
        init_std: float = 0.3,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, action_space, smoothing=smoothing, init_std=init_std, **kwargs)
        if not temperature > 0:
            raise ValueError(f"MPPIPlanner: temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def weights(self, returns: Tensor) -> Tensor:
        return torch.softmax(returns / self.temperature, dim=0)
