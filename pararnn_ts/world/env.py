"""``WorldModelEnv``: a learned dynamics model served as a ``gymnasium.Env``.

The model follows the :class:`~pararnn_ts.world.model.DynamicsModel` interface (DESIGN.md §6)::

    state = model.initial_state(batch_size)
    state, pred = model.observe(state, obs (B, O), action (B, A))            # real observation
    state, pred = model.imagine_step(state, last_obs_estimate (B, O), action (B, A))  # masked step
    pred = model.imagine(context_obs (B, C, O), context_actions (B, C-1, A), plan (B, H, A))

where ``pred`` has ``obs`` / ``obs_std`` (``(B, O)`` per step, ``(B, H, O)`` for ``imagine``),
``reward`` (``(B,)`` or ``(B, H)``; ``None`` without a reward head) and ``terminated``
(probabilities, same shapes; zeros or ``None`` without a termination head).

A closed-loop episode observes its real start (the last real observation is observed together
with the first action), then only imagines, feeding each predicted mean back as the next
observation estimate. Stepping it with the actions of a plan therefore gives exactly
``model.imagine``'s open-loop prediction of that plan, one parallel solve.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, SupportsFloat

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn

from .collect import action_dim, check_spaces

#: ``reward_fn(obs (..., O), action (..., A), next_obs (..., O)) -> (...)``, on torch tensors, actions as
#: model vectors (Discrete: one-hot)
RewardFn = Callable[[Tensor, Tensor, Tensor], Tensor]
#: ``termination_fn(obs, action, next_obs) -> (...)`` bool, same shapes as :data:`RewardFn`
TerminationFn = Callable[[Tensor, Tensor, Tensor], Tensor]
ActionSpace = spaces.Box | spaces.Discrete
StartSource = gym.Env | np.ndarray | Sequence[Sequence[float]]


# ---- spaces and actions -------------------------------------------------------------------------
def action_vectors(action_space: ActionSpace, actions: Any, like: Tensor) -> Tensor:
    """Env actions → model action vectors ``(..., A)`` in ``like``'s dtype and device (torch, batched).

    Box actions ``(..., A)`` are clipped to the space's bounds (as the real envs do); Discrete
    actions ``(...)`` (integers) become one-hot vectors ``(..., n)``.
    """
    if isinstance(action_space, spaces.Discrete):
        index = torch.as_tensor(np.asarray(actions), device=like.device).long() - int(action_space.start)
        if ((index < 0) | (index >= action_space.n)).any():
            raise ValueError(f"actions must lie in {action_space}, got {actions}")
        return nn.functional.one_hot(index, int(action_space.n)).to(like.dtype)
    vector = torch.as_tensor(np.asarray(actions, dtype=np.float64), dtype=like.dtype, device=like.device)
    if vector.shape[-1:] != action_space.shape:
        raise ValueError(
            f"actions must end in shape {action_space.shape} for {action_space}, got {tuple(vector.shape)}"
        )
    low, high = (
        torch.as_tensor(b, dtype=like.dtype, device=like.device) for b in (action_space.low, action_space.high)
    )
    return torch.minimum(torch.maximum(vector, low), high)


def read_spaces(
    env: str | gym.Env | None,
    observation_space: spaces.Space | None = None,
    action_space: spaces.Space | None = None,
) -> tuple[spaces.Box, ActionSpace]:
    """The spaces given, else those of ``env`` (an env or a registered id); checked to be usable."""
    if observation_space is None or action_space is None:
        if env is None:
            raise ValueError(
                "give observation_space and action_space, or env (a gymnasium.Env or an env id) to read them"
            )
        real = gym.make(env) if isinstance(env, str) else env
        observation_space = observation_space or real.observation_space
        action_space = action_space or real.action_space
        if isinstance(env, str):
            real.close()
    check_spaces(observation_space, action_space)
    for name, space in (("observation_space", observation_space), ("action_space", action_space)):
        if isinstance(space, spaces.Box) and len(space.shape) != 1:
            raise ValueError(f"{name} must be 1-D, got shape {space.shape}; flatten it (gymnasium.wrappers.Flatten*)")
    return observation_space, action_space


def check_model_spaces(model: nn.Module, observation_space: spaces.Box | None, action_space: ActionSpace) -> None:
    """Raise ``ValueError`` if ``model.obs_dim`` / ``model.action_dim`` do not fit the spaces (``None``: unchecked)."""
    if observation_space is not None and model.obs_dim != observation_space.shape[0]:
        raise ValueError(
            f"the model predicts {model.obs_dim} observation features but observation_space {observation_space} has "
            f"{observation_space.shape[0]}; pass the spaces of the env the model was trained on"
        )
    if model.action_dim != action_dim(action_space):
        kind = "one-hot Discrete actions" if isinstance(action_space, spaces.Discrete) else "Box actions"
        raise ValueError(
            f"the model takes {model.action_dim} action features but action_space {action_space} gives "
            f"{action_dim(action_space)} ({kind}); pass the spaces of the env the model was trained on"
        )


def model_like(model: nn.Module) -> Tensor:
    """An empty tensor in the dtype and on the device of the model's parameters (float32 on CPU without any)."""
    p = next(model.parameters(), None)
    return torch.empty(0) if p is None else p.new_empty(0)


