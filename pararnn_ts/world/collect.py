"""Collect transitions from Gymnasium environments, and save / load them.

    data = collect("Pendulum-v1", num_steps=10_000, seed=0)          # random policy, 8 sync envs
    data = collect("CartPole-v1", 2_000, policy=my_policy)           # policy: obs (n, O) -> actions (n, ...)
    data.save("runs/data/pendulum.npz")                              # writes pendulum.npz + pendulum.json
    data = Trajectories.load("runs/data/pendulum.npz")

File format (``FORMAT_VERSION`` 1). One ``.npz`` (numpy, uncompressed) per collection, holding N
transitions stored episode after episode, each episode's steps in time order:

    obs          (N, O) float32   o_t, the observation the action was taken in (flattened Box)
    action       (N, *A) raw actions as the env received them: Box (N, A) float32 (a policy's clipped to the
                 space's bounds), Discrete (N,) int64
    reward       (N,)   float32   r_t
    next_obs     (N, O) float32   o_{t+1}; on the last step of a finished episode the final observation
    terminated   (N,)   bool      the MDP ended at o_{t+1} (no bootstrapping past it)
    truncated    (N,)   bool      a time limit (or the like) cut the episode at o_{t+1}
    episode      (N,)   int64     episode id 0..E-1, non-decreasing; an episode's last step has
                                  terminated or truncated set, except when collection stopped inside it

and a JSON sidecar of the same name (``.json``) with ``format``, ``env_id``, ``env_kwargs`` (the keyword
arguments the env was made with; ``{}``: the registered env as it is), ``observation_space`` and
``action_space`` (see :func:`space_to_dict`), ``seed``, ``env_seeds``, ``num_envs``, ``policy`` (a name)
and ``num_steps``.

The model's action vector (:func:`encode_actions`) is the raw Box action flattened, or the one-hot
of a Discrete action: ``action_dim(space)`` features.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode

FORMAT_VERSION = 1
ARRAYS = ("obs", "action", "reward", "next_obs", "terminated", "truncated", "episode")
#: a batched policy: observations ``(n, O)`` → actions ``(n, *A)``
Policy = Callable[[np.ndarray], np.ndarray]


class Episode(NamedTuple):
    """One episode's transitions, time first: ``obs``/``next_obs`` ``(L, O)``, ``action`` ``(L, A)``
    (the model's action vector, see :func:`encode_actions`), ``reward``/``terminated``/``truncated`` ``(L,)``."""

    obs: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    next_obs: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray


# ---- spaces ---------------------------------------------------------------------------------
#: how to get a Box observation space where an env object is taken
FLATTEN_ENV = "wrap the env first: gymnasium.wrappers.FlattenObservation(env)"
#: ``fix(env_id)``: how to get a Box observation space where an env id is taken
Fix = Callable[[str], str]


def flatten_fix(env_id: str) -> str:
    """How to get a Box observation space where an env id is taken: register a flattened variant of ``env_id``."""
    name = env_id.split("/")[-1].rsplit("-v", 1)[0]
    return (
        f"register a flattened variant and pass its id, e.g. gymnasium.register('{name}Flat-v0', entry_point=lambda "
        f"**kwargs: gymnasium.wrappers.FlattenObservation(gymnasium.make('{env_id}', **kwargs)))"
    )


def flatten_fix_cli(env_id: str) -> str:
    """The same for the ``pararnn-ts`` verbs, which take registered ids only."""
    return (
        "the pararnn-ts verbs take ids of envs with 1-D Box observations only (e.g. Pendulum-v1, CartPole-v1); from "
        f"Python, {flatten_fix(env_id)}, then collect() and train on that id"
    )


def check_spaces(
    observation_space: spaces.Space, action_space: spaces.Space, env_id: str = "the env", fix: str = FLATTEN_ENV
) -> None:
    """Raise ``ValueError`` unless observations are a 1-D ``Box`` and actions a 1-D ``Box`` or ``Discrete``; ``fix``:
    how the caller gets a 1-D Box observation space."""
    if not isinstance(observation_space, spaces.Box):
        raise ValueError(
            f"{env_id} has a {type(observation_space).__name__} observation space; world models need a Box ({fix})"
        )
    if len(observation_space.shape) != 1:
        raise ValueError(
            f"{env_id} has observations of shape {observation_space.shape}; world models take vectors, 1-D Box "
            f"observations ({fix}). Images need an encoder, which these models do not have"
        )
    check_action_space(action_space, env_id)


def check_action_space(action_space: spaces.Space, env_id: str = "the env") -> None:
    """Raise ``ValueError`` unless ``action_space`` is a 1-D ``Box`` or a ``Discrete``."""
    if not isinstance(action_space, (spaces.Box, spaces.Discrete)):
        raise ValueError(
            f"{env_id} has a {type(action_space).__name__} action space; world models support Box and Discrete actions"
        )
    if isinstance(action_space, spaces.Box) and len(action_space.shape) != 1:
        raise ValueError(
            f"{env_id} has Box actions of shape {action_space.shape}; world models take 1-D ones (wrap the env with "
            "gymnasium.wrappers.TransformAction to take a flat vector)"
        )


def action_dim(action_space: spaces.Space) -> int:
    """Features of the model's action vector: the Box's size, or the number of Discrete actions."""
    return int(action_space.n) if isinstance(action_space, spaces.Discrete) else int(np.prod(action_space.shape))


def encode_actions(action_space: spaces.Space, actions: np.ndarray) -> np.ndarray:
    """Raw actions ``(N, *A)`` → the model's action vectors ``(N, action_dim)`` float32 (Discrete: one-hot)."""
    actions = np.asarray(actions)
    if isinstance(action_space, spaces.Discrete):
        index = actions.reshape(-1).astype(np.int64) - int(action_space.start)
        if index.size and (index.min() < 0 or index.max() >= action_space.n):
            raise ValueError(f"actions outside the Discrete space {action_space}")
        return np.eye(int(action_space.n), dtype=np.float32)[index]
    return actions.reshape(len(actions), -1).astype(np.float32)


def space_to_dict(space: spaces.Space) -> dict[str, Any]:
    """A JSON-able description of a Box or Discrete space (inverse: :func:`space_from_dict`)."""
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.Box):
        return {
            "type": "Box",
            "shape": list(space.shape),
            "dtype": str(space.dtype),
            "low": space.low.tolist(),
            "high": space.high.tolist(),
        }
    raise ValueError(f"cannot describe a {type(space).__name__} space; only Box and Discrete")


