"""Many imagined episodes at once: ``ImaginedVectorEnv`` (closed loop) and ``rollout`` (N plans, one solve)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from torch import Tensor, nn

from .env import NO_RENDERING, ActionSpace, ImaginedEpisodes, Outcome, check_options, clip_box, model_like


@torch.no_grad()
def rollout(
    model: nn.Module,
    history_obs: Tensor | np.ndarray,
    plans: Tensor | np.ndarray,
    history_actions: Tensor | np.ndarray | None = None,
    outcome: Outcome | None = None,
    *,
    action_space: ActionSpace | None = None,
) -> Tensor:
    """Returns ``(N,)`` of ``N`` plans from one real history, all imagined in ONE parallel solve.

    The history is solved once (``model.encode``, batch 1), its state repeated for the ``N``
    candidates, and the candidates imagined together (``model.imagine_from_state``): the same
    predictions as ``model.imagine`` on the history repeated ``N`` times, without solving it ``N`` times.

    Args:
        model: a dynamics model (:class:`~pararnn_ts.world.model.DynamicsModel` interface).
        history_obs: the real observations so far, ``(C, O)`` (or ``(O,)`` for one).
        plans: candidate action sequences as model vectors ``(N, H, A)`` (Discrete: one-hot).
        history_actions: the ``C − 1`` actions between them, ``(C-1, A)``; ``None`` when ``C = 1``.
        outcome: rewards and terminations (default: the model's learned heads).
        action_space: the real env's action space; Box plans are clipped to its bounds
            (:func:`~pararnn_ts.world.env.clip_box`), as :class:`~pararnn_ts.world.env.WorldModelEnv`
            clips the actions it is stepped with. ``None``: plans are imagined as given (out-of-bounds
            actions then score differently than in the env).

    Tensors or numpy arrays, converted to the model's dtype and device.

    A plan's return is its expected return under the predicted terminations,
    ``Σ_t r_t · Π_{k<t} (1 − p_k)`` with ``p_k`` the probability that the episode ends after step
    ``k``: nothing is earned after a certain termination (``termination_fn``, or ``p = 1``), so then
    it is the return of the plan's episode in :class:`~pararnn_ts.world.env.WorldModelEnv`; the
    learned head's probabilities weigh every reward by the chance of getting there (the env's 0.5
    threshold would hide every risk below it from the planner).
    """
    like = model_like(model)
    outcome = outcome or Outcome()
    plans = torch.as_tensor(plans, dtype=like.dtype, device=like.device)
    n, action_features = (plans.shape[0], plans.shape[-1]) if plans.dim() else (0, 0)
    history_obs = torch.as_tensor(history_obs, dtype=like.dtype, device=like.device)
    history_obs = history_obs[None] if history_obs.dim() == 1 else history_obs
    if history_actions is None:
        history_actions = like.new_zeros(0, action_features)
    history_actions = torch.as_tensor(history_actions, dtype=like.dtype, device=like.device)
    if plans.dim() != 3 or history_obs.dim() != 2 or history_actions.shape != (len(history_obs) - 1, action_features):
        raise ValueError(
            f"rollout: plans must be (N, H, A), history_obs (C, O) and history_actions (C-1, A), got "
            f"{tuple(plans.shape)}, {tuple(history_obs.shape)} and {tuple(history_actions.shape)}"
        )
    if not torch.isfinite(history_obs).all():
        raise ValueError(f"rollout: history_obs must be finite real observations, got NaN or inf in {history_obs}")
    plans = plans if action_space is None else clip_box(action_space, plans)
    state = model.repeat_state(model.encode(history_obs[None, :-1], history_actions[None]), n)
    last_obs = history_obs[-1].expand(n, -1)
    pred = model.imagine_from_state(state, last_obs, plans)
    obs = torch.cat([last_obs[:, None], pred.obs[:, :-1]], dim=1)
    reward, ends = outcome(obs, plans, pred, pred.obs)
    alive_before = torch.cat([torch.ones_like(ends[:, :1]), (1 - ends[:, :-1]).cumprod(1)], dim=1)
    return (reward * alive_before).sum(1)


class ImaginedVectorEnv(VectorEnv):
    """``num_envs`` episodes of :class:`~pararnn_ts.world.env.WorldModelEnv` stepped as one batch.

    Arguments after ``num_envs`` are those of :class:`~pararnn_ts.world.env.WorldModelEnv`.
    Observations ``(n, O)``, rewards ``(n,)`` float64, terminations/truncations ``(n,)`` bool; a step's
    ``info["obs_std"]`` ``(n, O)`` (with its mask ``info["_obs_std"]``) as a ``SyncVectorEnv`` of
    ``WorldModelEnv`` batches their infos.
    Episodes that end are reset on the next step (``AutoresetMode.NEXT_STEP``, Gymnasium's default):
    that step ignores their action and returns their new start observation, reward 0 and no end flags.

    Each env has its own generator, as the envs of Gymnasium's vector envs do: ``reset(seed=s)`` seeds
    env ``i`` with ``s + i``, ``reset(seed=[s_0, ..., s_{n-1}])`` with ``s_i`` (``None``: unseeded), and
    env ``i`` then draws the starts and ``sample=True`` noise of ``WorldModelEnv(...).reset(seed=s_i)``.
    ``reset(options={"history_obs": ..., "history_actions": ...})`` starts every env from one real
    history (``(C, O)``, ``(C-1, ...)``) or each from its own (``(n, C, O)``, ``(n, C-1, ...)``); later
    autoresets draw starts as usual. Other options are refused.
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(self, model: nn.Module, num_envs: int, env: str | gym.Env | None = None, **kwargs: Any) -> None:
        self.episodes = ImaginedEpisodes(model, num_envs, env, **kwargs)
        self.num_envs, self.model = num_envs, model
        self.single_observation_space = self.episodes.observation_space
        self.single_action_space = self.episodes.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._steps = np.zeros(num_envs, dtype=np.int64)
        self._ended = np.zeros(num_envs, dtype=bool)
        self._rngs: list[np.random.Generator | None] = [None] * num_envs
        self._started = False

    def reset(
        self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict]:
        options = check_options(options)
        seeds = self._seeds(seed)
        super().reset(seed=seed if isinstance(seed, int) else None)
        for i, env_seed in enumerate(seeds):
            if env_seed is not None or self._rngs[i] is None:
                self._rngs[i] = seeding.np_random(env_seed)[0]
        rows = np.arange(self.num_envs)
        if "history_obs" in options:
            self._steps[:], self._ended[:] = 0, False
            obs, actions = self.episodes.read_history(
                options["history_obs"], options.get("history_actions"), self.num_envs
            )
            self.episodes.restart(torch.as_tensor(rows, device=self.episodes.like.device), obs, actions)
        else:
            self._restart(rows)
        self._started = True
        return self.episodes.to_obs(self.episodes.last_obs), {}

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        if not self._started:
            raise RuntimeError("ImaginedVectorEnv.step called before reset()")
        vectors = self.episodes.encode(actions, (self.num_envs,), "actions (one per env)")
        stepping = (~self._ended).nonzero()[0]
        self._restart(self._ended.nonzero()[0])
        rewards = np.zeros(self.num_envs)
        terminations = np.zeros(self.num_envs, dtype=bool)
        truncations = np.zeros(self.num_envs, dtype=bool)
        infos: dict[str, Any] = {}
        if len(stepping):
            rows = torch.as_tensor(stepping, device=vectors.device)
            out = self.episodes.step(rows, vectors[rows], [self._rngs[i] for i in stepping])
            rewards[stepping] = out.reward.cpu().numpy()
            terminations[stepping] = out.terminated.cpu().numpy()
            self._steps[stepping] += 1
            if self.episodes.max_episode_steps is not None:
                truncations[stepping] = self._steps[stepping] >= self.episodes.max_episode_steps
            infos = self._step_infos(stepping, out.obs_std)
        self._ended = terminations | truncations
        return self.episodes.to_obs(self.episodes.last_obs), rewards, terminations, truncations, infos

    def render(self) -> None:
        raise NotImplementedError(NO_RENDERING.format(type(self).__name__))

    def close_extras(self, **kwargs: Any) -> None:
        """Close the real env made from an env id (for start states)."""
        self.episodes.close()

    def _step_infos(self, stepping: np.ndarray, obs_std: Tensor) -> dict[str, Any]:
        """The infos of envs ``stepping`` (each ``WorldModelEnv``'s ``obs_std``) batched as Gymnasium's vector envs
        batch them: ``info["obs_std"]`` ``(n, O)`` (zeros for the envs that reset) and the mask ``info["_obs_std"]``."""
        infos: dict[str, Any] = {}
        spreads = obs_std.cpu().numpy().astype(self.single_observation_space.dtype)
        for i, spread in zip(stepping, spreads, strict=True):
            infos = self._add_info(infos, {"obs_std": spread}, int(i))
        return infos

    def _seeds(self, seed: int | Sequence[int | None] | None) -> list[int | None]:
        """One seed (or ``None``) per env, as Gymnasium's vector envs take them: Python ints (not numpy ones, as
        ``gymnasium.utils.seeding`` requires), or ``None``."""
        if seed is None or _is_seed(seed):
            return [None if seed is None else seed + i for i in range(self.num_envs)]
        seeds = list(seed) if isinstance(seed, Sequence | np.ndarray) else None
        if seeds is None or len(seeds) != self.num_envs or not all(s is None or _is_seed(s) for s in seeds):
            raise ValueError(
                f"seed must be None, an int (env i gets seed + i) or a list of num_envs={self.num_envs} ints or None, "
                f"got {seed!r}; seeds are Python ints, as Gymnasium takes them (not numpy integers or bools: pass "
                "int(seed))"
            )
        return seeds

    def _restart(self, rows: np.ndarray) -> None:
        """Draw new real starts for episodes ``rows`` (all starts have ``context`` steps) and observe them."""
        self._steps[rows] = 0
        self._ended[rows] = False
        if len(rows):
            obs, actions = self.episodes.draw([self._rngs[i] for i in rows])
            self.episodes.restart(torch.as_tensor(rows, device=self.episodes.like.device), obs, actions)


def _is_seed(seed: Any) -> bool:
    """Whether ``seed`` is a seed Gymnasium takes: a Python ``int`` (not a bool or a numpy integer)."""
    return isinstance(seed, int) and not isinstance(seed, bool)