# ---- rewards and terminations -------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    """Reward and termination of imagined transitions: user functions, else the model's learned heads.

    Args:
        reward_fn: ``reward_fn(obs, action, next_obs) -> reward`` on torch tensors ``(..., O)``,
            ``(..., A)`` (model vectors: Discrete one-hot), ``(..., O)`` → ``(...)``; default: the
            prediction's ``reward``.
        termination_fn: same signature, returning bools; default: the prediction's ``terminated``
            probability (0 without a termination head).
        termination_threshold: an env episode ends when that probability exceeds it.
    """

    reward_fn: RewardFn | None = None
    termination_fn: TerminationFn | None = None
    termination_threshold: float = 0.5

    def __call__(self, obs: Tensor, action: Tensor, pred: Any, next_obs: Tensor) -> tuple[Tensor, Tensor]:
        """Reward ``(...)`` and end probability ``(...)`` of transitions ``obs, action → next_obs`` (``pred``).

        The end probability is that of the episode ending at ``next_obs``: 0 or 1 from ``termination_fn``.
        """
        batch, device = next_obs.shape[:-1], next_obs.device
        if self.reward_fn is not None:
            reward = torch.as_tensor(self.reward_fn(obs, action, next_obs), dtype=next_obs.dtype, device=device)
        elif pred.reward is not None:
            reward = pred.reward
        else:
            raise ValueError("the model has no reward head (learn_reward=False): pass reward_fn")
        if self.termination_fn is not None:
            ends = torch.as_tensor(self.termination_fn(obs, action, next_obs), device=device).to(next_obs.dtype)
        elif pred.terminated is not None:
            ends = pred.terminated
        else:
            ends = torch.zeros(batch, dtype=next_obs.dtype, device=device)
        return reward.expand(batch), ends.expand(batch)

    def terminated(self, end_probability: Tensor) -> Tensor:
        """Whether episodes end (bool): ``end_probability > termination_threshold``."""
        return end_probability > self.termination_threshold


# ---- real start states --------------------------------------------------------------------------
class StartSampler:
    """Draws real starts: a history of ``context`` observations and the ``context − 1`` actions between them.

    ``source``: real observations ``(N, O)`` (a row is drawn; ``context`` must be 1), or a real env
    (or its id) that is reset and driven by ``context − 1`` random actions.
    """

    def __init__(
        self, source: StartSource | str, observation_space: spaces.Box, action_space: ActionSpace, context: int = 1
    ) -> None:
        if context < 1:
            raise ValueError(f"context must be >= 1 real observations, got {context}")
        if isinstance(source, str):
            source = gym.make(source)
        if not isinstance(source, gym.Env):
            starts = np.asarray(source, dtype=np.float64)
            starts = starts[None] if starts.ndim == 1 else starts
            if starts.ndim != 2 or starts.shape[1:] != observation_space.shape or len(starts) == 0:
                raise ValueError(
                    f"start_states must be real observations of shape (N, {observation_space.shape[0]}), "
                    f"got {np.shape(source)}"
                )
            if context > 1:
                raise ValueError(f"context={context} needs a real env to reset as start_states (arrays give 1 step)")
            source = starts
        self.source, self.context = source, context
        self.no_actions = np.zeros((0, *action_space.shape), dtype=action_space.dtype)

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``(history_obs (C, O), history_actions (C-1, ...))``, actions in the real env's form."""
        if not isinstance(self.source, gym.Env):
            return self.source[rng.integers(len(self.source))][None], self.no_actions.copy()
        real = self.source
        real.action_space.seed(int(rng.integers(2**31)))
        while True:  # a warm-up that ends its episode is drawn again
            obs, _ = real.reset(seed=int(rng.integers(2**31)))
            history_obs, history_actions = [obs], []
            for _ in range(self.context - 1):
                history_actions.append(real.action_space.sample())
                obs, _, terminated, truncated, _ = real.step(history_actions[-1])
                history_obs.append(obs)
                if terminated or truncated:
                    break
            else:
                return np.stack(history_obs), np.array(history_actions).reshape(-1, *self.no_actions.shape[1:])


