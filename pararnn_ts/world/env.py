"""``WorldModelEnv``: a learned dynamics model served as a ``gymnasium.Env``.

The model follows the :class:`~pararnn_ts.world.model.DynamicsModel` interface::

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

from ..notices import user_stacklevel
from .collect import action_dim, check_spaces, make_env

#: ``reward_fn(obs (..., O), action (..., A), next_obs (..., O)) -> (...)``, on torch tensors, actions as
#: model vectors (Discrete: one-hot)
RewardFn = Callable[[Tensor, Tensor, Tensor], Tensor]
#: ``termination_fn(obs, action, next_obs) -> (...)`` bool, same shapes as :data:`RewardFn`
TerminationFn = Callable[[Tensor, Tensor, Tensor], Tensor]
ActionSpace = spaces.Box | spaces.Discrete
StartSource = gym.Env | np.ndarray | Sequence[Sequence[float]]
#: the ``reset`` options both envs take
RESET_OPTIONS = ("history_obs", "history_actions")
#: warm-ups in a row that may end their episode before :meth:`StartSampler.draw` gives up
MAX_WARMUP_DRAWS = 100


# ---- spaces and actions -------------------------------------------------------------------------
def clip_box(action_space: ActionSpace, vectors: Tensor) -> Tensor:
    """Box action vectors ``(..., A)`` clipped to the space's bounds, as the real envs clip them; others as given."""
    if not isinstance(action_space, spaces.Box):
        return vectors
    low, high = (
        torch.as_tensor(b, dtype=vectors.dtype, device=vectors.device) for b in (action_space.low, action_space.high)
    )
    return torch.minimum(torch.maximum(vectors, low), high)


def _shape_text(shape: Sequence[int | str]) -> str:
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def _shown(array: np.ndarray) -> str:
    """A short description of ``array`` for errors: its value when small, else its shape; and its dtype."""
    value = array.tolist() if array.size <= 8 else f"an array of shape {array.shape}"
    return f"{value} ({array.dtype})"


def action_vectors(
    action_space: ActionSpace, actions: Any, like: Tensor, batch: Sequence[int | str] = (), name: str = "action"
) -> Tensor:
    """Env actions ``(*batch, *action_space.shape)`` → model action vectors ``(*batch, A)`` (``like``'s dtype, device).

    ``batch``: the leading dimensions; ints are checked, strings only name a dimension in errors. Box
    actions are clipped to the space's bounds (:func:`clip_box`, as the real envs do); Discrete actions
    must be integers (not bools or floats) in the space, as the real envs assert, and become one-hot
    vectors ``(*batch, n)``. ``name`` is what errors call ``actions``.
    """
    array = np.asarray(actions)
    if array.size and array.dtype.kind not in "biufO":  # strings, bytes: a type error, whatever their shape
        kind = "integers" if isinstance(action_space, spaces.Discrete) else "numbers"
        raise ValueError(f"{name} must be {kind} for the action space {action_space}, got {_shown(array)}")
    expected = (*batch, *action_space.shape)
    if array.size == 0 and array.shape != expected:  # e.g. [] for no history actions
        try:
            array = array.reshape([d if isinstance(d, int) else 0 for d in expected])
        except ValueError:
            pass
    fits = array.ndim == len(expected) and all(
        not isinstance(e, int) or e == n for e, n in zip(expected, array.shape, strict=True)
    )
    if not fits:
        raise ValueError(
            f"{name} must have shape {_shape_text(expected)} for the action space {action_space}, got shape "
            f"{array.shape}"
        )
    if isinstance(action_space, spaces.Discrete):
        if array.size and (array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer)):
            raise ValueError(
                f"{name} must be integers (not bools or floats) for the action space {action_space}, got "
                f"{_shown(array)}"
            )
        index = torch.as_tensor(array.astype(np.int64), device=like.device) - int(action_space.start)
        if ((index < 0) | (index >= action_space.n)).any():
            raise ValueError(f"{name} must lie in the action space {action_space}, got {_shown(array)}")
        return nn.functional.one_hot(index, int(action_space.n)).to(like.dtype)
    vector = array.astype(np.float64)
    if not np.isnan(vector).any():  # ±inf are clipped to the bounds, as the real envs clip them
        return clip_box(action_space, torch.as_tensor(vector, dtype=like.dtype, device=like.device))
    raise ValueError(f"{name} must be numbers for the action space {action_space}, got NaN in {_shown(array)}")


