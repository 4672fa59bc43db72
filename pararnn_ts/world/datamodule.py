"""``TrajectoryDataModule``: Gymnasium transitions split by episode and cut into windows for dynamics models."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..loaders import EpochShuffleSampler, ResumableDataLoader
from .collect import Episode, Trajectories, collect, recorded_env, refuse_foreign

SPLITS = ("train", "val", "test")
#: standard deviations below this are treated as constant features (std 1)
MIN_STD = 1e-6


def normalizer_stats(episodes: list[Episode]) -> dict[str, np.ndarray]:
    """Means and standard deviations of ``obs``, ``delta = next_obs − obs``, ``reward`` and ``action``.

    Returns float32 arrays ``obs_mean``/``obs_std``/``delta_mean``/``delta_std`` ``(O,)``,
    ``action_mean``/``action_std`` ``(A,)`` and scalars ``reward_mean``/``reward_std`` ``()``;
    standard deviations below :data:`MIN_STD` become 1.
    """
    if not episodes:
        raise ValueError("normalizer_stats: no episodes to fit the statistics on")
    obs = np.concatenate([e.obs for e in episodes])
    columns = {
        "obs": obs,
        "delta": np.concatenate([e.next_obs for e in episodes]) - obs,
        "reward": np.concatenate([e.reward for e in episodes]),
        "action": np.concatenate([e.action for e in episodes]),
    }
    stats = {}
    for name, values in columns.items():
        values = values.astype(np.float64)
        std = values.std(axis=0)
        stats[f"{name}_mean"] = values.mean(axis=0).astype(np.float32)
        stats[f"{name}_std"] = np.where(std > MIN_STD, std, 1.0).astype(np.float32)
    return stats


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Starts of ``window``-step windows inside ``length`` steps, every ``stride`` steps, the tail covered.

    An episode no longer than ``window`` gives the one window ``[0]`` (padded by the dataset).
    """
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, stride))
    return starts if starts[-1] == length - window else [*starts, length - window]


class WindowDataset(Dataset):
    """Windows of ``window`` consecutive steps of one episode each, never across episodes.

    Items are dicts of float32 tensors: ``obs``/``next_obs`` ``(window, O)``, ``action``
    ``(window, A)``, ``reward``/``terminated``/``mask`` ``(window,)``; windows of short episodes
    are padded with zeros after their end, where ``mask`` is 0.
    """

    FIELDS = ("obs", "action", "reward", "next_obs", "terminated")

    def __init__(self, episodes: list[Episode], window: int, stride: int) -> None:
        if not episodes:
            raise ValueError("WindowDataset: no episodes")
        self.window = window
        self.arrays = {
            name: np.concatenate([getattr(e, name) for e in episodes]).astype(np.float32) for name in self.FIELDS
        }
        offsets = np.cumsum([0] + [len(e.obs) for e in episodes])
        self.index = [
            (offsets[i] + start, min(window, len(e.obs) - start))
            for i, e in enumerate(episodes)
            for start in window_starts(len(e.obs), window, stride)
        ]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        start, length = self.index[i]
        item = {}
        for name, values in self.arrays.items():
            padded = np.zeros((self.window, *values.shape[1:]), dtype=np.float32)
            padded[:length] = values[start : start + length]
            item[name] = torch.from_numpy(padded)
        mask = torch.zeros(self.window)
        mask[:length] = 1
        item["mask"] = mask
        return item


