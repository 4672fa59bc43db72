"""``WorldModelEnv``, ``ImaginedVectorEnv`` and ``rollout`` against the parallel ``DynamicsModel.imagine``."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env

from pararnn_ts.world.env import Outcome, WorldModelEnv
from pararnn_ts.world.model import NORMALIZER, DynamicsModel
from pararnn_ts.world.vector_env import ImaginedVectorEnv, rollout

PENDULUM = {"obs_dim": 3, "action_dim": 1}
CARTPOLE = {"obs_dim": 4, "action_dim": 2}
#: observations unbounded and float64, so what the env returns is the model's prediction exactly
FREE_OBS = spaces.Box(-np.inf, np.inf, (3,), dtype=np.float64)
PENDULUM_ACTIONS = spaces.Box(-2.0, 2.0, (1,), dtype=np.float32)


def make_model(
    obs_dim: int, action_dim: int, cell: str = "gru", dtype=torch.float64, seed: int = 0, **kwargs
) -> DynamicsModel:
    """A small model with random heads and normaliser, so every input and head matters."""
    torch.manual_seed(seed)
    model = DynamicsModel(obs_dim, action_dim, cell=cell, hidden_size=12, num_layers=2, num_heads=2, **kwargs)
    g = torch.Generator().manual_seed(seed)
    shapes = {"obs": (obs_dim,), "action": (action_dim,), "scalar": ()}
    stats = {
        name: torch.rand(shapes[kind], generator=g) + 0.5 if name.endswith("std") else torch.randn(shapes[kind])
        for name, kind in NORMALIZER.items()
    }
    model.set_normalizer(stats)
    return model.to(dtype).eval()


def real_history(env_id: str, steps: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Observations ``(steps + 1, O)`` and the random actions ``(steps, ...)`` of a real episode."""
    env = gym.make(env_id)
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    history_obs, history_actions = [obs], []
    for _ in range(steps):
        history_actions.append(env.action_space.sample())
        history_obs.append(env.step(history_actions[-1])[0])
    return np.stack(history_obs).astype(np.float64), np.array(history_actions)


def imagine(model: DynamicsModel, history_obs, history_actions, plans: torch.Tensor):
    """``model.imagine`` of ``plans`` ``(N, H, A)`` from one history ``(C, O)``, ``(C-1, A)`` repeated ``N`` times."""
    n = len(plans)
    obs = torch.as_tensor(history_obs).expand(n, -1, -1)
    actions = torch.as_tensor(history_actions, dtype=torch.float64).expand(n, -1, -1)
    with torch.no_grad():
        return model.imagine(obs, actions, plans)


#: what check_env says of the real envs' own spaces (Pendulum's torque range, CartPole's unbounded velocities)
REAL_SPACE_WARNINGS = [
    "ignore:.*symmetric and normalized space:UserWarning",
    "ignore:.*observation space (minimum|maximum) value is:UserWarning",
]

#: what a step after the end of an episode warns (tests that step on deliberately, to compare with ``imagine``)
STEPS_AFTER_THE_END = r"ignore:.*You are calling 'step\(\)' even though this environment has already:UserWarning"


# ---- Gymnasium API --------------------------------------------------------------------------------
@pytest.mark.filterwarnings(*REAL_SPACE_WARNINGS)
@pytest.mark.parametrize("sample", [False, True])
def test_check_env_box(sample: bool) -> None:
    env = WorldModelEnv(make_model(**PENDULUM, dtype=torch.float32), "Pendulum-v1", sample=sample)
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    assert obs.dtype == np.float32 and obs in env.observation_space
    assert env.max_episode_steps == 200  # read from the real env's spec


@pytest.mark.filterwarnings(*REAL_SPACE_WARNINGS)
def test_check_env_discrete() -> None:
    env = WorldModelEnv(make_model(**CARTPOLE, dtype=torch.float32), "CartPole-v1", context=3)
    check_env(env, skip_render_check=True)


