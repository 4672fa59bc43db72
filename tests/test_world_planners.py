"""CEM and MPPI on problems with a known optimum, the known reward functions, and the planners on a real model."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch import Tensor, nn

from pararnn_ts.world import mpc
from pararnn_ts.world.env import Outcome
from pararnn_ts.world.model import DynamicsModel, Prediction
from pararnn_ts.world.mpc import KNOWN_REWARDS, never_terminates, parse_args, play_episode
from pararnn_ts.world.planners import CEMPlanner, MPPIPlanner
from pararnn_ts.world.vector_env import rollout

PLANNERS = {"cem": CEMPlanner, "mppi": MPPIPlanner}


class PointMass(nn.Module):
    """Exact dynamics of a 1-D point ``x' = x + u`` (obs ``(x,)``), with the model interface planners use.

    ``moves``: the displacement of each Discrete action (actions are then one-hot), or ``None``
    for a Box action ``u``.
    """

    obs_dim = 1

    def __init__(self, moves: list[float] | None = None) -> None:
        super().__init__()
        self.moves = None if moves is None else nn.Parameter(torch.tensor(moves, dtype=torch.float64)[:, None])
        self.action_dim = 1 if moves is None else len(moves)
        self.dtype_anchor = nn.Parameter(torch.zeros((), dtype=torch.float64))

    def encode(self, obs: Tensor, actions: Tensor) -> Tensor:
        return obs.new_zeros(obs.shape[0], 1)  # exact physics: the last observation says everything

    @staticmethod
    def repeat_state(state: Tensor, n: int) -> Tensor:
        return state.repeat_interleave(n, 0)

    def imagine_from_state(self, state: Tensor, last_obs: Tensor, plan: Tensor) -> Prediction:
        step = plan if self.moves is None else plan @ self.moves
        obs = last_obs[:, None] + step.cumsum(1)
        return Prediction(obs, torch.zeros_like(obs), None, torch.zeros_like(obs[..., 0]))


def distance_to(target: float):
    def reward(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
        return -((next_obs[..., 0] - target) ** 2)

    return reward


def make_planner(name: str, model: nn.Module, action_space: spaces.Space, **kwargs) -> CEMPlanner | MPPIPlanner:
    settings = {"horizon": 4, "population": 200, "iterations": 5}
    if name == "mppi":
        settings.update(temperature=0.02, init_std=0.1)
    return PLANNERS[name](model, action_space, **{**settings, **kwargs})


# ---- known optima ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", PLANNERS)
@pytest.mark.parametrize(("target", "best"), [(0.5, 0.5), (-0.3, -0.3), (3.0, 1.0)])
def test_box_planner_finds_the_optimal_first_action(name: str, target: float, best: float) -> None:
    """From x = 0 with |u| ≤ 1 the best first move goes straight to the target, or as far as allowed."""
    planner = make_planner(name, PointMass(), spaces.Box(-1.0, 1.0, (1,)), reward_fn=distance_to(target))
    action = planner.plan(np.zeros((1, 1)))
    assert action.shape == (1,) and action.dtype == np.float32
    assert action[0] == pytest.approx(best, abs=0.05)


@pytest.mark.parametrize("name", PLANNERS)
@pytest.mark.parametrize(("target", "best"), [(1.0, 2), (-0.5, 0), (0.1, 1)])
def test_discrete_planner_finds_the_optimal_first_action(name: str, target: float, best: int) -> None:
    """Moves −0.5, 0, +0.5 (Discrete(3, start=-1) → -1, 0, 1): head for the target, stay when there."""
    planner = make_planner(
        name, PointMass([-0.5, 0.0, 0.5]), spaces.Discrete(3, start=-1), reward_fn=distance_to(target)
    )
    assert planner.plan(np.zeros(1)) == best - 1


@pytest.mark.parametrize("name", PLANNERS)
def test_no_reward_after_a_predicted_termination(name: str) -> None:
    """Reward x' per step, the episode ends once x' > 1.5: jumping to 2 earns 2 once, staying below 1.5 earns
    up to 1.5 at every step. Without the termination the best first move would be the bound, 2."""
    planner = make_planner(
        name,
        PointMass(),
        spaces.Box(-2.0, 2.0, (1,)),
        reward_fn=lambda obs, action, next_obs: next_obs[..., 0],
        termination_fn=lambda obs, action, next_obs: next_obs[..., 0] > 1.5,
    )
    assert 0.5 < planner.plan(np.zeros(1))[0] <= 1.5


@pytest.mark.parametrize("name", PLANNERS)
def test_closed_loop_reaches_the_target_with_warm_starts(name: str) -> None:
    planner = make_planner(name, PointMass(), spaces.Box(-0.3, 0.3, (1,)), reward_fn=distance_to(1.0), horizon=6)
    x = np.zeros(1)
    history = [x]
    for _ in range(6):
        x = x + planner.plan(np.stack(history[-1:]))
        history.append(x)
    assert x[0] == pytest.approx(1.0, abs=0.05)


def test_warm_start_shifts_the_plan() -> None:
    planner = make_planner("cem", PointMass(), spaces.Box(-1.0, 1.0, (1,)), reward_fn=distance_to(0.5), iterations=3)
    planner.plan(np.zeros(1))
    mean_after = planner.plans.mean.clone()
    planner.plans.shift()
    torch.testing.assert_close(planner.plans.mean[:-1], mean_after[1:])
    assert planner.plans.mean[-1].item() == 0  # the middle of the bounds
    planner.reset()
    assert (planner.plans.mean == 0).all()


# ---- the real model --------------------------------------------------------------------------------
@pytest.mark.parametrize(("env_id", "name"), [("Pendulum-v1", "cem"), ("CartPole-v1", "mppi")])
def test_planners_drive_a_dynamics_model(env_id: str, name: str) -> None:
    """With a (random) DynamicsModel and its learned heads, plan() gives valid actions from growing histories."""
    env = gym.make(env_id)
    torch.manual_seed(0)
    action_dim = int(env.action_space.n) if isinstance(env.action_space, spaces.Discrete) else 1
    model = DynamicsModel(env.observation_space.shape[0], action_dim, hidden_size=8, num_layers=1).eval()
    extra = {"elites": 4} if name == "cem" else {}
    planner = make_planner(name, model, env.action_space, population=16, iterations=2, context=3, **extra)
    obs, _ = env.reset(seed=0)
    history_obs, history_actions = [obs], []
    for _ in range(4):
        action = planner.plan(np.stack(history_obs), np.array(history_actions))
        assert action in env.action_space
        history_actions.append(action)
        history_obs.append(env.step(action)[0])


def test_bad_settings_are_refused() -> None:
    box = spaces.Box(-1.0, 1.0, (1,))
    with pytest.raises(ValueError, match="elites"):
        CEMPlanner(PointMass(), box, population=10, elites=20)
    with pytest.raises(ValueError, match="horizon"):
        MPPIPlanner(PointMass(), box, horizon=0)
    with pytest.raises(ValueError, match="bounded"):
        CEMPlanner(PointMass(), spaces.Box(-np.inf, np.inf, (1,)))
    with pytest.raises(ValueError, match="action features"):
        CEMPlanner(PointMass(), spaces.Box(-1.0, 1.0, (2,)))
    planner = CEMPlanner(PointMass(), box, reward_fn=distance_to(0.0))
    with pytest.raises(ValueError, match="one action fewer"):
        planner.plan(np.zeros((3, 1)), np.zeros((1, 1)))


# ---- known reward functions ------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", sorted(KNOWN_REWARDS))
def test_known_rewards_match_the_real_env(env_id: str) -> None:
    """The registry's reward and termination on real transitions equal what the env returned."""
    env = gym.make(env_id)
    known = KNOWN_REWARDS[env_id]
    obs, _ = env.reset(seed=0)
    env.action_space.seed(0)
    rows = []
    for _ in range(60):
        action = env.action_space.sample() * 1.5  # also outside the bounds: the env clips
        next_obs, reward, terminated, truncated, _ = env.step(action)
        rows.append((obs, action, next_obs, reward, terminated))
        obs = next_obs
        if terminated or truncated:
            obs, _ = env.reset()
    obs, action, next_obs, reward, terminated = (torch.as_tensor(np.stack(c)).double() for c in zip(*rows, strict=True))
    torch.testing.assert_close(known.reward_fn(obs, action, next_obs), reward, rtol=1e-5, atol=1e-5)
    assert torch.equal(known.termination_fn(obs, action, next_obs), terminated.bool())
    assert terminated.any() or known.termination_fn is never_terminates  # both outcomes, where there are two


