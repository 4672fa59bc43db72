"""World-model data: Gymnasium collection (Box and Discrete, autoreset, terminated vs truncated),
the trajectory file format, and the data module's episode splits, windows and statistics."""

from __future__ import annotations

import dataclasses
import re

import gymnasium as gym
import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.fabric.utilities.data import _set_sampler_epoch
from lightning.pytorch.utilities.combined_loader import _shutdown_workers_and_reset_iterator

from pararnn_ts.world.collect import (
    Trajectories,
    action_dim,
    collect,
    encode_actions,
    space_from_dict,
    space_to_dict,
)
from pararnn_ts.world.datamodule import TrajectoryDataModule, normalizer_stats, window_starts
from pararnn_ts.world.env import read_spaces
from pararnn_ts.world.model import DynamicsModel
from pararnn_ts.world.planners import CEMPlanner


@pytest.fixture(scope="module")
def pendulum() -> Trajectories:
    return collect("Pendulum-v1", 450, seed=3, num_envs=2)


@pytest.fixture(scope="module")
def cartpole() -> Trajectories:
    return collect("CartPole-v1", 300, seed=5, num_envs=3)


def replay(data: Trajectories, env_id: str, seed: int) -> None:
    """Step one env by hand with the recorded actions (single-env collection) and compare every field."""
    env = gym.make(env_id)
    obs, _ = env.reset(seed=seed)
    for i in range(len(data)):
        if i and data.episode[i] != data.episode[i - 1]:
            obs, _ = env.reset()
        np.testing.assert_allclose(data.obs[i], obs, rtol=0, atol=1e-6)
        obs, reward, terminated, truncated, _ = env.step(data.action[i])
        np.testing.assert_allclose(data.next_obs[i], obs, rtol=0, atol=1e-6)
        assert data.reward[i] == pytest.approx(reward, abs=1e-5)
        assert (data.terminated[i], data.truncated[i]) == (terminated, truncated)
    env.close()


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "CartPole-v1"])
def test_single_env_collection_equals_a_hand_written_loop(env_id):
    replay(collect(env_id, 260, seed=11, num_envs=1), env_id, seed=11)


def test_box_collection_truncates_pendulum_at_200_steps(pendulum):
    assert pendulum.obs.shape == pendulum.next_obs.shape == (450, 3)
    assert pendulum.action.shape == (450, 1) and pendulum.action.dtype == np.float32
    assert not pendulum.terminated.any()
    episodes = pendulum.episodes()
    assert [len(e.obs) for e in episodes] == [200, 200, 25, 25]  # two finished, two cut by the step budget
    for e in episodes[:2]:
        assert e.truncated[-1] and not e.truncated[:-1].any()
    for e in episodes:
        np.testing.assert_array_equal(e.obs[1:], e.next_obs[:-1])  # the autoreset step is never recorded
        assert abs(e.obs[0, 2]) <= 1  # a fresh reset: Pendulum starts with |θdot| <= 1
    assert pendulum.meta["env_seeds"] == [3, 4] and pendulum.meta["policy"] == "random"


def test_discrete_collection_stores_raw_actions_and_terminations(cartpole):
    assert cartpole.action.shape == (300,) and cartpole.action.dtype == np.int64
    assert cartpole.action_dim == 2
    assert cartpole.terminated.any() and not cartpole.truncated.any()  # random play falls long before 500 steps
    finished = 0
    for e in cartpole.episodes():
        np.testing.assert_array_equal(e.obs[1:], e.next_obs[:-1])
        assert not e.terminated[:-1].any()
        finished += int(e.terminated[-1])
    assert finished == cartpole.terminated.sum() >= 3
    one_hot = cartpole.episodes([0])[0].action
    np.testing.assert_array_equal(one_hot, np.eye(2, dtype=np.float32)[cartpole.action[cartpole.episode == 0]])


def test_a_given_batched_policy_drives_the_envs():
    def push_right(obs: np.ndarray) -> np.ndarray:
        assert obs.shape == (2, 4)
        return np.ones(len(obs), dtype=np.int64)

    data = collect("CartPole-v1", 60, seed=0, num_envs=2, policy=push_right)
    assert (data.action == 1).all() and data.meta["policy"] == "push_right"
    # pushing right only tips the pole over within a few dozen steps
    assert data.terminated.sum() >= 2