def test_seeded_resets_repeat_and_draw_from_start_states() -> None:
    starts = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
    env = WorldModelEnv(
        make_model(**PENDULUM), observation_space=FREE_OBS, action_space=PENDULUM_ACTIONS, start_states=starts
    )
    drawn = {tuple(env.reset(seed=seed)[0]) for seed in range(20)}
    assert drawn == {tuple(row) for row in starts}
    first = [env.reset(seed=7)[0], env.step(np.array([0.5], dtype=np.float32))[0]]
    again = [env.reset(seed=7)[0], env.step(np.array([0.5], dtype=np.float32))[0]]
    np.testing.assert_array_equal(np.stack(first), np.stack(again))


# ---- closed loop equals the parallel open loop ----------------------------------------------------
@pytest.mark.filterwarnings(STEPS_AFTER_THE_END)
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_stepping_the_env_equals_parallel_imagine(cell: str) -> None:
    """Stepping with a plan's actions gives ``model.imagine``'s observations and learned rewards."""
    model = make_model(**PENDULUM, cell=cell)
    history_obs, history_actions = real_history("Pendulum-v1", steps=4)
    plan = torch.rand(1, 12, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 4 - 2
    env = WorldModelEnv(model, observation_space=FREE_OBS, action_space=PENDULUM_ACTIONS, start_states=history_obs)
    obs, _ = env.reset(seed=0, options={"history_obs": history_obs, "history_actions": history_actions})
    np.testing.assert_array_equal(obs, history_obs[-1])
    steps = [env.step(a.numpy()) for a in plan[0]]
    pred = imagine(model, history_obs, history_actions, plan)
    torch.testing.assert_close(torch.as_tensor(np.stack([s[0] for s in steps])), pred.obs[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(torch.tensor([s[1] for s in steps], dtype=torch.float64), pred.reward[0])
    np.testing.assert_allclose(np.stack([s[4]["obs_std"] for s in steps]), pred.obs_std[0].numpy(), rtol=1e-12)


@pytest.mark.filterwarnings(STEPS_AFTER_THE_END)
def test_discrete_actions_are_one_hot_for_the_model() -> None:
    model = make_model(**CARTPOLE)
    history_obs, _ = real_history("CartPole-v1", steps=0)
    actions = [1, 0, 0, 1, 1]
    env = WorldModelEnv(model, "CartPole-v1", observation_space=spaces.Box(-np.inf, np.inf, (4,), np.float64))
    env.reset(options={"history_obs": history_obs})
    stepped = np.stack([env.step(a)[0] for a in actions])
    plan = torch.nn.functional.one_hot(torch.tensor(actions), 2).double()[None]
    np.testing.assert_allclose(stepped, imagine(model, history_obs, np.zeros((0, 2)), plan).obs[0].numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match="Discrete"):
        env.step(2)


def test_vector_env_equals_parallel_imagine_per_row() -> None:
    """Rows started from different real states, stepped together, each equal their own ``imagine``."""
    model = make_model(**PENDULUM, cell="lstm", learn_termination=False)  # no autoreset inside the plans
    starts, _ = real_history("Pendulum-v1", steps=5, seed=3)
    envs = ImaginedVectorEnv(model, 4, observation_space=FREE_OBS, action_space=PENDULUM_ACTIONS, start_states=starts)
    obs, _ = envs.reset(seed=0)
    plans = torch.rand(4, 6, 1, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 4 - 2
    stepped = np.stack([envs.step(plans[:, t].numpy())[0] for t in range(6)], axis=1)
    with torch.no_grad():
        expected = model.imagine(torch.as_tensor(obs)[:, None], torch.zeros(4, 0, 1, dtype=torch.float64), plans)
    np.testing.assert_allclose(stepped, expected.obs.numpy(), rtol=1e-12)


# ---- terminated and truncated ---------------------------------------------------------------------
@pytest.mark.filterwarnings(STEPS_AFTER_THE_END)
def test_terminated_and_truncated_are_kept_apart() -> None:
    model = make_model(**PENDULUM)
    env = WorldModelEnv(
        model,
        observation_space=FREE_OBS,
        action_space=PENDULUM_ACTIONS,
        start_states=np.zeros((1, 3)),
        termination_fn=lambda obs, action, next_obs: action[..., 0] > 1.5,
        max_episode_steps=3,
    )
    env.reset(seed=0)
    assert env.step(np.array([0.0]))[2:4] == (False, False)
    assert env.step(np.array([1.9]))[2:4] == (True, False)  # terminated by the MDP, not the clock
    assert env.step(np.array([0.0]))[2:4] == (False, True)  # the time limit
    env.reset(seed=0)
    assert [env.step(np.array([0.0]))[3] for _ in range(3)] == [False, False, True]


@pytest.mark.parametrize(("bias", "terminated"), [(4.0, True), (-4.0, False)])
def test_learned_termination_uses_the_half_probability_threshold(bias: float, terminated: bool) -> None:
    model = make_model(**PENDULUM)
    with torch.no_grad():
        model.termination_head.weight.zero_()
        model.termination_head.bias.fill_(bias)
    env = WorldModelEnv(model, "Pendulum-v1")
    env.reset(seed=0)
    assert env.step(np.array([0.0], dtype=np.float32))[2] is terminated


def test_vector_env_autoresets_on_the_next_step() -> None:
    model = make_model(**PENDULUM)
    starts = np.array([[1.0, 0.0, 0.0]])
    envs = ImaginedVectorEnv(
        model,
        3,
        observation_space=FREE_OBS,
        action_space=PENDULUM_ACTIONS,
        start_states=starts,
        termination_fn=lambda obs, action, next_obs: action[..., 0] > 1.5,
        max_episode_steps=2,
    )
    envs.reset(seed=0)
    _, _, terminated, truncated, _ = envs.step(np.array([[0.0], [1.9], [0.0]]))
    assert terminated.tolist() == [False, True, False] and not truncated.any()
    obs, rewards, terminated, truncated, _ = envs.step(np.array([[0.0], [1.9], [0.0]]))
    np.testing.assert_array_equal(obs[1], starts[0])  # row 1 restarted, its action ignored
    assert (
        rewards[1] == 0 and terminated.tolist() == [False, False, False] and truncated.tolist() == [True, False, True]
    )
    obs, _, terminated, truncated, _ = envs.step(np.array([[0.0], [0.0], [0.0]]))
    np.testing.assert_array_equal(obs[[0, 2]], np.repeat(starts, 2, axis=0))
    assert not terminated.any() and not truncated.any()


def test_vector_env_infos_are_those_of_a_sync_vector_env_of_world_model_envs() -> None:
    """``info["obs_std"]`` and its mask ``_obs_std`` step by step, autoresets (no ``obs_std``) included."""
    model = make_model(**PENDULUM)
    kwargs = {"termination_fn": lambda obs, action, next_obs: action[..., 0] > 1.5, "max_episode_steps": 3}
    mine = ImaginedVectorEnv(model, 3, "Pendulum-v1", **kwargs)
    sync = gym.vector.SyncVectorEnv(
        [lambda: WorldModelEnv(model, "Pendulum-v1", **kwargs) for _ in range(3)],
        autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP,
    )
    mine.reset(seed=2), sync.reset(seed=2)
    actions = np.random.default_rng(0).uniform(-2, 2, (6, 3, 1)).astype(np.float32)
    masks = []
    for action in actions:
        got, expected = mine.step(action)[4], sync.step(action)[4]
        assert got.keys() == expected.keys() == {"obs_std", "_obs_std"}
        for key in got:
            assert got[key].dtype == expected[key].dtype
            np.testing.assert_allclose(got[key], expected[key], rtol=1e-6)
        masks.append(got["_obs_std"].tolist())
    assert [False, True, True] in [sorted(m) for m in masks]  # an autoreset step, without obs_std for its env


# ---- scoring plans --------------------------------------------------------------------------------
def test_rollout_equals_separate_env_rollouts() -> None:
    """N plans scored by one solve = N episodes of the env, nothing earned after a termination."""
    model = make_model(**PENDULUM, learn_termination=False)
    history_obs, history_actions = real_history("Pendulum-v1", steps=3, seed=5)
    plans = torch.rand(6, 8, 1, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 3 - 1.5
    plans[:3, 2] = 1.9  # with terminates(), these end at their third step

    def terminates(obs, action, next_obs):
        return action[..., 0] > 1.8

    returns = rollout(model, history_obs, plans, torch.as_tensor(history_actions, dtype=torch.float64))
    env = WorldModelEnv(model, observation_space=FREE_OBS, action_space=PENDULUM_ACTIONS, start_states=history_obs)
    ended = WorldModelEnv(
        model,
        observation_space=FREE_OBS,
        action_space=PENDULUM_ACTIONS,
        start_states=history_obs,
        termination_fn=terminates,
    )
    ended_returns = rollout(
        model,
        history_obs,
        plans,
        torch.as_tensor(history_actions, dtype=torch.float64),
        Outcome(termination_fn=terminates),
    )
    for i, plan in enumerate(plans):
        for world, expected in ((env, returns[i]), (ended, ended_returns[i])):
            world.reset(options={"history_obs": history_obs, "history_actions": history_actions})
            total = 0.0
            for action in plan:
                _, reward, terminated, _, _ = world.step(action.numpy())
                total += reward
                if terminated:
                    break
            assert total == pytest.approx(expected.item(), rel=1e-12, abs=1e-12)
    assert not torch.allclose(returns[:3], ended_returns[:3]) and torch.allclose(returns[3:], ended_returns[3:])


def test_rollout_weighs_rewards_by_the_learned_survival_probability() -> None:
    """With the termination head, a plan scores ``Σ_t r_t Π_{k<t} (1 − p_k)``, summed here step by step."""
    model = make_model(**PENDULUM)
    history_obs, history_actions = real_history("Pendulum-v1", steps=2, seed=6)
    plans = torch.rand(3, 5, 1, generator=torch.Generator().manual_seed(8), dtype=torch.float64) * 4 - 2
    actions = torch.as_tensor(history_actions, dtype=torch.float64)
    pred = imagine(model, history_obs, history_actions, plans)
    assert ((pred.terminated > 0.05) & (pred.terminated < 0.95)).any()  # uncertain steps: the weighting matters
    for i in range(3):
        expected, survival = 0.0, 1.0
        for t in range(5):
            expected += survival * pred.reward[i, t].item()
            survival *= 1 - pred.terminated[i, t].item()
        assert rollout(model, history_obs, plans[i : i + 1], actions).item() == pytest.approx(expected, rel=1e-12)


# ---- errors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("env_id", "dims", "match"),
    [
        ("Pendulum-v1", {"obs_dim": 4, "action_dim": 1}, "observation features"),
        ("Pendulum-v1", {"obs_dim": 3, "action_dim": 2}, "action features"),
        ("CartPole-v1", {"obs_dim": 4, "action_dim": 1}, "one-hot Discrete"),
    ],
)
def test_mismatched_spaces_are_refused(env_id: str, dims: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        WorldModelEnv(make_model(**dims), env_id)
    with pytest.raises(ValueError, match=match):
        ImaginedVectorEnv(make_model(**dims), 2, env_id)


def test_bad_use_is_refused() -> None:
    model = make_model(**PENDULUM)
    with pytest.raises(ValueError, match="start_states"):
        WorldModelEnv(model, observation_space=FREE_OBS, action_space=PENDULUM_ACTIONS)
    with pytest.raises(ValueError, match=r"start_states must be real observations of shape \(N, 3\)"):
        WorldModelEnv(model, "Pendulum-v1", start_states=np.zeros((2, 4)))
    with pytest.raises(ValueError, match="context=2 needs a real env"):
        WorldModelEnv(model, "Pendulum-v1", start_states=np.zeros((2, 3)), context=2)
    with pytest.raises(ValueError, match="Box"):
        WorldModelEnv(model, observation_space=spaces.Discrete(3), action_space=PENDULUM_ACTIONS)
    env = WorldModelEnv(model, "Pendulum-v1")
    with pytest.raises(RuntimeError, match="before reset"):
        env.step(np.zeros(1))
    with pytest.raises(ValueError, match="C - 1 actions"):
        env.reset(options={"history_obs": np.zeros((3, 3)), "history_actions": np.zeros((1, 1))})


# ---- real warm-ups --------------------------------------------------------------------------------
class EndsEarly(gym.Env):
    """A real env whose episodes always terminate after ``steps`` steps (no spec: no time limit).

    More than 10,000 resets fail the test: a warm-up drawn again forever."""

    observation_space = FREE_OBS
    action_space = PENDULUM_ACTIONS

    def __init__(self, steps: int) -> None:
        self.steps, self.resets, self.t = steps, 0, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.resets += 1
        if self.resets > 10_000:
            raise AssertionError("the warm-up is drawn again forever")
        self.t = 0
        return np.zeros(3), {}

    def step(self, action):
        self.t += 1
        return np.full(3, float(self.t)), 0.0, self.t >= self.steps, False, {}


@pytest.mark.parametrize("make", [WorldModelEnv, lambda *a, **k: ImaginedVectorEnv(a[0], 2, *a[1:], **k)])
def test_a_context_longer_than_the_real_episodes_is_refused_not_looped_on(make) -> None:
    model = make_model(**PENDULUM)
    with pytest.raises(ValueError, match=r"context=201 .*Pendulum-v1.* max_episode_steps=200 .* context <= 200"):
        make(model, "Pendulum-v1", context=201)  # Pendulum truncates at 200 steps
    make(model, "Pendulum-v1", context=200)
    env = make(model, EndsEarly(3), context=5)  # episodes of 3 steps, never 4 warm-up steps
    with pytest.raises(ValueError, match=r"100 warm-up episodes .* lasted 3 to 3 steps.*at most 3.*history_obs"):
        env.reset(seed=0)
    env = make(model, EndsEarly(4), context=4)  # 3 warm-up steps fit
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs.reshape(-1, 3)[0], [3.0, 3.0, 3.0])


# ---- actions the real env would refuse ------------------------------------------------------------
@pytest.mark.parametrize(
    ("action", "match"),
    [
        (1.7, r"integers \(not bools or floats\) for the action space Discrete\(2\), got 1.7"),
        (-0.5, r"integers .* got -0.5"),
        (True, r"integers .* got True \(bool\)"),
        (np.float32(1.0), r"integers .* got 1.0 \(float32\)"),
        (np.array([1]), r"action must have shape \(\) for the action space Discrete\(2\), got shape \(1,\)"),
        (np.array([0.0, 1.0]), r"shape \(\) for the action space Discrete\(2\), got shape \(2,\)"),
        (2, r"must lie in the action space Discrete\(2\), got 2"),
    ],
)
def test_discrete_actions_must_be_integers_of_the_space(action, match: str) -> None:
    env = WorldModelEnv(make_model(**CARTPOLE), "CartPole-v1")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        env.step(action)


def test_actions_of_the_wrong_shape_or_nan_name_the_action_space_and_what_was_given() -> None:
    env = WorldModelEnv(make_model(**PENDULUM), "Pendulum-v1")
    env.reset(seed=0)
    for action, given in ((np.array([[0.5]]), r"\(1, 1\)"), (0.5, r"\(\)"), (np.array([0.5, 0.1]), r"\(2,\)")):
        with pytest.raises(
            ValueError, match=r"action must have shape \(1,\) for the action space Box\(.*got shape " + given
        ):
            env.step(action)
    with pytest.raises(ValueError, match=r"action must be numbers for the action space Box\(.*got NaN in \[nan\]"):
        env.step(np.array([np.nan], dtype=np.float32))
    envs = ImaginedVectorEnv(make_model(**CARTPOLE), 4, "CartPole-v1")
    envs.reset(seed=0)
    with pytest.raises(
        ValueError, match=r"actions \(one per env\) must have shape \(4,\) .*Discrete\(2\), got shape \(2,\)"
    ):
        envs.step([0, 1])
    with pytest.raises(ValueError, match=r"integers .* got \[0.0, 1.0, 0.0, 1.0\] \(float64\)"):
        envs.step(np.array([0.0, 1.0, 0.0, 1.0]))
    envs.step([0, 1, 0, 1])
    with pytest.raises(
        ValueError, match=r"history_actions \(the C - 1 actions .*\) must have shape \(1, 1\) .*got shape \(2, 1\)"
    ):
        env.reset(options={"history_obs": np.zeros((2, 3)), "history_actions": np.zeros((2, 1))})


def test_actions_of_another_type_are_a_type_error_and_unusable_env_ids_say_how_to_flatten() -> None:
    env = WorldModelEnv(make_model(**PENDULUM), "Pendulum-v1")
    env.reset(seed=0)
    for action in ("a", ["a"], np.array([b"x"])):
        with pytest.raises(ValueError, match=r"action must be numbers for the action space Box\(.*, got "):
            env.step(action)
    fix = re.escape("pass the wrapped env instead of its id: gymnasium.wrappers.FlattenObservation(gymnasium.make(")
    with pytest.raises(ValueError, match=r"Blackjack-v1 has a Tuple observation space; .*" + fix):
        WorldModelEnv(make_model(**PENDULUM), "Blackjack-v1")
    with pytest.raises(ValueError, match=re.escape("wrap the env first: gymnasium.wrappers.FlattenObservation(env)")):
        WorldModelEnv(make_model(**PENDULUM), gym.make("Blackjack-v1"))


# ---- rollout takes what the env takes -------------------------------------------------------------
def test_rollout_clips_box_plans_to_the_action_space_as_the_env_does() -> None:
    model = make_model(**PENDULUM, learn_termination=False)
    history_obs, history_actions = real_history("Pendulum-v1", steps=2, seed=7)
    plans = torch.rand(3, 5, 1, generator=torch.Generator().manual_seed(9), dtype=torch.float64) * 8 - 4  # |u| <= 4
    actions = torch.as_tensor(history_actions, dtype=torch.float64)
    clipped = rollout(model, history_obs, plans, actions, action_space=PENDULUM_ACTIONS)
    env = WorldModelEnv(model, observation_space=FREE_OBS, action_space=PENDULUM_ACTIONS, start_states=history_obs)
    for plan, expected in zip(plans, clipped, strict=True):
        env.reset(options={"history_obs": history_obs, "history_actions": history_actions})
        total = sum(env.step(action.numpy())[1] for action in plan)
        assert total == pytest.approx(expected.item(), rel=1e-12)
    torch.testing.assert_close(clipped, rollout(model, history_obs, plans.clamp(-2, 2), actions))
    assert not torch.allclose(clipped, rollout(model, history_obs, plans, actions))  # unclipped: other returns


def test_rollout_takes_numpy_plans_and_histories() -> None:
    model = make_model(**PENDULUM)
    history_obs, history_actions = real_history("Pendulum-v1", steps=2, seed=7)
    plans = np.random.default_rng(0).uniform(-2, 2, (4, 3, 1)).astype(np.float32)
    expected = rollout(model, torch.as_tensor(history_obs), torch.as_tensor(plans), torch.as_tensor(history_actions))
    got = rollout(model, history_obs, plans, history_actions, action_space=PENDULUM_ACTIONS)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, expected)
    with pytest.raises(ValueError, match=r"plans must be \(N, H, A\)"):
        rollout(model, history_obs, plans[0], history_actions)


# ---- Gymnasium's reset conventions ----------------------------------------------------------------
def test_vector_env_seeds_each_env_as_gymnasium_does() -> None:
    """``reset(seed=[s_0, ...])``: env i is ``WorldModelEnv(...).reset(seed=s_i)``, noise included; an int ``s``
    stands for ``[s, s + 1, ...]``."""
    model = make_model(**PENDULUM, learn_termination=False)
    kwargs = {"context": 3, "sample": True}
    actions = np.random.default_rng(1).uniform(-2, 2, (4, 3, 1)).astype(np.float32)

    def run(envs, seed):
        return np.stack([envs.reset(seed=seed)[0], *(envs.step(a)[0] for a in actions)], axis=1)

    envs = ImaginedVectorEnv(model, 3, "Pendulum-v1", **kwargs)
    by_list = run(envs, [5, 7, 9])
    for i, seed in enumerate([5, 7, 9]):
        env = WorldModelEnv(model, "Pendulum-v1", **kwargs)
        alone = [env.reset(seed=seed)[0], *(env.step(a[i])[0] for a in actions)]
        np.testing.assert_allclose(by_list[i], np.stack(alone), rtol=1e-6)
    np.testing.assert_array_equal(run(envs, 5), run(envs, [5, 6, 7]))
    assert not np.array_equal(run(envs, None), run(envs, None))  # unseeded: each env's generator goes on
    with pytest.raises(ValueError, match=r"a list of num_envs=3 ints or None, got \[1, 2\]"):
        envs.reset(seed=[1, 2])


def test_numpy_integer_seeds_are_refused_by_both_envs_as_gymnasium_refuses_them() -> None:
    model = make_model(**PENDULUM)
    with pytest.raises(gym.error.Error, match="Seed must be a python integer"):
        WorldModelEnv(model, "Pendulum-v1").reset(seed=np.int64(3))
    envs = ImaginedVectorEnv(model, 2, "Pendulum-v1")
    for seed in (np.int64(3), [np.int64(3), 4], True):
        with pytest.raises(ValueError, match=r"seeds are Python ints, as Gymnasium takes them .*int\(seed\)"):
            envs.reset(seed=seed)
    envs.reset(seed=3)
    assert envs.np_random_seed == 3


def test_reset_options_histories_and_unknown_options() -> None:
    model = make_model(**PENDULUM)
    history_obs, history_actions = real_history("Pendulum-v1", steps=2, seed=4)
    env = WorldModelEnv(model, "Pendulum-v1")
    envs = ImaginedVectorEnv(model, 2, "Pendulum-v1")
    shared = {"history_obs": history_obs, "history_actions": history_actions}
    obs, _ = envs.reset(seed=0, options=shared)
    np.testing.assert_array_equal(obs, np.stack([env.reset(options=shared)[0]] * 2))
    action = np.array([0.3], dtype=np.float32)
    np.testing.assert_allclose(envs.step(np.stack([action, action]))[0][0], env.step(action)[0], rtol=1e-6)
    other_obs, other_actions = real_history("Pendulum-v1", steps=2, seed=5)
    per_env = {"history_obs": np.stack([history_obs, other_obs]), "history_actions": [history_actions, other_actions]}
    obs, _ = envs.reset(options=per_env)
    np.testing.assert_array_equal(
        obs[1], env.reset(options={"history_obs": other_obs, "history_actions": other_actions})[0]
    )
    for world in (env, envs):
        with pytest.raises(ValueError, match=r"reset options \['foo'\] are not supported; the options are"):
            world.reset(options={"foo": 1})
        with pytest.raises(ValueError, match="history_actions needs history_obs"):
            world.reset(options={"history_actions": history_actions})


def test_histories_outside_the_observation_space_or_of_another_shape_name_the_space() -> None:
    model = make_model(**PENDULUM)
    history_obs, history_actions = real_history("Pendulum-v1", steps=2, seed=4)
    fast = history_obs.copy()
    fast[1, 2] = 9.5  # an angular velocity beyond Pendulum's 8
    missing = history_obs.copy()
    missing[0, 0] = np.nan
    env = WorldModelEnv(model, "Pendulum-v1")
    envs = ImaginedVectorEnv(model, 2, "Pendulum-v1")
    space = re.escape(str(env.observation_space))
    outside = rf"history_obs must lie in the observation space {space}, got "
    fix = r"values outside\); pass real observations of the env the model was trained on"
    for world in (env, envs):
        with pytest.raises(ValueError, match=outside + r"9.5 at index \(1, 2\) \(1 of 9 " + fix):
            world.reset(options={"history_obs": fast, "history_actions": history_actions})
        with pytest.raises(ValueError, match=outside + r"nan at index \(0, 0\)"):
            world.reset(options={"history_obs": missing, "history_actions": history_actions})
        with pytest.raises(ValueError, match=rf"history_obs must .* shape .* for the observation space {space}, got "):
            world.reset(options={"history_obs": history_obs[:, :2], "history_actions": history_actions})
    per_env = {"history_obs": np.stack([history_obs, fast]), "history_actions": [history_actions] * 2}
    with pytest.raises(ValueError, match=outside + r"9.5 at index \(1, 1, 2\) \(1 of 18 "):
        envs.reset(options=per_env)
    with pytest.raises(ValueError, match=rf"start_states must lie in the observation space {space}, got 9.5 "):
        WorldModelEnv(model, "Pendulum-v1", start_states=fast)


def test_a_step_after_the_end_warns_once_per_episode_as_gymnasium_envs_do_and_goes_on() -> None:
    """As CartPole-v1 warns (through gymnasium.logger); the vector env autoresets instead, with no warning."""
    model = make_model(**PENDULUM)
    kwargs = {"observation_space": FREE_OBS, "action_space": PENDULUM_ACTIONS, "start_states": np.zeros((1, 3))}
    kwargs |= {"termination_fn": lambda obs, action, next_obs: action[..., 0] > 1.5, "max_episode_steps": 3}
    env = WorldModelEnv(model, **kwargs)

    def warnings_of(world, actions: list[float]) -> list[str]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for action in actions:
                obs = world.step(np.full(world.action_space.shape, action))[0]
                assert np.isfinite(obs).all()  # it goes on
        assert all(w.filename == __file__ for w in caught)  # attributed to the line that stepped
        return [str(w.message) for w in caught]

    said = "You are calling 'step()' even though this environment has already returned {} = True. You should"
    env.reset(seed=0)
    assert warnings_of(env, [1.9]) == []  # the step that terminates
    (warning,) = warnings_of(env, [0.0, 0.0, 0.0])
    assert said.format("terminated") in warning and "call 'reset()'" in warning
    env.reset(seed=0)
    assert warnings_of(env, [0.0, 0.0, 0.0]) == []  # truncated by the last one
    (warning,) = warnings_of(env, [0.0, 1.9])
    assert said.format("truncated") in warning
    envs = ImaginedVectorEnv(model, 2, **kwargs)
    envs.reset(seed=0)
    assert warnings_of(envs, [1.9, 0.0, 0.0, 0.0, 1.9, 0.0]) == []


def test_close_closes_the_real_env_made_from_an_id_and_render_says_why_not() -> None:
    model = make_model(**PENDULUM)
    given = gym.make("Pendulum-v1")
    for world in (WorldModelEnv(model, "Pendulum-v1"), ImaginedVectorEnv(model, 2, "Pendulum-v1")):
        closed = []
        world.episodes.starts.source.close = lambda closed=closed: closed.append(True)
        with pytest.raises(NotImplementedError, match="does not render: .* plot the observations step"):
            world.render()
        world.close()
        assert closed == [True]
    closed = []
    given.close = lambda: closed.append(True)
    WorldModelEnv(model, given).close()
    assert closed == []  # an env given as an env is the caller's to close


def test_readme_example_runs() -> None:
    """The README's World models example, as written."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    (code,) = [b for b in re.findall(r"^```python\n(.*?)^```", readme, flags=re.S | re.M) if "WorldModelEnv(" in b]
    namespace: dict = {}
    exec(code, namespace)
    assert namespace["returns"].shape == (100,) and namespace["terminated"] is False
    assert namespace["env"].max_episode_steps == 200