# ---- the MPC loop's pieces -------------------------------------------------------------------------
def test_planner_episodes_are_recorded_and_appended_as_new_episodes() -> None:
    env = gym.make("Pendulum-v1")
    torch.manual_seed(0)
    model = DynamicsModel(3, 1, hidden_size=8, num_layers=1).eval()
    planner = CEMPlanner(model, env.action_space, horizon=3, population=8, iterations=1, elites=2, context=2)
    first = play_episode(env, planner, seed=0, context=2, max_steps=4)
    second = play_episode(env, planner, seed=1, context=2, max_steps=3)
    assert len(first.data) == 4 and first.total == pytest.approx(float(first.data.reward.sum()), rel=1e-6)
    np.testing.assert_array_equal(first.data.next_obs[:-1], first.data.obs[1:])  # one real trajectory
    np.testing.assert_array_equal(first.data.obs[0], env.reset(seed=0)[0])
    both = first.data.followed_by(second.data)
    assert both.episode.tolist() == [0, 0, 0, 0, 1, 1, 1]
    np.testing.assert_array_equal(both.action[4:], second.data.action)


def test_mpc_settings_are_checked() -> None:
    settings = parse_args(["--env", "InvertedPendulum-v5", "--reward", "known", "--planner", "mppi"])
    assert (settings.env, settings.reward, settings.planner) == ("InvertedPendulum-v5", "known", "mppi")
    with pytest.raises(ValueError, match="no true reward for 'CartPole-v1'"):
        parse_args(["--env", "CartPole-v1", "--reward", "known"])
    with pytest.raises(ValueError, match="horizon must be >= 1"):
        parse_args(["--horizon", "0"])


