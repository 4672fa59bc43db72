"""The dynamics model (one-solve imagination == step-by-step), its losses and Lightning module, the
baselines and the k-step evaluator, each against an independent loop or brute force."""

from __future__ import annotations

import math
import warnings

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from torch.distributions import Normal

from pararnn_ts.world.baselines import MLPEnsemble, fit_mlp_ensemble, persistence, torch_gru_model
from pararnn_ts.world.collect import Episode, collect
from pararnn_ts.world.datamodule import TrajectoryDataModule
from pararnn_ts.world.evaluate import k_step_errors
from pararnn_ts.world.model import DynamicsModel
from pararnn_ts.world.module import WorldModelModule, world_model_losses

OBS, ACT = 3, 2
VARIANTS = [
    ("gru", "sequential"),
    ("gru", "parallel"),
    ("lstm", "sequential"),
    ("lstm", "parallel"),
    ("torch_gru", None),
]


def random_stats(seed: int = 0) -> dict[str, np.ndarray]:
    g = np.random.default_rng(seed)
    stats = {f"{n}_mean": g.normal(size=d) for n, d in (("obs", OBS), ("delta", OBS), ("action", ACT))}
    stats |= {f"{n}_std": g.uniform(0.5, 2, size=d) for n, d in (("obs", OBS), ("delta", OBS), ("action", ACT))}
    return stats | {"reward_mean": np.float64(0.3), "reward_std": np.float64(1.7)}


def make_model(cell: str, mode: str | None, seed: int = 0) -> DynamicsModel:
    torch.manual_seed(seed)
    if cell == "torch_gru":
        model = torch_gru_model(OBS, ACT, hidden_size=12, num_layers=2)
    else:
        model = DynamicsModel(OBS, ACT, cell, hidden_size=12, num_layers=2, num_heads=3, mode=mode)
    model.set_normalizer(random_stats(seed))
    return model.double()


def randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ---- imagination in one solve == stepping -----------------------------------------------------
@pytest.mark.parametrize("cell, mode", VARIANTS)
def test_imagine_equals_observe_then_imagine_step(cell, mode):
    model = make_model(cell, mode)
    batch, context, horizon = 3, 5, 7
    context_obs, context_actions = randn(batch, context, OBS, seed=1), randn(batch, context - 1, ACT, seed=2)
    plan = randn(batch, horizon, ACT, seed=3)
    pred = model.imagine(context_obs, context_actions, plan)

    state = model.initial_state(batch)
    for t in range(context - 1):
        state, _ = model.observe(state, context_obs[:, t], context_actions[:, t])
    state, step = model.observe(state, context_obs[:, -1], plan[:, 0])
    steps = [step]
    for k in range(1, horizon):
        state, step = model.imagine_step(state, steps[-1].obs, plan[:, k])
        steps.append(step)
    for field in ("obs", "obs_std", "reward", "terminated"):
        expected = torch.stack([getattr(s, field) for s in steps], dim=1)
        assert getattr(pred, field).shape == expected.shape
        torch.testing.assert_close(getattr(pred, field), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("cell, mode", [("gru", "parallel"), ("lstm", "parallel"), ("torch_gru", None)])
def test_candidates_from_a_repeated_state_equal_imagining_each(cell, mode):
    model = make_model(cell, mode)
    batch, context, horizon, n = 2, 4, 6, 3
    context_obs, context_actions = randn(batch, context, OBS, seed=4), randn(batch, context - 1, ACT, seed=5)
    plans = randn(batch * n, horizon, ACT, seed=6)
    state = model.repeat_state(model.encode(context_obs[:, :-1], context_actions), n)
    pred = model.imagine_from_state(state, context_obs[:, -1].repeat_interleave(n, 0), plans)
    for b in range(batch):
        for j in range(n):
            row = b * n + j  # order [b0 x n, b1 x n, ...]
            alone = model.imagine(context_obs[b : b + 1], context_actions[b : b + 1], plans[row : row + 1])
            torch.testing.assert_close(pred.obs[row], alone.obs[0], rtol=1e-10, atol=1e-10)


def test_context_of_one_observation_and_unlearnt_heads():
    torch.manual_seed(0)
    model = DynamicsModel(
        OBS, ACT, hidden_size=8, num_layers=1, mode="sequential", learn_reward=False, learn_termination=False
    )
    pred = model.imagine(torch.randn(2, 1, OBS), torch.zeros(2, 0, ACT), torch.randn(2, 4, ACT))
    assert pred.obs.shape == (2, 4, OBS) and pred.reward is None
    assert torch.equal(pred.terminated, torch.zeros(2, 4))


def test_bad_shapes_and_normalizer_are_clear_errors():
    model = DynamicsModel(OBS, 1, hidden_size=8, num_layers=1)
    with pytest.raises(ValueError, match="plan must be .* action_dim=1 .*one-hot"):
        model.imagine(torch.randn(2, 3, OBS), torch.randn(2, 2, 1), torch.randn(2, 4, 2))
    with pytest.raises(ValueError, match="context_actions"):
        model.imagine(torch.randn(2, 3, OBS), torch.randn(2, 3, 1), torch.randn(2, 4, 1))
    with pytest.raises(ValueError, match="obs_dim=3"):
        model.observe(model.initial_state(2), torch.randn(2, 4), torch.randn(2, 1))
    with pytest.raises(ValueError, match="action_mean has shape"):
        model.set_normalizer(random_stats())  # ACT = 2 action features, the model takes 1
    with pytest.raises(ValueError, match="num_heads"):
        DynamicsModel(OBS, 1, hidden_size=10, num_heads=3)
    nan_plan = torch.randn(2, 4, 1)
    nan_plan[1, 2] = float("nan")
    with pytest.raises(ValueError, match="DynamicsModel: plan contains NaN or inf; the model needs finite actions"):
        model.imagine(torch.randn(2, 3, OBS), torch.randn(2, 2, 1), nan_plan)
    with pytest.raises(ValueError, match="last_obs contains NaN or inf; the model needs finite observations"):
        model.imagine_from_state(model.initial_state(2), torch.full((2, OBS), float("inf")), torch.randn(2, 4, 1))


# ---- losses -------------------------------------------------------------------------------------
def window_batch(batch: int, steps: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(batch, steps + 1, OBS, generator=g, dtype=torch.float64).cumsum(1)
    mask = torch.ones(batch, steps, dtype=torch.float64)
    mask[0, steps - 3 :] = 0  # a short episode, padded
    return {
        "obs": obs[:, :-1],
        "next_obs": obs[:, 1:],
        "action": torch.randn(batch, steps, ACT, generator=g, dtype=torch.float64),
        "reward": torch.randn(batch, steps, generator=g, dtype=torch.float64),
        "terminated": (torch.rand(batch, steps, generator=g) < 0.2).double(),
        "mask": mask,
    }


@pytest.mark.parametrize("cell, mode", [("gru", "parallel"), ("lstm", "sequential")])
def test_losses_equal_a_step_by_step_computation(cell, mode):
    model = make_model(cell, mode)
    data, context = window_batch(2, 9, seed=7), torch.tensor([3, 5])
    losses = world_model_losses(model, data, context, open_loop_weight=0.5)
    norm = model.normalizer
    nll, ol_sq, ol_reward, ol_bce, tf_reward, n_tf, n_ol = 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0
    for b in range(2):
        valid = int(data["mask"][b].sum())
        state = model.initial_state(1)  # teacher forced: every step observed
        for t in range(valid):
            obs, nxt = data["obs"][b : b + 1, t], data["next_obs"][b : b + 1, t]
            state, p = model.observe(state, obs, data["action"][b : b + 1, t])
            mean = (p.obs - obs - norm.delta_mean) / norm.delta_std
            target = (nxt - obs - norm.delta_mean) / norm.delta_std
            nll -= Normal(mean, p.obs_std / norm.delta_std).log_prob(target).mean().item()
            tf_reward += ((p.reward - data["reward"][b, t]) / norm.reward_std).pow(2).item()
            n_tf += 1
        state, c = model.initial_state(1), int(context[b])  # open loop after c observed steps
        estimate = None
        for t in range(valid):
            action = data["action"][b : b + 1, t]
            if t < c:
                state, p = model.observe(state, data["obs"][b : b + 1, t], action)
            else:
                state, p = model.imagine_step(state, estimate, action)
            estimate = p.obs
            if t >= c - 1:
                ol_sq += ((p.obs - data["next_obs"][b, t]) / norm.obs_std).pow(2).mean().item()
                ol_reward += ((p.reward - data["reward"][b, t]) / norm.reward_std).pow(2).item()
                done = data["terminated"][b, t].item()
                ol_bce -= math.log(p.terminated.item() if done else 1 - p.terminated.item())
                n_ol += 1
    assert losses["tf_nll"].item() == pytest.approx(nll / n_tf, rel=1e-9)
    assert losses["tf_reward"].item() == pytest.approx(tf_reward / n_tf, rel=1e-9)
    assert losses["ol_mse"].item() == pytest.approx(ol_sq / n_ol, rel=1e-9)
    assert losses["ol_reward"].item() == pytest.approx(ol_reward / n_ol, rel=1e-9)
    assert losses["ol_termination"].item() == pytest.approx(ol_bce / n_ol, rel=1e-9)
    teacher = losses["tf_nll"] + losses["tf_reward"] + losses["tf_termination"]
    multi = losses["ol_mse"] + losses["ol_reward"] + losses["ol_termination"]
    torch.testing.assert_close(losses["loss"], teacher + 0.5 * multi)


@pytest.mark.parametrize("cell, mode", [("gru", "parallel"), ("lstm", "parallel"), ("torch_gru", None)])
def test_gradient_reaches_every_parameter(cell, mode):
    model = make_model(cell, mode)
    losses = world_model_losses(model, window_batch(3, 10, seed=8), torch.tensor([1, 4, 9]))
    losses["loss"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"no gradient reaches {name}"


# ---- the k-step evaluator -----------------------------------------------------------------------
def random_episodes(lengths: list[int], seed: int = 0) -> list[Episode]:
    g = np.random.default_rng(seed)
    episodes = []
    for n in lengths:
        states = g.normal(size=(n + 1, OBS)).cumsum(0).astype(np.float32)
        action = g.normal(size=(n, 1)).astype(np.float32)
        episodes.append(
            Episode(states[:-1], action, np.zeros(n, np.float32), states[1:], np.zeros(n, bool), np.zeros(n, bool))
        )
    return episodes


W = np.array([[0.5, -1.0, 2.0]])  # (A, O) of the toy model


def toy_model(context_obs: torch.Tensor, context_actions: torch.Tensor, plan: torch.Tensor) -> torch.Tensor:
    """Mean of the context plus the running sum of the actions through ``W``: uses all three inputs."""
    return context_obs.mean(1, keepdim=True) + plan.cumsum(1) @ torch.as_tensor(W, dtype=plan.dtype)


def brute_force(predict, episodes, ks, context, stride, var) -> dict[int, float]:
    """Loops: every window of every episode, one prediction of only the steps inside the episode."""
    errors = {k: [] for k in ks}
    for e in episodes:
        for start in range(0, len(e.obs) - context + 1, stride):
            last = start + context - 1
            horizon = min(max(ks), len(e.obs) - last)
            pred = predict(e.obs[start : last + 1], e.action[start:last], e.action[last : last + horizon])
            for k in ks:
                if k <= horizon:
                    errors[k].append(np.mean((pred[k - 1] - e.next_obs[last + k - 1]) ** 2 / var))
    return {k: float(np.mean(v)) if v else math.nan for k, v in errors.items()}


def test_k_step_errors_match_brute_force_on_a_toy_model():
    episodes = random_episodes([70, 30, 5, 16, 17, 40])
    ks, context, stride = (1, 2, 5, 25, 50, 60), 16, 3
    var = np.concatenate([e.obs for e in episodes]).astype(np.float64).var(0)

    def toy_numpy(ctx, _, plan):
        return ctx.mean(0) + plan.cumsum(0) @ W

    got = k_step_errors(toy_model, episodes, ks, context, stride, batch_size=7)
    expected = brute_force(toy_numpy, episodes, ks, context, stride, var)
    assert math.isnan(got[60]) and math.isnan(expected[60])  # no window reaches 60 steps
    for k in ks[:-1]:
        assert got[k] == pytest.approx(expected[k], rel=1e-5)


def test_persistence_baseline_is_exact():
    episodes = random_episodes([40, 25, 60], seed=1)
    var = np.array([1.0, 2.0, 0.5])
    got = k_step_errors(persistence, episodes, ks=(1, 5, 10), context=4, stride=2, obs_var=var)
    for k in (1, 5, 10):
        errors = [
            np.mean((e.next_obs[s + 3 + k - 1] - e.obs[s + 3]) ** 2 / var)
            for e in episodes
            for s in range(0, len(e.obs) - 3, 2)
            if s + 3 + k <= len(e.obs)
        ]
        assert got[k] == pytest.approx(np.mean(errors), rel=1e-6)


# ---- baselines ----------------------------------------------------------------------------------
def test_mlp_ensemble_rollout_follows_each_member_and_training_lowers_the_nll():
    torch.manual_seed(0)
    episodes = random_episodes([30, 30, 30], seed=2)
    ensemble = MLPEnsemble(OBS, 1, hidden_size=16, num_layers=2, ensemble_size=3)
    ensemble.set_normalizer(
        {"obs_mean": np.zeros(OBS), "obs_std": np.full(OBS, 3.0), "delta_mean": np.zeros(OBS)}
        | {"delta_std": np.ones(OBS), "reward_mean": 0.0, "reward_std": 1.0}
    )
    history = fit_mlp_ensemble(ensemble, episodes[:2], episodes[2:], epochs=8, batch_size=16)
    assert history[-1]["train_nll"] < history[0]["train_nll"]

    obs, plan = torch.randn(2, 1, OBS), torch.randn(2, 4, 1)
    with torch.no_grad():
        got = ensemble.rollout(obs, torch.zeros(2, 0, 1), plan)
        paths = []
        for member in range(3):
            o, path = obs[:, 0], []
            for k in range(4):
                mean, _ = ensemble(o.expand(3, -1, -1), plan[:, k].expand(3, -1, -1))
                o = o + mean[member]  # delta_std 1, delta_mean 0
                path.append(o)
            paths.append(torch.stack(path, 1))
    torch.testing.assert_close(got, torch.stack(paths).mean(0))


# ---- the Lightning module -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def pendulum_data():
    return collect("Pendulum-v1", 600, seed=0, num_envs=4)


def tiny_module(**kwargs) -> WorldModelModule:
    settings = {"hidden_size": 8, "num_layers": 1, "mode": "sequential", "eval_ks": (1, 5), "eval_context": 4}
    return WorldModelModule(**(settings | kwargs))


def tiny_trainer(tmp_path, **kwargs) -> pl.Trainer:
    options = {"accelerator": "cpu", "logger": False, "enable_progress_bar": False, "enable_model_summary": False}
    return pl.Trainer(default_root_dir=tmp_path, **(options | kwargs))


def test_fit_logs_k_step_errors_and_the_checkpoint_restores_the_model(pendulum_data, tmp_path):
    pl.seed_everything(0)
    dm = TrajectoryDataModule.from_trajectories(
        pendulum_data, window=12, batch_size=8, val_fraction=0.25, test_fraction=0.25
    )
    module = tiny_module(learn_termination=False)
    trainer = tiny_trainer(tmp_path, max_epochs=1, limit_train_batches=3, limit_val_batches=1)
    trainer.fit(module, datamodule=dm)
    assert module.hparams.obs_dim == 3 and module.hparams.action_dim == 1
    assert {"val/loss", "val/ol_mse", "val/mse_k1", "val/mse_k5"} <= set(trainer.callback_metrics)
    (metrics,) = trainer.test(module, datamodule=dm, verbose=False)
    assert metrics["test/mse_k5"] > metrics["test/mse_k1"] > 0

    (ckpt,) = (tmp_path / "checkpoints").glob("*.ckpt")
    restored = WorldModelModule.load_from_checkpoint(ckpt)
    assert restored.model.normalizer_fitted
    torch.testing.assert_close(restored.model.normalizer.obs_std, torch.as_tensor(dm.stats["obs_std"]))
    inputs = (torch.randn(2, 4, 3), torch.randn(2, 3, 1), torch.randn(2, 6, 1))
    torch.testing.assert_close(restored(*inputs), module.eval()(*inputs))


def test_held_out_metrics_are_averaged_over_ddp_ranks_and_training_ones_are_not(pendulum_data, tmp_path, monkeypatch):
    """Under DDP each rank sees its shard of the validation/test windows: val/loss, which checkpoints monitor, and
    the test metrics must be means over all ranks (Lightning's sync_dist), not rank 0's alone."""
    synced: dict[str, bool] = {}
    log = pl.LightningModule.log

    def recording(self, name, value, *args, sync_dist: bool = False, **kwargs):
        synced[name] = sync_dist
        return log(self, name, value, *args, sync_dist=sync_dist, **kwargs)

    monkeypatch.setattr(pl.LightningModule, "log", recording)
    dm = TrajectoryDataModule.from_trajectories(
        pendulum_data, window=12, batch_size=8, val_fraction=0.25, test_fraction=0.25
    )
    module = tiny_module(learn_termination=False)
    trainer = tiny_trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=1, limit_test_batches=1)
    trainer.fit(module, datamodule=dm)
    trainer.test(module, datamodule=dm, verbose=False)
    held_out = {name: sync for name, sync in synced.items() if name.startswith(("val/", "test/"))}
    assert {"val/loss", "val/mse_k1", "test/loss", "test/mse_k5"} <= held_out.keys() and all(held_out.values())
    assert not any(sync for name, sync in synced.items() if name.startswith("train/"))


def test_model_sizes_that_do_not_fit_the_data_are_a_clear_error(pendulum_data, tmp_path):
    dm = TrajectoryDataModule.from_trajectories(
        pendulum_data, window=12, batch_size=8, val_fraction=0.25, test_fraction=0.25
    )
    module = tiny_module(obs_dim=3, action_dim=2)
    with pytest.raises(
        ValueError,
        match=r"action_dim=2 \(given, or recorded in the checkpoint\), but the data \(Pendulum-v1.*Box.*has 1; score",
    ):
        tiny_trainer(tmp_path, fast_dev_run=True).fit(module, datamodule=dm)


def test_an_eval_context_no_held_out_episode_reaches_is_refused_before_training(tmp_path, monkeypatch):
    """CartPole's random episodes are short: a Pendulum eval_context names the split, the setting and its bound."""
    data = collect("CartPole-v1", 300, seed=0, num_envs=4)
    dm = TrajectoryDataModule.from_trajectories(data, window=12, batch_size=8, val_fraction=0.25, test_fraction=0.25)
    monkeypatch.setattr(WorldModelModule, "training_step", lambda *args: pytest.fail("training started"))
    module = tiny_module(eval_context=500)
    match = r"eval_context=500 needs val/test episodes of at least 500 steps .* the longest val episode has \d+ steps"
    with pytest.raises(ValueError, match=match) as error:
        tiny_trainer(tmp_path, max_epochs=1).fit(module, datamodule=dm)
    longest = min(max(len(e.obs) for e in dm.episodes(split)) for split in ("val", "test"))
    fix = f"lower eval_context to at most {longest} (pararnn-ts fit: --model.init_args.eval_context"
    assert fix in str(error.value)


@pytest.mark.parametrize("setting", [{"num_heads": 2}, {"mode": "parallel"}])
def test_torch_gru_warns_that_it_ignores_the_settings_of_the_parallel_cells(setting):
    """``torch.nn.GRU`` has neither: they were ignored without a word, the fit the same as without them. A warning,
    not an error: checkpoints that recorded them still load."""
    with pytest.warns(UserWarning, match=rf"cell='torch_gru' is torch.nn.GRU.*{next(iter(setting))}=.* are ignored"):
        WorldModelModule(cell="torch_gru", **setting)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        WorldModelModule(cell="torch_gru")