def test_a_policy_s_box_actions_are_clipped_and_bad_ones_refused():
    """As the world model's envs take actions: Box ones clipped to the bounds (±inf too), NaN and wrong shapes or
    Discrete values refused."""
    data = collect("Pendulum-v1", 20, seed=0, num_envs=2, policy=lambda obs: np.array([[5.0], [-np.inf]]))
    np.testing.assert_array_equal(np.unique(data.action), [-2.0, 2.0])  # Pendulum's bounds
    bad = {
        r"must have shape \(2, 1\) .*got shape \(2,\)": ("Pendulum-v1", lambda obs: np.zeros(2)),
        r"must have shape \(2, 1\) .*got shape \(3, 1\)": ("Pendulum-v1", lambda obs: np.zeros((3, 1))),
        "must be numbers .*got NaN": ("Pendulum-v1", lambda obs: np.array([[0.0], [np.nan]])),
        r"must be integers \(not bools or floats\)": ("CartPole-v1", lambda obs: np.full(2, 0.5)),
        r"must lie in the action space Discrete\(2\), got \[0, 2\]": ("CartPole-v1", lambda obs: np.array([0, 2])),
    }
    for message, (env_id, policy) in bad.items():
        with pytest.raises(ValueError, match="collect: the policy's actions " + message):
            collect(env_id, 10, seed=0, num_envs=2, policy=policy)


def test_encode_actions_and_spaces_round_trip():
    discrete = gym.spaces.Discrete(3, start=-1)
    np.testing.assert_array_equal(encode_actions(discrete, np.array([-1, 1, 0])), np.eye(3)[[0, 2, 1]])
    with pytest.raises(ValueError, match="outside"):
        encode_actions(discrete, np.array([2]))
    box = gym.spaces.Box(-2.0, 2.0, (2,), np.float32)
    assert action_dim(box) == 2 and action_dim(discrete) == 3
    for space in (discrete, box):
        assert space_from_dict(space_to_dict(space)) == space


def test_save_load_round_trip(pendulum, tmp_path):
    path = pendulum.save(tmp_path / "sub" / "pendulum.npz")
    assert path.is_file() and path.with_suffix(".json").is_file()
    loaded = Trajectories.load(path)
    for name in ("obs", "action", "reward", "next_obs", "terminated", "truncated", "episode"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(pendulum, name))
        assert getattr(loaded, name).dtype == getattr(pendulum, name).dtype
    assert loaded.meta == pendulum.meta
    assert loaded.action_space == gym.spaces.Box(-2.0, 2.0, (1,), np.float32)
    path.with_suffix(".json").unlink()
    with pytest.raises(FileNotFoundError, match="sidecar"):
        Trajectories.load(path)


def test_bad_env_id_and_unsupported_spaces_are_clear_errors():
    with pytest.raises(ValueError, match="pprint_registry"):
        collect("NoSuchEnv-v0", 10)
    with pytest.raises(ValueError, match="Discrete observation space.*Box"):
        collect("FrozenLake-v1", 10)
    with pytest.raises(ValueError, match="num_steps"):
        collect("Pendulum-v1", 0)