# ---- batched closed-loop imagination ------------------------------------------------------------
def _map_state(fn: Callable[..., Tensor], *states: Any) -> Any:
    """Apply ``fn`` to the matching tensors of model states (tensors, or tuples/lists/dicts of them)."""
    first = states[0]
    if isinstance(first, Tensor):
        return fn(*states)
    if isinstance(first, dict):
        return {k: _map_state(fn, *(s[k] for s in states)) for k in first}
    if isinstance(first, tuple | list):
        return type(first)(_map_state(fn, *parts) for parts in zip(*states, strict=True))
    raise TypeError(f"model states must be tensors or tuples/lists/dicts of them, got {type(first).__name__}")


class _Merged(NamedTuple):
    obs: Tensor
    obs_std: Tensor
    reward: Tensor | None
    terminated: Tensor | None


def _merge_predictions(preds: list[tuple[Tensor, Any]], k: int) -> _Merged:
    """One prediction of ``k`` rows from the predictions of disjoint subsets ``where`` of them."""
    fields = {}
    for name in _Merged._fields:
        parts = [(where, getattr(pred, name)) for where, pred in preds]
        if any(p is None for _, p in parts):
            fields[name] = None
            continue
        out = parts[0][1].new_empty(k, *parts[0][1].shape[1:])
        for where, p in parts:
            out[where] = p
        fields[name] = out
    return _Merged(**fields)


class Transition(NamedTuple):
    """One closed-loop step of ``k`` episodes."""

    obs: Tensor  #: (k, O) next observation (the mean, or a sample), unclipped
    obs_std: Tensor  #: (k, O) the model's predicted standard deviation
    reward: Tensor  #: (k,)
    terminated: Tensor  #: (k,) bool