def space_from_dict(info: dict[str, Any]) -> spaces.Space:
    """The space that :func:`space_to_dict` described."""
    if info["type"] == "Discrete":
        return spaces.Discrete(info["n"], start=info["start"])
    if info["type"] == "Box":
        low = np.asarray(info["low"], dtype=info["dtype"])
        high = np.asarray(info["high"], dtype=info["dtype"])
        return spaces.Box(low.reshape(info["shape"]), high.reshape(info["shape"]), dtype=info["dtype"])
    raise ValueError(f"unknown space type {info['type']!r} (expected 'Box' or 'Discrete')")


# ---- the data -------------------------------------------------------------------------------
@dataclass
class Trajectories:
    """Flat transitions of whole episodes, in the layout of the module docstring."""

    obs: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    next_obs: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    episode: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.obs)
        for name in ARRAYS:
            if len(getattr(self, name)) != n:
                raise ValueError(f"Trajectories: {name} has {len(getattr(self, name))} rows, obs has {n}")
        if n and np.any(np.diff(self.episode) < 0):
            raise ValueError("Trajectories: episode ids must be non-decreasing (episodes stored one after another)")
        for name in ("obs", "action", "reward", "next_obs"):
            values = getattr(self, name)
            if not (n and values.dtype.kind == "f"):
                continue
            bad = ~np.isfinite(values.reshape(n, -1)).all(axis=1)
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                source = self.meta.get("env_id") or "the env"
                raise ValueError(
                    f"Trajectories: {name} has NaN or inf in {int(bad.sum())} of {n} rows, first row {row} (episode "
                    f"{int(self.episode[row])}); {source} or the policy produced them: drop those episodes, or wrap "
                    "the env so that it returns finite values (a world model cannot learn from them)"
                )

    def __len__(self) -> int:
        return len(self.obs)

    @property
    def observation_space(self) -> spaces.Space:
        return space_from_dict(self.meta["observation_space"])

    @property
    def action_space(self) -> spaces.Space:
        return space_from_dict(self.meta["action_space"])

    @property
    def obs_dim(self) -> int:
        return self.obs.shape[1]

    @property
    def action_dim(self) -> int:
        return action_dim(self.action_space)

    @property
    def episode_ids(self) -> np.ndarray:
        return np.unique(self.episode)

    @property
    def terminates(self) -> bool:
        """Whether any episode terminated: a termination head has something to learn."""
        return bool(self.terminated.any())

    def followed_by(self, more: Trajectories) -> Trajectories:
        """These episodes, then ``more``'s (renumbered to follow); this metadata with the new step count."""
        offset = int(self.episode.max()) + 1 if len(self) else 0
        arrays = {name: np.concatenate([getattr(self, name), getattr(more, name)]) for name in ARRAYS}
        arrays["episode"] = np.concatenate([self.episode, more.episode + offset])
        return Trajectories(**arrays, meta={**self.meta, "num_steps": len(self) + len(more), "policy": "mixed"})

    def episodes(self, ids: np.ndarray | list[int] | None = None) -> list[Episode]:
        """The episodes ``ids`` (default: all, in order), actions encoded for the model."""
        ids = self.episode_ids if ids is None else ids
        starts = np.searchsorted(self.episode, ids, side="left")
        stops = np.searchsorted(self.episode, ids, side="right")
        space = self.action_space
        return [
            Episode(
                self.obs[a:b],
                encode_actions(space, self.action[a:b]),
                self.reward[a:b],
                self.next_obs[a:b],
                self.terminated[a:b],
                self.truncated[a:b],
            )
            for a, b in zip(starts, stops, strict=True)
        ]

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write ``path`` (``.npz``) and its ``.json`` sidecar; returns the ``.npz`` path.

        An existing file of either name is replaced only when it is a trajectory file of :meth:`save` (a
        ``.json`` with this format's ``format`` key), or with ``overwrite``.
        """
        path = Path(path).with_suffix(".npz")
        if not overwrite:
            refuse_foreign(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **{name: getattr(self, name) for name in ARRAYS})
        path.with_suffix(".json").write_text(json.dumps({"format": FORMAT_VERSION, **self.meta}, indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Trajectories:
        """Read what :meth:`save` wrote."""
        path = Path(path).with_suffix(".npz")
        sidecar = path.with_suffix(".json")
        if not path.is_file() or not sidecar.is_file():
            raise FileNotFoundError(
                f"{path} and its sidecar {sidecar.name} must both exist (written by Trajectories.save)"
            )
        meta = read_sidecar(sidecar)
        with np.load(path) as arrays:
            return cls(**{name: arrays[name] for name in ARRAYS}, meta=meta)


def read_sidecar(path: str | Path) -> dict[str, Any]:
    """The metadata that :meth:`Trajectories.save` wrote beside ``path`` (``.npz`` or ``.json``)."""
    sidecar = Path(path).with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    if meta.pop("format", None) != FORMAT_VERSION:
        raise ValueError(f"{sidecar} is not trajectory format {FORMAT_VERSION}")
    return meta


def recorded_env(path: str | Path) -> str | None:
    """The env id the trajectory file at ``path`` records; ``None`` if it records none or has no sidecar."""
    sidecar = Path(path).with_suffix(".json")
    return read_sidecar(sidecar).get("env_id") if sidecar.is_file() else None


def is_sidecar(path: Path) -> bool:
    """Whether ``path`` is a trajectory sidecar that :meth:`Trajectories.save` wrote."""
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(meta, dict) and meta.get("format") == FORMAT_VERSION and "env_id" in meta


def refuse_foreign(path: Path, elsewhere: str = "save to another path") -> None:
    """Raise ``FileExistsError`` if saving trajectories to ``path`` (``.npz``) would replace a file that is not one
    of :meth:`Trajectories.save`'s: a sidecar ``.json`` not of this format, or an ``.npz`` without a sidecar.
    ``elsewhere``: the first fix the error offers."""
    sidecar = path.with_suffix(".json")
    ours = is_sidecar(sidecar)
    for file in (sidecar, path):
        if file.exists() and not ours:
            raise FileExistsError(
                f"saving trajectories to {path} would replace {file}, which is not a trajectory file (its sidecar "
                f"{sidecar.name} {'is not one' if sidecar.exists() else 'is missing'}); {elsewhere}, or move the "
                "file away (from Python, Trajectories.save(path, overwrite=True) replaces it)"
            )


# ---- collection -----------------------------------------------------------------------------
def _checked_make(
    env_id: str, make: Callable[[], Any], spaces: Callable[[Any], tuple[Any, Any]], fix: Fix = flatten_fix
) -> Any:
    """``make()``, with a clear error for an unknown ``env_id`` and for its ``spaces(env)`` (observation and action
    space) that world models cannot take (:func:`check_spaces`, with ``fix(env_id)``; the env is closed first)."""
    try:
        env = make()
    except gym.error.UnregisteredEnv as error:
        raise ValueError(
            f"unknown Gymnasium env id {env_id!r} ({error}); list the registered ids with "
            "`python -c 'import gymnasium; gymnasium.pprint_registry()'`"
        ) from error
    try:
        check_spaces(*spaces(env), env_id, fix(env_id))
    except ValueError:
        env.close()
        raise
    return env


def make_vector_env(env_id: str, num_envs: int, **env_kwargs: Any) -> gym.vector.VectorEnv:
    """``num_envs`` synchronous copies of ``env_id`` with next-step autoreset; clear errors for bad ids/spaces."""
    return _checked_make(
        env_id,
        lambda: gym.make_vec(
            env_id,
            num_envs=num_envs,
            vectorization_mode="sync",
            vector_kwargs={"autoreset_mode": AutoresetMode.NEXT_STEP},
            **env_kwargs,
        ),
        lambda envs: (envs.single_observation_space, envs.single_action_space),
    )


def make_env(env_id: str, fix: Fix = flatten_fix, **env_kwargs: Any) -> gym.Env:
    """One ``env_id`` env (``gymnasium.make``), with :func:`make_vector_env`'s clear errors for bad ids/spaces
    (``fix(env_id)``: how the caller's user gets a Box observation space)."""
    return _checked_make(
        env_id, lambda: gym.make(env_id, **env_kwargs), lambda env: (env.observation_space, env.action_space), fix
    )


def collect(
    env_id: str,
    num_steps: int,
    seed: int = 0,
    policy: Policy | None = None,
    policy_name: str | None = None,
    num_envs: int = 8,
    **env_kwargs: Any,
) -> Trajectories:
    """Run ``policy`` (default: uniform random actions) in ``num_envs`` copies of ``env_id``.

    Args:
        env_id: a registered Gymnasium id, e.g. ``"Pendulum-v1"``.
        num_steps: transitions to record, exactly (summed over the copies).
        seed: env ``i`` is reset with seed ``seed + i`` (later episodes continue its RNG); the random
            policy's action space is seeded with ``seed``.
        policy: batched policy, observations ``(num_envs, O)`` → actions ``(num_envs, *A)``; Box actions are
            clipped to the space's bounds, as the world model's envs clip them.
        policy_name: stored in the metadata (default: the policy's ``__name__``, or ``"random"``).
        num_envs: copies stepped together (sync vector env, next-step autoreset).
        env_kwargs: passed to the environment's constructor.

    Returns:
        :class:`Trajectories` whose episodes are complete unless collection stopped inside them.
    """
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"collect: num_steps must be a positive int, got {num_steps!r}")
    if not isinstance(num_envs, int) or num_envs < 1:
        raise ValueError(f"collect: num_envs must be a positive int, got {num_envs!r}")
    envs = make_vector_env(env_id, num_envs, **env_kwargs)
    try:
        envs.action_space.seed(seed)
        buffers, env_seeds = _run(envs, num_steps, seed, policy)
        observation_space, action_space = envs.single_observation_space, envs.single_action_space
    finally:
        envs.close()
    if policy_name is None:
        policy_name = "random" if policy is None else getattr(policy, "__name__", type(policy).__name__)
    meta = {
        "env_id": env_id,
        "env_kwargs": json.loads(json.dumps(env_kwargs, default=repr)),  # non-JSON values as their repr
        "observation_space": space_to_dict(observation_space),
        "action_space": space_to_dict(action_space),
        "seed": seed,
        "env_seeds": env_seeds,
        "num_envs": num_envs,
        "policy": policy_name,
        "num_steps": num_steps,
    }
    return _stack(buffers, action_space, meta)


def _run(envs: gym.vector.VectorEnv, num_steps: int, seed: int, policy: Policy | None) -> tuple[list, list[int]]:
    """Step ``envs`` until ``num_steps`` transitions are recorded; returns finished + open episodes."""
    env_seeds = [seed + i for i in range(envs.num_envs)]
    obs, _ = envs.reset(seed=env_seeds)
    open_episodes: list[list[tuple]] = [[] for _ in range(envs.num_envs)]
    finished: list[list[tuple]] = []
    resetting = np.zeros(envs.num_envs, dtype=bool)  # next-step autoreset: this step only resets
    recorded = 0
    while recorded < num_steps:
        actions = envs.action_space.sample() if policy is None else policy_actions(envs, policy(obs))
        next_obs, rewards, terminated, truncated, _ = envs.step(actions)
        for i in range(envs.num_envs):
            if resetting[i] or recorded >= num_steps:
                continue
            open_episodes[i].append((obs[i], actions[i], rewards[i], next_obs[i], terminated[i], truncated[i]))
            recorded += 1
            if terminated[i] or truncated[i]:
                finished.append(open_episodes[i])
                open_episodes[i] = []
        resetting = terminated | truncated
        obs = next_obs
    return finished + [steps for steps in open_episodes if steps], env_seeds


def policy_actions(envs: gym.vector.VectorEnv, actions: Any) -> np.ndarray:
    """A policy's ``actions`` ``(num_envs, *A)``, checked as the world model's envs check those they are stepped with
    (:func:`~pararnn_ts.world.env.action_vectors`): Discrete ones integers in the space, Box ones without NaN and
    clipped to its bounds (±inf too, as the real envs clip them), so the data holds what the model will be given."""
    from .env import action_vectors  # here: env imports this module

    space = envs.single_action_space
    like = torch.empty(0, dtype=torch.float64)
    vectors = action_vectors(space, actions, like, (envs.num_envs,), "collect: the policy's actions")
    return np.asarray(actions) if isinstance(space, spaces.Discrete) else vectors.numpy().astype(space.dtype)


def _stack(episodes: list[list[tuple]], action_space: spaces.Space, meta: dict[str, Any]) -> Trajectories:
    steps = [step for episode in episodes for step in episode]
    obs, action, reward, next_obs, terminated, truncated = (np.stack(column) for column in zip(*steps, strict=True))
    raw_dtype = np.int64 if isinstance(action_space, spaces.Discrete) else np.float32
    return Trajectories(
        obs=obs.reshape(len(steps), -1).astype(np.float32),
        action=action.astype(raw_dtype),
        reward=reward.astype(np.float32),
        next_obs=next_obs.reshape(len(steps), -1).astype(np.float32),
        terminated=terminated.astype(bool),
        truncated=truncated.astype(bool),
        episode=np.repeat(np.arange(len(episodes)), [len(e) for e in episodes]).astype(np.int64),
        meta=meta,
    )