class ShapedBoxes(gym.Env):
    """Box observations and actions of any shape, random."""

    def __init__(self, obs_shape: tuple[int, ...] = (3,), action_shape: tuple[int, ...] = (1,)) -> None:
        self.observation_space = gym.spaces.Box(-1, 1, obs_shape, np.float32)
        self.action_space = gym.spaces.Box(-1, 1, action_shape, np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


@pytest.mark.parametrize(
    ("shapes", "match"),
    [
        ({"obs_shape": (2, 3)}, r"observations of shape \(2, 3\); world models take vectors.*FlattenObservation"),
        ({"obs_shape": (16, 16, 3)}, "Images need an encoder"),
        ({"action_shape": (2, 2)}, r"Box actions of shape \(2, 2\); world models take 1-D ones"),
    ],
)
def test_box_spaces_that_are_not_vectors_are_refused_where_data_is_collected_and_models_are_made(shapes, match):
    """Collecting them flattened an image into a huge vector, and planning sized the model by the first dimension."""
    gym.register("ShapedBoxes-v0", entry_point=ShapedBoxes, kwargs=shapes)
    try:
        with pytest.raises(ValueError, match=match):
            collect("ShapedBoxes-v0", 10)
        with pytest.raises(ValueError, match=match):
            read_spaces(ShapedBoxes(**shapes))  # what WorldModelEnv and rollouts are made with
        if "action_shape" in shapes:
            with pytest.raises(ValueError, match=match):
                CEMPlanner(DynamicsModel(3, 4, hidden_size=4), ShapedBoxes(**shapes).action_space)
    finally:
        del gym.registry["ShapedBoxes-v0"]


@pytest.mark.parametrize("field", ["obs", "next_obs", "reward", "action"])
def test_transitions_with_nan_or_inf_are_refused_naming_the_field_row_and_episode(field):
    """A NaN observation made a NaN normaliser mean (and a std of 1), and training then blamed the cell's input."""
    data = labelled([3, 4])
    columns = {name: getattr(data, name).copy() for name in ("obs", "action", "reward", "next_obs")}
    columns["action"] = columns["action"].astype(np.float32)
    columns[field][4] = np.inf if field == "reward" else np.nan
    fields = {**dataclasses.asdict(data), **columns}
    with pytest.raises(ValueError, match=rf"{field} has NaN or inf in 1 of 7 rows, first row 4 \(episode 1\)"):
        Trajectories(**fields)


def test_empty_trajectories_are_still_data():
    data = labelled([3])
    names = ("obs", "action", "reward", "next_obs", "terminated", "truncated", "episode")
    assert len(Trajectories(**{name: getattr(data, name)[:0] for name in names}, meta=data.meta)) == 0


# ---- the data module ------------------------------------------------------------------------
def labelled(lengths: list[int]) -> Trajectories:
    """Synthetic transitions whose observation is ``[episode, t, t²]``: every row says where it came from."""
    episode = np.concatenate([np.full(n, i) for i, n in enumerate(lengths)])
    t = np.concatenate([np.arange(n) for n in lengths]).astype(np.float32)
    obs = np.stack([episode.astype(np.float32), t, t**2], axis=1)
    meta = {
        "env_id": "Labelled-v0",
        "observation_space": space_to_dict(gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)),
        "action_space": space_to_dict(gym.spaces.Discrete(2)),
    }
    return Trajectories(
        obs=obs,
        action=(t.astype(np.int64) % 2),
        reward=t.copy(),
        next_obs=np.stack([episode.astype(np.float32), t + 1, (t + 1) ** 2], axis=1),
        terminated=np.concatenate([np.arange(n) == n - 1 for n in lengths]),
        truncated=np.zeros(len(t), bool),
        episode=episode.astype(np.int64),
        meta=meta,
    )


def test_window_starts_cover_every_step():
    assert window_starts(5, 8, 2) == [0]
    assert window_starts(8, 8, 2) == [0]
    assert window_starts(13, 8, 2) == [0, 2, 4, 5]
    assert window_starts(12, 4, 4) == [0, 4, 8]


def test_windows_never_cross_episode_boundaries():
    lengths = [3, 17, 9, 30, 8, 12, 25, 5, 20, 14]
    dm = TrajectoryDataModule.from_trajectories(labelled(lengths), window=8, stride=3, batch_size=4, seed=1)
    dm.setup("fit")
    for split in ("train", "val", "test"):
        covered = set()
        for item in dm.dataset(split):
            valid = item["mask"].bool()
            n = int(valid.sum())
            assert valid[:n].all() and not valid[n:].any()  # padding only at the end
            ep, t = item["obs"][:n, 0], item["obs"][:n, 1]
            assert (ep == ep[0]).all()  # one episode per window
            assert torch.equal(t, t[0] + torch.arange(n, dtype=t.dtype))  # consecutive steps
            assert n == min(8, lengths[int(ep[0])] - int(t[0]))
            assert (item["obs"][n:] == 0).all() and (item["terminated"][n:] == 0).all()
            covered |= {(int(ep[0]), int(s)) for s in t}
        expected = {(int(e), s) for e in dm.split_ids[split] for s in range(lengths[int(e)])}
        assert covered == expected
    batch = next(iter(dm.train_dataloader()))
    assert batch["obs"].shape == (4, 8, 3) and batch["action"].shape == (4, 8, 2) and batch["mask"].shape == (4, 8)