class ImaginedEpisodes:
    """``n`` closed-loop imagined episodes of ``model``: what :class:`WorldModelEnv` and the vector env share.

    Rows are (re)started from real histories with :meth:`restart`; a row's first step after that
    observes its last real observation (``model.observe``), its later steps imagine
    (``model.imagine_step``) from the previous step's observation. Model states must be batch-first.
    Arguments are those of :class:`WorldModelEnv`.
    """

    def __init__(
        self,
        model: nn.Module,
        n: int,
        env: str | gym.Env | None = None,
        *,
        observation_space: spaces.Box | None = None,
        action_space: ActionSpace | None = None,
        start_states: StartSource | None = None,
        reward_fn: RewardFn | None = None,
        termination_fn: TerminationFn | None = None,
        termination_threshold: float = 0.5,
        max_episode_steps: int | None = None,
        sample: bool = False,
        context: int = 1,
    ) -> None:
        if n < 1:
            raise ValueError(f"the number of episodes must be >= 1, got {n}")
        self.observation_space, self.action_space = read_spaces(env, observation_space, action_space)
        check_model_spaces(model, self.observation_space, self.action_space)
        if max_episode_steps is None and isinstance(env, str | gym.Env):
            spec = gym.spec(env) if isinstance(env, str) else env.spec
            max_episode_steps = None if spec is None else spec.max_episode_steps
        if max_episode_steps is not None and max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1 (or None: no limit), got {max_episode_steps}")
        source = start_states if start_states is not None else env
        if source is None:
            raise ValueError("give start_states (real observations (N, O), or a real env to reset) or env")
        self.starts = StartSampler(source, self.observation_space, self.action_space, context)
        self.outcome = Outcome(reward_fn, termination_fn, termination_threshold)
        self.max_episode_steps, self.sample = max_episode_steps, sample
        self.model, self.n = model.eval(), n
        self.like = model_like(model)
        self.state = model.initial_state(n)
        self.last_obs = self.like.new_zeros(n, self.observation_space.shape[0])
        self.observed = torch.zeros(n, dtype=torch.bool, device=self.like.device)

    def encode(self, actions: Any) -> Tensor:
        """Env actions → model vectors ``(..., A)`` (see :func:`action_vectors`)."""
        return action_vectors(self.action_space, actions, self.like)

    def to_obs(self, obs: Tensor) -> np.ndarray:
        """Observations as the space's dtype, clipped to its bounds."""
        space = self.observation_space
        return np.clip(obs.detach().cpu().numpy(), space.low, space.high).astype(space.dtype)

    @torch.no_grad()
    def restart(self, rows: Tensor, history_obs: Any, history_actions: Any) -> None:
        """Restart rows ``rows`` (k,) from real ``history_obs`` ``(k, C, O)``, ``history_actions`` ``(k, C-1, ...)``."""
        obs = torch.as_tensor(np.asarray(history_obs, dtype=np.float64), dtype=self.like.dtype, device=self.like.device)
        actions = self.encode(history_actions)
        if obs.dim() != 3 or obs.shape[-1] != self.observation_space.shape[0] or actions.shape[1] != obs.shape[1] - 1:
            raise ValueError(
                f"history_obs must be (C, {self.observation_space.shape[0]}) real observations and history_actions "
                f"hold C - 1 actions, got {tuple(obs.shape[1:])} and {actions.shape[1]} actions"
            )
        state = self.model.initial_state(len(rows))
        for t in range(actions.shape[1]):
            state, _ = self.model.observe(state, obs[:, t], actions[:, t])
        self.state = self._put(rows, state)
        self.last_obs[rows] = obs[:, -1]
        self.observed[rows] = True

    @torch.no_grad()
    def step(self, rows: Tensor, actions: Tensor, rng: np.random.Generator) -> Transition:
        """Advance rows ``rows`` (k,) by model action vectors ``(k, A)``; ``rng`` draws ``sample=True``'s noise."""
        preds = []
        for observed, method in ((True, self.model.observe), (False, self.model.imagine_step)):
            where = (self.observed[rows] == observed).nonzero().squeeze(1)
            if len(where):
                state, pred = method(self._take(rows[where]), self.last_obs[rows[where]], actions[where])
                self.state = self._put(rows[where], state)
                preds.append((where, pred))
        pred = preds[0][1] if len(preds) == 1 else _merge_predictions(preds, len(rows))
        obs = pred.obs
        if self.sample:
            noise = torch.as_tensor(rng.standard_normal(tuple(obs.shape)), dtype=obs.dtype, device=obs.device)
            obs = obs + pred.obs_std * noise
        reward, ends = self.outcome(self.last_obs[rows], actions, pred, obs)
        self.last_obs[rows] = obs
        self.observed[rows] = False
        return Transition(obs, pred.obs_std, reward, self.outcome.terminated(ends))

    def _take(self, rows: Tensor) -> Any:
        if len(rows) == self.n:
            return self.state
        return _map_state(lambda s: s[rows], self.state)

    def _put(self, rows: Tensor, part: Any) -> Any:
        if len(rows) == self.n:
            return part
        return _map_state(lambda s, p: s.index_copy(0, rows, p.to(s.dtype)), self.state, part)