class TrajectoryDataModule(pl.LightningDataModule):
    """Transitions of a Gymnasium env, split by episode, served as windows.

    Data comes from ``path`` (a ``.npz`` written by :meth:`~pararnn_ts.world.collect.Trajectories.save`),
    or is collected with a random policy from ``env_id``: in ``prepare_data`` and saved to ``path``
    when ``path`` is given and missing, else in ``setup`` (collection is seeded, so every process
    gets the same data). :meth:`from_trajectories` takes data already in memory.

    A file at ``path`` read with ``env_id`` given stands for that collection: it must have been collected
    with this ``num_steps``, ``seed`` and ``num_envs`` (and the random policy, from the registered env without
    keyword arguments), else ``setup`` refuses it. Collecting into ``path`` never replaces a file that is not
    a trajectory file (:meth:`~pararnn_ts.world.collect.Trajectories.save`).
    With ``env_id=None`` any trajectory file is read as it is.

    Episodes are shuffled with ``seed`` and ``val_fraction``/``test_fraction`` of them held out
    (at least one each when the fraction is > 0). Normalisation statistics (:attr:`stats`, see
    :func:`normalizer_stats`) are fitted on the training episodes only. Training windows are shuffled
    per epoch from the stream ``(seed, epoch)``, so a resumed run sees the batches the uninterrupted run
    would have, mid-epoch too (:mod:`pararnn_ts.loaders`).

    Args:
        env_id: Gymnasium id to collect from (also checked against the file's when both are given).
        path: trajectory file to read, or to write the collection to.
        num_steps: transitions to collect.
        seed: seeds collection, the episode split and the training windows' order (with the epoch).
        num_envs: environment copies stepped together while collecting.
        window: steps per training window.
        stride: steps between training windows' starts (default ``window // 4``); validation and
            test windows do not overlap.
        batch_size: windows per batch.
        val_fraction, test_fraction: shares of episodes held out.
        num_workers: DataLoader worker processes.

    Batches: the dicts of :class:`WindowDataset` with a leading batch dimension.

    Errors name the options of the command that is running, from :attr:`options` (argument name → option;
    ``pararnn-ts fit``'s by default, a caller with other flags sets its own, e.g. ``world-eval``'s ``--data``).
    """

    #: the command-line option of each argument, for errors (``pararnn-ts fit``'s; arguments missing: no option)
    options: dict[str, str] = {
        name: f"--data.init_args.{name}" for name in ("env_id", "path", "num_steps", "seed", "num_envs")
    }
    #: the arguments that decide which transitions there are and which episodes are held out (``pararnn-ts validate``
    #: and ``test`` warn when they differ from the checkpoint's)
    split_arguments = ("env_id", "path", "num_steps", "seed", "num_envs", "val_fraction", "test_fraction")

    def __init__(
        self,
        env_id: str | None = None,
        path: str | None = None,
        num_steps: int = 10_000,
        seed: int = 0,
        num_envs: int = 8,
        window: int = 64,
        stride: int | None = None,
        batch_size: int = 32,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if env_id is None and path is None:
            raise ValueError("TrajectoryDataModule: give env_id (to collect), path (to load), or both")
        for name, value in (("num_steps", num_steps), ("window", window), ("batch_size", batch_size)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"TrajectoryDataModule: {name} must be a positive int, got {value!r}")
        stride = max(1, window // 4) if stride is None else stride
        if not isinstance(stride, int) or stride < 1:
            raise ValueError(f"TrajectoryDataModule: stride must be a positive int or None, got {stride!r}")
        if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
            raise ValueError(
                f"TrajectoryDataModule: val_fraction={val_fraction} and test_fraction={test_fraction} must lie in "
                "[0, 1) and leave episodes for training"
            )
        self.save_hyperparameters()
        self.env_id, self.path, self.num_steps, self.seed, self.num_envs = env_id, path, num_steps, seed, num_envs
        self.window, self.stride, self.batch_size, self.num_workers = window, stride, batch_size, num_workers
        self.fractions = {"val": val_fraction, "test": test_fraction}
        self.data: Trajectories | None = None
        self.split_ids: dict[str, np.ndarray] = {}
        self.stats: dict[str, np.ndarray] = {}

    @classmethod
    def from_trajectories(cls, data: Trajectories, **kwargs: Any) -> TrajectoryDataModule:
        """A data module over ``data`` (no collection, no file).

        Its hyperparameters (saved in checkpoints) record the data as it is: ``num_steps`` its length, and
        ``trajectories`` how it was made (``policy``, ``seed`` and ``num_envs`` of its metadata).
        """
        module = cls(env_id=data.meta.get("env_id", "in-memory"), num_steps=max(1, len(data)), **kwargs)
        made = {name: data.meta[name] for name in ("policy", "seed", "num_envs") if name in data.meta}
        module.hparams["trajectories"] = {"in_memory": True, **made}
        module.data = data
        return module

    # ---- data ---------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Collect and save to ``path`` when it is given, missing, and ``env_id`` is known."""
        if self.data is None and self.path is not None and not Path(self.path).with_suffix(".npz").is_file():
            if self.env_id is None:
                raise FileNotFoundError(
                    f"TrajectoryDataModule: {self.path} does not exist and no env_id to collect from"
                )
            path = Path(self.path).with_suffix(".npz")
            option = self.options.get("path")
            refuse_foreign(path, "give another file to collect into" + (f" ({option})" if option else ""))
            self._collect().save(path)

    def setup(self, stage: str | None = None) -> None:
        if self.split_ids:
            return
        if self.data is None:
            if self.path is not None:
                self.prepare_data()
                self.data = Trajectories.load(self.path)
                self._check_file(self.data.meta)
            else:
                self.data = self._collect()
        self.split_ids = self._split(self.data.episode_ids)
        self.stats = normalizer_stats(self.episodes("train"))

    def _check_file(self, meta: dict[str, Any]) -> None:
        """Refuse a file at ``path`` that is not the collection ``env_id`` asks for (this ``num_steps``, ``seed``,
        ``num_envs``, random policy), as far as its sidecar records it; without ``env_id`` any file is read."""
        if self.env_id is None:
            return
        stored = meta.get("env_id")
        if stored is not None and stored != self.env_id:
            raise ValueError(
                f"TrajectoryDataModule: {self.path} holds {stored!r} transitions, not env_id={self.env_id!r}"
            )
        requested = {"num_steps": self.num_steps, "seed": self.seed, "num_envs": self.num_envs, "policy": "random"}
        requested["env_kwargs"] = {}  # the registered env as it is
        differ = {name: value for name, value in requested.items() if name in meta and meta[name] != value}
        if differ:
            path = Path(self.path).with_suffix(".npz")
            recorded = ", ".join(f"{name}={meta[name]!r}" for name in differ)
            asked = ", ".join(f"{name}={value!r}" for name, value in differ.items())
            fixes = [f"delete {path} and {path.with_suffix('.json')} to collect anew"]
            if "path" in self.options:
                fixes.insert(0, f"give another file to collect into ({self.options['path']})")
            if all(name in self.options for name in differ):
                flags = ", ".join(f"{self.options[name]} {meta[name]}" for name in differ)
                fixes.append(f"ask for what the file holds ({flags})")
            if "env_id" in self.options:
                fixes.append(f"read any trajectory file as it is ({self.options['env_id']} null)")
            raise ValueError(
                f"TrajectoryDataModule: {path} was collected with {recorded}, but this run asks for {asked} (the "
                f"sidecar {path.with_suffix('.json').name} records how the file was collected). To go on, "
                + "; or ".join(fixes)
            )

    def _collect(self) -> Trajectories:
        return collect(self.env_id, self.num_steps, seed=self.seed, num_envs=self.num_envs)

    def _split(self, ids: np.ndarray) -> dict[str, np.ndarray]:
        shuffled = np.random.default_rng(self.seed).permutation(ids)
        held = {split: (max(1, round(f * len(ids))) if f > 0 else 0) for split, f in self.fractions.items()}
        if len(ids) - held["val"] - held["test"] < 1:
            raise ValueError(
                f"TrajectoryDataModule: {len(ids)} episodes cannot give {held['val']} validation, {held['test']} test "
                "and at least one training episode; collect more steps or lower val_fraction/test_fraction"
            )
        val_end = held["val"] + held["test"]
        return {
            "val": np.sort(shuffled[: held["val"]]),
            "test": np.sort(shuffled[held["val"] : val_end]),
            "train": np.sort(shuffled[val_end:]),
        }

    def _require_setup(self) -> Trajectories:
        if self.data is None or not self.split_ids:
            raise RuntimeError("TrajectoryDataModule: call setup() first")
        return self.data

    def episodes(self, split: str) -> list[Episode]:
        """The episodes of ``split`` (``"train"``, ``"val"`` or ``"test"``)."""
        if split not in SPLITS:
            raise ValueError(f"split={split!r} is not one of {SPLITS}")
        return self._require_setup().episodes(self.split_ids[split])

    @property
    def source_env(self) -> str | None:
        """The env the transitions come from: ``env_id``, else the one a file read as it is records (``None``:
        unknown)."""
        if self.env_id is not None or self.data is not None:
            return self.env_id or self.data.meta.get("env_id")
        return None if self.path is None else recorded_env(self.path)

    @property
    def obs_dim(self) -> int:
        return self._require_setup().obs_dim

    @property
    def action_dim(self) -> int:
        return self._require_setup().action_dim

    @property
    def action_space(self) -> spaces.Space:
        return self._require_setup().action_space

    @property
    def observation_space(self) -> spaces.Space:
        return self._require_setup().observation_space

    # ---- loaders ------------------------------------------------------------------------
    def dataset(self, split: str) -> WindowDataset:
        """Windows of ``split``'s episodes (training ones every ``stride`` steps, others without overlap)."""
        episodes = self.episodes(split)
        if not episodes:
            raise ValueError(
                f"TrajectoryDataModule: no {split} episodes; set {split}_fraction > 0, or skip that loop "
                f"(e.g. trainer.limit_{split}_batches=0)"
            )
        return WindowDataset(episodes, self.window, self.stride if split == "train" else self.window)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    @property
    def test_dataloader(self) -> Callable[[], DataLoader]:
        """The test episodes' windows, when ``test_fraction > 0``. With ``test_fraction=0`` this is Lightning's
        unimplemented hook, so ``pararnn-ts fit`` runs no test after training and ``pararnn-ts test`` is refused."""
        if self.fractions["test"] > 0:
            return self.held_out_test_dataloader
        return super().test_dataloader

    def held_out_test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def check_test_split(self) -> None:
        """Raise ``ValueError`` saying how to make one if there is no test split (for ``pararnn-ts test``)."""
        if self.fractions["test"] == 0:
            raise ValueError(
                "TrajectoryDataModule has no test split: test_fraction=0 holds out no episodes; train with "
                "--data.init_args.test_fraction (e.g. 0.1) and test with it, or score a checkpoint with pararnn-ts "
                "validate"
            )

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        dataset = self.dataset(split)
        if not shuffle:
            return DataLoader(
                dataset,
                batch_size=self.batch_size,
                num_workers=self.num_workers,
                persistent_workers=self.num_workers > 0,
            )
        loader = ResumableDataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=EpochShuffleSampler(len(dataset), self.seed),
            generator=torch.Generator().manual_seed(self.seed),  # worker seeds: the global generator is not drawn
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )
        return loader.follow(self)