def test_episode_split_and_train_only_statistics():
    data = labelled([10 + 3 * i for i in range(10)])
    dm = TrajectoryDataModule.from_trajectories(data, val_fraction=0.2, test_fraction=0.1, seed=0)
    dm.setup()
    ids = {split: set(map(int, v)) for split, v in dm.split_ids.items()}
    assert (len(ids["val"]), len(ids["test"]), len(ids["train"])) == (2, 1, 7)
    assert ids["val"] | ids["test"] | ids["train"] == set(range(10))
    assert not (ids["val"] & ids["test"] or ids["val"] & ids["train"] or ids["test"] & ids["train"])

    train = np.isin(data.episode, sorted(ids["train"]))
    np.testing.assert_allclose(dm.stats["obs_mean"], data.obs[train].mean(0), rtol=1e-6)
    np.testing.assert_allclose(dm.stats["obs_std"], data.obs[train].std(0), rtol=1e-5)
    delta = data.next_obs[train] - data.obs[train]
    np.testing.assert_allclose(dm.stats["delta_mean"], delta.mean(0), rtol=1e-6)
    assert dm.stats["delta_std"][1] == 1.0  # constant delta of t: std 0 becomes 1
    assert dm.stats["reward_std"] == pytest.approx(data.reward[train].std(), rel=1e-5)
    np.testing.assert_allclose(dm.stats["action_mean"], np.eye(2)[data.action[train]].mean(0), rtol=1e-6)
    all_stats = normalizer_stats(data.episodes())
    assert not np.allclose(all_stats["obs_mean"], dm.stats["obs_mean"])  # held-out episodes are not used


def test_too_few_episodes_to_split_is_a_clear_error():
    dm = TrajectoryDataModule.from_trajectories(labelled([10, 10]), val_fraction=0.1, test_fraction=0.1)
    with pytest.raises(ValueError, match="at least one training episode"):
        dm.setup()


def test_collects_to_a_file_once_and_checks_the_env_id(tmp_path):
    path = tmp_path / "cartpole.npz"
    dm = TrajectoryDataModule("CartPole-v1", str(path), num_steps=200, num_envs=2, window=16)
    dm.prepare_data()
    assert path.is_file()
    dm.setup()
    assert dm.obs_dim == 4 and dm.action_dim == 2 and len(dm.data) == 200
    before = path.stat().st_mtime_ns
    again = TrajectoryDataModule(path=str(path), window=16)
    again.prepare_data()
    again.setup()
    assert path.stat().st_mtime_ns == before
    np.testing.assert_array_equal(again.data.obs, dm.data.obs)
    with pytest.raises(ValueError, match="holds 'CartPole-v1'"):
        TrajectoryDataModule("Pendulum-v1", str(path)).setup()
    with pytest.raises(ValueError, match="env_id.*path"):
        TrajectoryDataModule()