# ---- the env ------------------------------------------------------------------------------------
class WorldModelEnv(gym.Env):
    """A trained dynamics model as a Gymnasium env: ``reset`` starts from a real state, ``step`` imagines.

    Args:
        model: a dynamics model with the interface of :class:`~pararnn_ts.world.model.DynamicsModel`
            (``obs_dim``, ``action_dim``, ``initial_state``, ``observe``, ``imagine_step``); put in
            eval mode, it is not trained through the env.
        env: the real env (or its registered id): where the spaces are read from when not given,
            and the source of start states when ``start_states`` is ``None``.
        observation_space, action_space: the real env's spaces (a 1-D Box; a 1-D Box or Discrete).
            The model's ``obs_dim`` / ``action_dim`` must match (Discrete actions are one-hot).
        start_states: real start observations ``(N, O)`` (reset draws one row), or a real env to reset.
        reward_fn, termination_fn, termination_threshold: see :class:`Outcome` (default: the
            model's learned heads, terminated when the probability exceeds 0.5).
        max_episode_steps: episodes are truncated after this many steps; default: the real env's
            ``spec.max_episode_steps`` when ``env`` is given, else no limit.
        sample: return ``mean + std · ε`` (``ε`` from the env's seeded generator) instead of the mean.
        context: real steps a reset observes when start states come from a real env: it is reset, then
            driven by ``context − 1`` random actions, and the model observes all of it.

    ``reset(options={"history_obs": (C, O), "history_actions": (C-1, ...)})`` starts from that real
    history instead. Observations come in the observation space's dtype, clipped to its bounds
    (the model goes on from the unclipped prediction); ``info["obs_std"]`` is the predicted spread.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        model: nn.Module,
        env: str | gym.Env | None = None,
        *,
        observation_space: spaces.Box | None = None,
        action_space: ActionSpace | None = None,
        start_states: StartSource | None = None,
        reward_fn: RewardFn | None = None,
        termination_fn: TerminationFn | None = None,
        termination_threshold: float = 0.5,
        max_episode_steps: int | None = None,
        sample: bool = False,
        context: int = 1,
    ) -> None:
        self.episodes = ImaginedEpisodes(
            model,
            1,
            env,
            observation_space=observation_space,
            action_space=action_space,
            start_states=start_states,
            reward_fn=reward_fn,
            termination_fn=termination_fn,
            termination_threshold=termination_threshold,
            max_episode_steps=max_episode_steps,
            sample=sample,
            context=context,
        )
        self.observation_space, self.action_space = self.episodes.observation_space, self.episodes.action_space
        self.model, self.max_episode_steps = model, self.episodes.max_episode_steps
        self._row = torch.zeros(1, dtype=torch.long, device=self.episodes.like.device)
        self._steps: int | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        options = options or {}
        if "history_obs" in options:
            history_obs = np.asarray(options["history_obs"], dtype=np.float64)
            history_obs = history_obs[None] if history_obs.ndim == 1 else history_obs
            history_actions = options.get("history_actions", self.episodes.starts.no_actions)
        else:
            history_obs, history_actions = self.episodes.starts.draw(self.np_random)
        self.episodes.restart(self._row, history_obs[None], np.asarray(history_actions)[None])
        self._steps = 0
        return self.episodes.to_obs(self.episodes.last_obs[0]), {}

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict]:
        if self._steps is None:
            raise RuntimeError("WorldModelEnv.step called before reset()")
        out = self.episodes.step(self._row, self.episodes.encode(action)[None], self.np_random)
        self._steps += 1
        truncated = self.max_episode_steps is not None and self._steps >= self.max_episode_steps
        info = {"obs_std": out.obs_std[0].cpu().numpy().astype(self.observation_space.dtype)}
        return self.episodes.to_obs(out.obs[0]), float(out.reward[0]), bool(out.terminated[0]), truncated, info
