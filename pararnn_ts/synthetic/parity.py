"""The Parity task (ParaRNN paper, Table 1): tag every position of a bit string with the parity
(XOR) of the bits so far.

Every batch holds strings of one length, so nothing is padded or masked. Batch ``i`` of a split
is a pure function of ``(seed, split, i)``: runs are reproducible, workers and processes can
draw any batch independently, and the train, validation and test splits never share a stream.
"""

from __future__ import annotations

from collections.abc import Iterator

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from ..loaders import ResumableDataLoader

#: stream ids that keep the splits' random numbers apart
SPLITS = {"train": 0, "val": 1, "test": 2}


def parity_batch(rng: np.random.Generator, batch_size: int, length: int) -> dict[str, Tensor]:
    """``batch_size`` random bit strings of ``length`` bits and their running parity.

    Returns:
        ``{"inputs": (batch_size, length), "targets": (batch_size, length)}``, both int64 in {0, 1};
        ``targets[:, t]`` is the XOR of ``inputs[:, :t + 1]``.
    """
    bits = rng.integers(0, 2, size=(batch_size, length), dtype=np.int64)
    return {"inputs": torch.from_numpy(bits), "targets": torch.from_numpy(np.cumsum(bits, axis=1) % 2)}


def check_lengths(min_len: int, max_len: int) -> None:
    """Raise a ``ValueError`` naming the argument unless ``1 <= min_len <= max_len``."""
    if not isinstance(min_len, int) or min_len < 1:
        raise ValueError(f"min_len must be an int >= 1, got {min_len!r}")
    if not isinstance(max_len, int) or max_len < min_len:
        raise ValueError(f"max_len must be an int >= min_len={min_len}, got {max_len!r}; swap or fix the bounds")


class ParityBatches(Dataset):
    """Batch ``i`` of a split: ``batch_size`` strings of one length, drawn from the stream ``(seed, split, i)``.

    Subclasses say how batch ``i`` picks its length (:meth:`length`) and how many batches there are.
    """

    def __init__(self, batch_size: int, min_len: int, max_len: int, seed: int, split: str) -> None:
        check_lengths(min_len, max_len)
        if split not in SPLITS:
            raise ValueError(f"split={split!r} is not one of {tuple(SPLITS)}")
        self.batch_size, self.min_len, self.max_len = batch_size, min_len, max_len
        self.seed, self.split = seed, split

    def length(self, index: int, rng: np.random.Generator) -> int:
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        rng = np.random.default_rng([self.seed, SPLITS[self.split], index])
        return parity_batch(rng, self.batch_size, self.length(index, rng))


class RandomLengthParity(ParityBatches):
    """Training stream: batch ``i`` (any ``i >= 0``) has a length drawn uniformly from ``[min_len, max_len]``."""

    def length(self, index: int, rng: np.random.Generator) -> int:
        return int(rng.integers(self.min_len, self.max_len + 1))


class AllLengthsParity(ParityBatches):
    """Evaluation set: ``batches_per_length`` batches of every length in ``[min_len, max_len]``."""

    def __init__(self, batch_size: int, min_len: int, max_len: int, seed: int, split: str, batches_per_length: int = 1):
        super().__init__(batch_size, min_len, max_len, seed, split)
        self.num_lengths = max_len - min_len + 1
        self.batches_per_length = batches_per_length

    def __len__(self) -> int:
        return self.num_lengths * self.batches_per_length

    def length(self, index: int, rng: np.random.Generator) -> int:
        return self.min_len + index % self.num_lengths


class EpochSampler(Sampler[int]):
    """Yields batch indices ``[epoch·n, (epoch+1)·n)``: fresh batches every epoch.

    Lightning calls :meth:`set_epoch` before each epoch (as for ``DistributedSampler``).
    """

    def __init__(self, batches_per_epoch: int) -> None:
        self.batches_per_epoch = batches_per_epoch
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[int]:
        start = self.epoch * self.batches_per_epoch
        return iter(range(start, start + self.batches_per_epoch))


class ParityDataModule(pl.LightningDataModule):
    """Random bit strings with their running parity as per-position targets.

    Batches are ``{"inputs", "targets"}`` of shape ``(batch_size, T)`` (see :func:`parity_batch`),
    with one ``T`` per batch. Training draws ``T`` uniformly from ``[min_len, max_len]`` and new
    strings every epoch; validation and test hold ``eval_batches_per_length`` batches of every
    length in ``[min_len, max_len]``, fixed per ``seed`` and drawn from streams of their own.
    Generation is a few microseconds per batch, so it runs in the main process.

    Args:
        batch_size: strings per batch.
        min_len, max_len: bounds of the string lengths, inclusive (the paper: 16 and 256).
        batches_per_epoch: training batches per epoch.
        eval_batches_per_length: validation (and test) batches of each length.
        seed: seeds all three splits (each through its own stream).
    """

    def __init__(
        self,
        batch_size: int = 64,
        min_len: int = 16,
        max_len: int = 256,
        batches_per_epoch: int = 100,
        eval_batches_per_length: int = 1,
        seed: int = 0,
    ) -> None:
        super().__init__()
        check_lengths(min_len, max_len)
        for name, value in (
            ("batch_size", batch_size),
            ("batches_per_epoch", batches_per_epoch),
            ("eval_batches_per_length", eval_batches_per_length),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ParityDataModule: {name} must be a positive int, got {value!r}")
        self.save_hyperparameters()
        self.batch_size, self.min_len, self.max_len = batch_size, min_len, max_len
        self.batches_per_epoch = batches_per_epoch
        self.eval_batches_per_length = eval_batches_per_length
        self.seed = seed

    def _eval_set(self, split: str) -> AllLengthsParity:
        return AllLengthsParity(
            self.batch_size, self.min_len, self.max_len, self.seed, split, self.eval_batches_per_length
        )

    def train_dataloader(self) -> DataLoader:
        """Epoch ``e``'s batches depend on ``(seed, e)`` alone, and a fit resumed mid-epoch goes on with the rest."""
        data = RandomLengthParity(self.batch_size, self.min_len, self.max_len, self.seed, "train")
        return ResumableDataLoader(data, batch_size=None, sampler=EpochSampler(self.batches_per_epoch)).follow(self)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self._eval_set("val"), batch_size=None)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self._eval_set("test"), batch_size=None)