# ---- resuming: the batches of epoch e depend on (seed, e) only; files must be the collection asked for --------
class BatchRecorder(pl.LightningModule):
    """Learns nothing: records each training batch's windows as (epoch, [[episode, first step], ...])."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[tuple[int, list]] = []

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.seen.append((self.current_epoch, batch["obs"][:, 0, :2].tolist()))
        return self.weight * batch["obs"].mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)


def recorded_fit(folder, num_workers: int, max_epochs: int, ckpt_path=None, every_n_train_steps=None, max_steps=-1):
    """A fit of :class:`BatchRecorder` (a fresh data module, as a new process would build); returns the batches
    it trained on and its last checkpoint (with ``every_n_train_steps``, its checkpoints are all kept)."""
    pl.seed_everything(0)
    dm = TrajectoryDataModule.from_trajectories(
        labelled([12, 20, 9, 30, 16, 25, 14, 18, 22, 11]), window=8, stride=4, batch_size=4, seed=1,
        num_workers=num_workers,
    )  # fmt: skip
    checkpoint = pl.callbacks.ModelCheckpoint(
        dirpath=folder, save_last=True, every_n_train_steps=every_n_train_steps, save_top_k=-1
    )
    module = BatchRecorder()
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        max_steps=max_steps,
        callbacks=[checkpoint],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        accelerator="cpu",
    )
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    return module.seen, checkpoint.last_model_path


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_resumed_fit_trains_on_the_batches_of_an_uninterrupted_one(tmp_path, num_workers):
    straight, _ = recorded_fit(tmp_path / "straight", num_workers, max_epochs=3)
    per_epoch = len(straight) // 3
    epochs = [[windows for epoch, windows in straight if epoch == e] for e in range(3)]
    assert per_epoch > 3 and epochs[0] != epochs[1] and epochs[0] != epochs[2]

    _, stopped = recorded_fit(tmp_path / "epoch_end", num_workers, max_epochs=2)  # stops after epoch 1
    resumed, _ = recorded_fit(tmp_path / "resumed", num_workers, max_epochs=3, ckpt_path=stopped)
    assert resumed == straight[2 * per_epoch :]  # epoch 2 as if never stopped, not epoch 0 again

    # the same when the runs count steps (Lightning's epoch count for set_epoch then runs one ahead after resuming)
    _, stopped = recorded_fit(tmp_path / "steps", num_workers, max_epochs=-1, max_steps=2 * per_epoch)
    resumed, _ = recorded_fit(tmp_path / "resumed_steps", num_workers, -1, stopped, max_steps=3 * per_epoch)
    assert resumed == straight[2 * per_epoch :]

    recorded_fit(tmp_path / "every", num_workers, max_epochs=2, every_n_train_steps=per_epoch + 2)
    mid_epoch = tmp_path / "every" / f"epoch=1-step={per_epoch + 2}.ckpt"  # two batches into epoch 1
    resumed, _ = recorded_fit(tmp_path / "resumed_mid", num_workers, max_epochs=3, ckpt_path=mid_epoch)
    assert resumed == straight[per_epoch + 2 :]  # the rest of epoch 1, then epoch 2


@pytest.mark.parametrize("num_workers", [0, 2])
def test_the_training_order_is_set_by_the_epoch_before_the_first_batch(num_workers):
    """Each epoch a permutation of the windows of its own; Lightning calls iter() on the training loader before
    it sets the epoch of a fit that starts or resumes, and a DataLoader with workers draws indices at iter()."""
    data = labelled([12, 20, 9, 30, 16, 25, 14])
    dm = TrajectoryDataModule.from_trajectories(data, window=8, stride=4, seed=2, num_workers=num_workers)
    dm.setup("fit")

    def starts(batches) -> list[list[float]]:
        return torch.cat([batch["obs"][:, 0, :2] for batch in batches]).tolist()

    loaders = [dm.train_dataloader(), dm.train_dataloader()]
    first = starts(loaders[0])
    passes = iter(loaders[1])
    _set_sampler_epoch(loaders[1], 1)  # as Lightning's fit loop does before each epoch
    second = starts(passes)
    _set_sampler_epoch(loaders[1], 0)
    assert starts(loaders[1]) == first and second != first and sorted(second) == sorted(first)
    for loader in loaders:
        _shutdown_workers_and_reset_iterator(loader)  # as Lightning does after a fit


def test_a_file_collected_with_other_settings_is_refused(tmp_path):
    path = tmp_path / "pendulum.npz"
    asked = {"num_steps": 900, "seed": 0, "num_envs": 2}
    TrajectoryDataModule("Pendulum-v1", str(path), **asked).setup()
    again = TrajectoryDataModule("Pendulum-v1", str(path), **asked)
    again.setup()  # the same collection: read
    assert len(again.data) == 900
    for change, recorded in (
        ({"num_steps": 1200}, "num_steps=900"),
        ({"seed": 4}, "seed=0"),
        ({"num_envs": 3}, "num_envs=2"),
    ):
        with pytest.raises(ValueError, match=re.escape(f"{path} was collected with {recorded}")) as error:
            TrajectoryDataModule("Pendulum-v1", str(path), **(asked | change)).setup()
        name, value = next(iter(change.items()))
        assert f"asks for {name}={value}" in str(error.value)
        assert "--data.init_args.path" in str(error.value) and f"delete {path}" in str(error.value)
    assert len(Trajectories.load(path)) == 900  # nothing was overwritten
    as_it_is = TrajectoryDataModule(path=str(path), num_steps=1200, seed=4)  # no env_id: any file, read as it is
    as_it_is.setup()
    assert len(as_it_is.data) == 900

    mixed = tmp_path / "mixed.npz"
    data = Trajectories.load(path)
    data.followed_by(data).save(mixed)
    with pytest.raises(ValueError, match=r"policy='mixed', but this run asks for num_steps=900, policy='random'"):
        TrajectoryDataModule("Pendulum-v1", str(mixed), **asked).setup()


def test_env_kwargs_are_recorded_and_data_of_another_env_variant_is_refused(tmp_path):
    """Pendulum with g=2 and 20-step episodes is not Pendulum-v1: its file says so, and a data module that asks for
    the registered env refuses it (read as it is without env_id)."""
    data = collect("Pendulum-v1", 80, seed=0, num_envs=2, g=2.0, max_episode_steps=20)
    assert data.meta["env_kwargs"] == {"g": 2.0, "max_episode_steps": 20}
    assert collect("Pendulum-v1", 4, num_envs=2).meta["env_kwargs"] == {}
    path = data.save(tmp_path / "pendulum_g2.npz")
    assert Trajectories.load(path).meta["env_kwargs"] == {"g": 2.0, "max_episode_steps": 20}
    with pytest.raises(ValueError, match=r"collected with env_kwargs=\{'g': 2.0, 'max_episode_steps': 20\}"):
        TrajectoryDataModule("Pendulum-v1", str(path), num_steps=80, num_envs=2).setup()
    as_it_is = TrajectoryDataModule(path=str(path), num_steps=80, num_envs=2, val_fraction=0.25, test_fraction=0.25)
    as_it_is.setup()
    assert len(as_it_is.data) == 80


def test_collecting_into_a_path_never_replaces_a_file_that_is_not_a_trajectory_file(tmp_path):
    """The sidecar of ``notes.npz`` is ``notes.json``: a user's file of that name stays, unless asked to replace."""
    notes = tmp_path / "notes.json"
    notes.write_text('{"my": "notes"}')
    module = TrajectoryDataModule("Pendulum-v1", str(notes), num_steps=16, num_envs=2, val_fraction=0, test_fraction=0)
    with pytest.raises(FileExistsError, match=r"would replace .*notes\.json, which is not a trajectory file") as error:
        module.setup()
    assert "give another file to collect into (--data.init_args.path)" in str(error.value)
    assert notes.read_text() == '{"my": "notes"}' and not notes.with_suffix(".npz").exists()
    data = collect("Pendulum-v1", 16, num_envs=2)
    with pytest.raises(FileExistsError, match="Trajectories.save\\(path, overwrite=True\\)"):
        data.save(notes)
    (tmp_path / "bare.npz").write_bytes(b"a user's array")  # an .npz without a sidecar is not ours either
    with pytest.raises(FileExistsError, match=r"bare\.npz, which is not a trajectory file \(its sidecar bare\.json"):
        data.save(tmp_path / "bare.npz")
    path = data.save(tmp_path / "ours.npz")
    data.followed_by(data).save(path)  # our own files: replaced
    assert len(Trajectories.load(path)) == 32
    data.save(notes, overwrite=True)
    assert len(Trajectories.load(notes)) == 16


def test_unsupported_spaces_say_how_to_flatten_with_an_env_id_and_the_fix_works():
    with pytest.raises(ValueError, match=r"Tuple observation space; world models need a Box \(register a flattened"):
        collect("Blackjack-v1", 10)
    gym.register(
        "BlackjackFlatTest-v0",
        entry_point=lambda **kwargs: gym.wrappers.FlattenObservation(gym.make("Blackjack-v1", **kwargs)),
    )
    try:
        assert collect("BlackjackFlatTest-v0", 10, num_envs=2).meta["observation_space"]["type"] == "Box"
    finally:
        gym.registry.pop("BlackjackFlatTest-v0")