def test_pendulum_is_planned_without_termination_weighting_under_the_known_reward() -> None:
    """``--reward known`` on Pendulum: the true reward and no termination, whatever the learned head predicts."""
    torch.manual_seed(0)
    model = DynamicsModel(3, 1, hidden_size=8, num_layers=1).eval()
    with torch.no_grad():
        model.termination_head.bias.fill_(1.0)  # a head that ends most episodes
    env = gym.make("Pendulum-v1")
    settings = parse_args(["--reward", "known", "--horizon", "6", "--population", "8", "--elites", "2"])
    planner = mpc.make_planner(settings, model, env)
    obs, _ = env.reset(seed=0)
    plans = torch.rand(8, 6, 1, generator=torch.Generator().manual_seed(0)) * 4 - 2
    returns = rollout(model, obs, plans, outcome=planner.outcome)
    never = Outcome(mpc.pendulum_reward, lambda o, a, n: torch.zeros(n.shape[:-1], dtype=torch.bool))
    torch.testing.assert_close(returns, rollout(model, obs, plans, outcome=never))
    assert not torch.allclose(returns, rollout(model, obs, plans, outcome=Outcome(mpc.pendulum_reward)))


def test_cem_elites_default_to_a_tenth_of_the_population_and_bad_ones_are_refused() -> None:
    box = spaces.Box(-1.0, 1.0, (1,))
    assert [CEMPlanner(PointMass(), box, population=n).elites for n in (30, 5, 400)] == [3, 1, 40]
    with pytest.raises(ValueError, match=r"elites must be an int in \[1, population=30\], got 40"):
        CEMPlanner(PointMass(), box, population=30, elites=40)


@pytest.mark.parametrize("name", PLANNERS)
def test_planners_refuse_observations_that_are_not_finite_of_another_shape_or_outside_the_space(name: str) -> None:
    """Named ``history_obs``, before any solve; the bounds only when the planner knows the observation space."""
    box = spaces.Box(-1.0, 1.0, (1,))
    planner = make_planner(name, PointMass(), box, reward_fn=distance_to(0.5))
    for bad in ([np.nan], [[0.0], [np.inf]]):
        with pytest.raises(ValueError, match=r"history_obs must be finite, got (nan|inf) at index"):
            planner.plan(np.array(bad))
    with pytest.raises(ValueError, match=r"history_obs must be real observations of shape \(C, 1\) or \(1,\), got"):
        planner.plan(np.zeros(2))
    assert planner.plan(np.array([5.0])) in box  # outside a space the planner was not given: planned from
    bounded = make_planner(name, PointMass(), box, reward_fn=distance_to(0.5), observation_space=box)
    with pytest.raises(ValueError, match=r"history_obs must lie in the observation space Box\(-1.0, 1.0, .*got 5.0"):
        bounded.plan(np.array([5.0]))
    with pytest.raises(ValueError, match="rollout: history_obs must be finite"):
        rollout(PointMass(), np.array([np.nan]), np.zeros((2, 3, 1)))


@pytest.mark.parametrize("name", PLANNERS)
def test_discrete_history_actions_given_as_rows_must_be_one_hot(name: str) -> None:
    """Rows of numbers are taken as one-hot vectors: anything else (here ``[5, 7]``) was planned from as given."""
    planner = make_planner(name, PointMass(moves=[-0.1, 0.1]), spaces.Discrete(2), reward_fn=distance_to(0.5))
    obs = np.zeros((2, 1))
    assert planner.plan(obs, np.array([[0.0, 1.0]])) in spaces.Discrete(2)
    for bad in ([[5.0, 7.0]], [[1.0, 1.0]], [[0.0, 1.0, 0.0]]):
        with pytest.raises(ValueError, match=r"history_actions of shape .* are taken as one-hot vectors"):
            planner.plan(obs, np.array(bad))