def check_observations(observation_space: spaces.Box | None, obs: np.ndarray, name: str) -> None:
    """Refuse real observations ``(..., O)`` that are not finite or lie outside ``observation_space`` (``None``:
    only finiteness is checked)."""
    bad = ~np.isfinite(obs)
    if observation_space is not None:
        bad |= ~((obs >= observation_space.low) & (obs <= observation_space.high))
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        where = "be finite" if observation_space is None else f"lie in the observation space {observation_space}"
        raise ValueError(
            f"{name} must {where}, got {obs[index]} at index {index} ({int(bad.sum())} of {obs.size} values "
            f"{'not finite' if observation_space is None else 'outside'}); pass real observations of the env the "
            "model was trained on, as its reset() and step() return them"
        )


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
        real = make_env(env, flatten_instead_of_id) if isinstance(env, str) else env
        observation_space = observation_space or real.observation_space
        action_space = action_space or real.action_space
        if isinstance(env, str):
            real.close()
    check_spaces(observation_space, action_space)
    return observation_space, action_space


def flatten_instead_of_id(env_id: str) -> str:
    """How to get a Box observation space where an env or its id is taken: pass the wrapped env."""
    return f"pass the wrapped env instead of its id: gymnasium.wrappers.FlattenObservation(gymnasium.make('{env_id}'))"


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
    (or its id, made here and closed by :meth:`close`) that is reset and driven by ``context − 1``
    random actions; a warm-up that ends its episode is drawn again, at most :data:`MAX_WARMUP_DRAWS`
    times in a row.
    """

    def __init__(
        self, source: StartSource | str, observation_space: spaces.Box, action_space: ActionSpace, context: int = 1
    ) -> None:
        if context < 1:
            raise ValueError(f"context must be >= 1 real observations, got {context}")
        self.owned = isinstance(source, str)
        if isinstance(source, str):
            source = make_env(source)
        if isinstance(source, gym.Env):
            limit = None if source.spec is None else source.spec.max_episode_steps
            if limit is not None and context > limit:
                if self.owned:
                    source.close()
                raise ValueError(
                    f"context={context} needs {context - 1} random warm-up steps inside one episode of "
                    f"{_env_name(source)}, but its episodes are truncated after max_episode_steps={limit} steps; "
                    f"pass context <= {limit}, or start from real histories (reset(options={{'history_obs': ...}}))"
                )
        else:
            starts = np.asarray(source, dtype=np.float64)
            starts = starts[None] if starts.ndim == 1 else starts
            if starts.ndim != 2 or starts.shape[1:] != observation_space.shape or len(starts) == 0:
                raise ValueError(
                    f"start_states must be real observations of shape (N, {observation_space.shape[0]}) for the "
                    f"observation space {observation_space}, got {np.shape(source)}"
                )
            check_observations(observation_space, starts, "start_states")
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
        lengths = []
        for _ in range(MAX_WARMUP_DRAWS):  # a warm-up that ends its episode is drawn again
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
            lengths.append(len(history_actions))
        raise ValueError(
            f"context={self.context}: {MAX_WARMUP_DRAWS} warm-up episodes of {_env_name(real)} in a row ended "
            f"before the {self.context - 1} random-action steps a start needs (they lasted {min(lengths)} to "
            f"{max(lengths)} steps); pass a shorter context (at most {max(lengths)}), or start from real histories: "
            "reset(options={'history_obs': (C, O), 'history_actions': (C-1, ...)})"
        )

    def close(self) -> None:
        """Close the real env made here from an env id (one given as an env is the caller's to close)."""
        if self.owned:
            self.source.close()


def _env_name(env: gym.Env) -> str:
    return env.spec.id if env.spec is not None else type(env.unwrapped).__name__


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

    def encode(self, actions: Any, batch: Sequence[int | str] = (), name: str = "action") -> Tensor:
        """Env actions ``(*batch, ...)`` → model vectors ``(*batch, A)`` (see :func:`action_vectors`)."""
        return action_vectors(self.action_space, actions, self.like, batch, name)

    def to_obs(self, obs: Tensor) -> np.ndarray:
        """Observations as the space's dtype, clipped to its bounds."""
        space = self.observation_space
        return np.clip(obs.detach().cpu().numpy(), space.low, space.high).astype(space.dtype)

    def read_history(self, history_obs: Any, history_actions: Any, n: int | None = None) -> tuple[Tensor, Tensor]:
        """Real histories a user gives → observations ``(k, C, O)`` and action vectors ``(k, C-1, A)``.

        ``history_obs`` ``(C, O)`` (or ``(O,)``) with ``history_actions`` ``(C-1, ...)`` in the env's form
        (``None`` when ``C = 1``) is one history (``k = 1``), repeated ``n`` times when ``n`` is given; with
        ``n``, ``(n, C, O)`` and ``(n, C-1, ...)`` give one history per env (``k = n``).
        """
        features = self.observation_space.shape[0]
        obs = np.asarray(history_obs, dtype=np.float64)
        obs = obs[None] if obs.ndim == 1 else obs
        per_env = n is not None and obs.ndim == 3
        if obs.ndim != 2 + per_env or obs.shape[-1] != features or obs.shape[-2] < 1 or (per_env and len(obs) != n):
            shapes = "(C, O) or (O,)" + ("" if n is None else f", or ({n}, C, O) (one per env)")
            raise ValueError(
                f"history_obs must be real observations of shape {shapes} with O = {features} for the observation "
                f"space {self.observation_space}, got shape {np.shape(history_obs)}"
            )
        check_observations(self.observation_space, obs, "history_obs")
        c = obs.shape[-2]
        if history_actions is None:
            if c > 1:
                raise ValueError(f"history_obs holds C = {c} observations: give the C - 1 history_actions between them")
            history_actions = np.zeros(0)
        actions = self.encode(
            history_actions,
            (n, c - 1) if per_env else (c - 1,),
            f"history_actions (the C - 1 actions between the C = {c} observations of history_obs)",
        )
        tensor = torch.as_tensor(obs, dtype=self.like.dtype, device=self.like.device)
        if per_env:
            return tensor, actions
        k = 1 if n is None else n
        return tensor.expand(k, -1, -1), actions.expand(k, -1, -1)

    def draw(self, rngs: Sequence[np.random.Generator]) -> tuple[Tensor, Tensor]:
        """Real starts (:class:`StartSampler`), one per generator: observations ``(k, C, O)``, actions ``(k, C-1, A)``.

        Actions as model vectors.
        """
        starts = [self.starts.draw(rng) for rng in rngs]
        obs, actions = (np.stack(part) for part in zip(*starts, strict=True))
        vectors = self.encode(actions, (len(obs), obs.shape[1] - 1), "history_actions")
        return torch.as_tensor(obs, dtype=self.like.dtype, device=self.like.device), vectors

    @torch.no_grad()
    def restart(self, rows: Tensor, obs: Tensor, actions: Tensor) -> None:
        """Restart rows ``rows`` (k,) from real observations ``(k, C, O)`` and action vectors ``(k, C-1, A)``."""
        state = self.model.initial_state(len(rows))
        for t in range(actions.shape[1]):
            state, _ = self.model.observe(state, obs[:, t], actions[:, t])
        self.state = self._put(rows, state)
        self.last_obs[rows] = obs[:, -1]
        self.observed[rows] = True

    def close(self) -> None:
        """Close the real env the start sampler made from an env id."""
        self.starts.close()

    @torch.no_grad()
    def step(self, rows: Tensor, actions: Tensor, rngs: Sequence[np.random.Generator]) -> Transition:
        """Advance rows ``rows`` (k,) by model action vectors ``(k, A)``; ``rngs[i]`` draws row ``i``'s noise
        (``sample=True``)."""
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
            noise = np.stack([rng.standard_normal(obs.shape[1:]) for rng in rngs])
            noise = torch.as_tensor(noise, dtype=obs.dtype, device=obs.device)
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
        reward_fn, termination_fn, termination_threshold: see :class:`Outcome`. By default the reward
            and termination are the model's learned heads (terminated when the probability exceeds 0.5);
            ``reward_fn`` / ``termination_fn`` replace them (e.g. a ``termination_fn`` returning
            ``False`` for an env that never terminates, like Pendulum).
        max_episode_steps: episodes are truncated after this many imagined steps (``step()`` calls; the
            ``context − 1`` warm-up steps of a reset come on top); default: the real env's
            ``spec.max_episode_steps`` when ``env`` is given, else no limit.
        sample: return ``mean + std · ε`` (``ε`` from the env's seeded generator) instead of the mean.
        context: real steps a reset observes when start states come from a real env: it is reset, then
            driven by ``context − 1`` random actions, and the model observes all of it. At most the
            real env's ``max_episode_steps``; warm-ups that end their episode are drawn again, and
            after :data:`MAX_WARMUP_DRAWS` of them in a row ``reset`` raises a ``ValueError``.

    ``reset(options={"history_obs": (C, O), "history_actions": (C-1, ...)})`` starts from that real
    history instead (its observations must lie in the observation space; other options are refused).
    Actions must be elements of the action space: Box actions of its shape, clipped to its bounds as
    the real envs do; Discrete ones integers (not bools or floats). A ``step()`` after the episode
    returned ``terminated`` or ``truncated`` warns once per episode (``gymnasium.logger``, as
    Gymnasium's classic-control envs do) and goes on imagining. Observations come in the observation
    space's dtype, clipped to its bounds (the model goes on from the unclipped prediction);
    ``info["obs_std"]`` is the predicted spread. ``close()`` closes the real env made from an env id;
    there is no rendering (:meth:`render`).
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
        self._ended: str | None = None  # "terminated" / "truncated" once a step returned it, until reset()
        self._warned = False  # whether this episode warned of a step after its end

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        options = check_options(options)
        if "history_obs" in options:
            obs, actions = self.episodes.read_history(options["history_obs"], options.get("history_actions"))
        else:
            obs, actions = self.episodes.draw([self.np_random])
        self.episodes.restart(self._row, obs, actions)
        self._steps, self._ended, self._warned = 0, None, False
        return self.episodes.to_obs(self.episodes.last_obs[0]), {}

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict]:
        if self._steps is None:
            raise RuntimeError("WorldModelEnv.step called before reset()")
        if self._ended is not None and not self._warned:
            gym.logger.warn(STEP_AFTER_END.format(self._ended), stacklevel=user_stacklevel())
            self._warned = True
        out = self.episodes.step(self._row, self.episodes.encode(action)[None], [self.np_random])
        self._steps += 1
        terminated = bool(out.terminated[0])
        truncated = self.max_episode_steps is not None and self._steps >= self.max_episode_steps
        if self._ended is None and (terminated or truncated):
            self._ended = "terminated" if terminated else "truncated"
        info = {"obs_std": out.obs_std[0].cpu().numpy().astype(self.observation_space.dtype)}
        return self.episodes.to_obs(out.obs[0]), float(out.reward[0]), terminated, truncated, info

    def render(self) -> None:
        raise NotImplementedError(NO_RENDERING.format(type(self).__name__))

    def close(self) -> None:
        """Close the real env made from an env id (for start states)."""
        self.episodes.close()


#: what ``step()`` warns once per episode after the episode ended (Gymnasium's classic-control envs' words)
STEP_AFTER_END = (
    "You are calling 'step()' even though this environment has already returned {} = True. You should always "
    "call 'reset()' once you receive 'terminated = True' or 'truncated = True'; WorldModelEnv goes on imagining "
    "past the end of the episode."
)

#: what ``render()`` says
NO_RENDERING = (
    "{} does not render: its imagined states are the model's predicted observations, with no simulator "
    "behind them to draw; plot the observations step() returns, or render the real env"
)


def check_options(options: dict[str, Any] | None) -> dict[str, Any]:
    """``reset``'s ``options`` (``{}`` for ``None``), refused unless they are :data:`RESET_OPTIONS`."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(RESET_OPTIONS))
    if unknown:
        raise ValueError(f"reset options {unknown} are not supported; the options are {list(RESET_OPTIONS)}")
    if "history_actions" in options and "history_obs" not in options:
        raise ValueError("reset option history_actions needs history_obs: the observations the actions lie between")
    return options
