"""Training loaders whose passes are epochs and whose place survives a checkpoint: a fit resumed from any
checkpoint, mid-epoch included, trains on the batches the uninterrupted fit would have.

Two things make that so. Epoch ``e``'s batches depend on ``(seed, e)`` alone (a sampler such as
:class:`EpochShuffleSampler`, or the caller's own per-epoch stream). And the epoch of a pass is taken when the
pass starts, on its first batch: the trainer's ``current_epoch`` (Lightning calls ``iter()`` on the training
loader before it moves on to the epoch when a fit starts or resumes, and the epoch its fit loop passes to
``set_epoch`` runs one ahead of ``current_epoch`` once a ``max_steps`` run is resumed). Lightning saves a
training loader's ``state_dict`` in its checkpoints and hands it to ``load_state_dict`` on resume; a pass of the
same epoch then skips (makes and drops) the batches already served.

A leaf module (it imports nothing of ``pararnn_ts``), for the data modules of every task.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self from Python 3.11


class EpochShuffleSampler(Sampler[int]):
    """A permutation of ``range(num_items)`` per epoch, drawn from the stream ``(seed, epoch)`` alone; Lightning
    calls :meth:`set_epoch` before each epoch (as for a ``DistributedSampler``)."""

    def __init__(self, num_items: int, seed: int = 0) -> None:
        self.num_items, self.seed, self.epoch = num_items, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_items

    def __iter__(self) -> Iterator[int]:
        return iter(np.random.default_rng([self.seed, self.epoch]).permutation(self.num_items).tolist())


class ResumablePasses:
    """What makes a training loader resumable (see the module docstring); a subclass makes the batches of an
    epoch (:meth:`epoch_batches`) and has a ``sampler`` whose ``epoch`` / ``set_epoch`` Lightning drives.

    ``current_epoch``: the trainer's epoch (set by :meth:`follow`), ``None`` outside a fit; without it, or where
    it gives ``None``, a pass is of the sampler's epoch.
    """

    sampler: Any
    current_epoch: Callable[[], int | None] | None = None
    resume_at: dict[str, int] | None = None

    def epoch_batches(self, epoch: int) -> Iterator[Any]:
        """The batches of ``epoch``, all of them (the ones a resumed pass skips included)."""
        raise NotImplementedError

    def follow(self, datamodule: Any) -> Self:
        """Take each pass's epoch from ``datamodule``'s trainer (its ``current_epoch`` in a fit); returns self."""
        self.current_epoch = lambda: getattr(datamodule.trainer, "current_epoch", None)
        return self

    @property
    def epoch(self) -> int:
        """The sampler's epoch (0 for a sampler without one)."""
        return getattr(self.sampler, "epoch", 0)

    @property
    def position(self) -> dict[str, int]:
        """``{"epoch", "batches"}``: the epoch of the current pass and the batches it has served; until a pass starts
        after :meth:`load_state_dict`, the position loaded (a checkpoint saved then keeps it)."""
        if self.resume_at is not None:
            return dict(self.resume_at)
        return self.__dict__.setdefault("_position", {"epoch": self.epoch, "batches": 0})

    def rewind(self, batches: int) -> None:
        """Count at most ``batches`` of the current pass's batches as served: a fit stopped mid-batch by Ctrl-C
        saves only those whose training step finished, and a pass resumed from there serves the others again."""
        if self.resume_at is None:
            self.position["batches"] = min(self.position["batches"], batches)

    def passes(self) -> Iterator[Any]:
        """One pass, a generator: nothing happens before its first batch is asked for."""
        epoch = self.current_epoch() if self.current_epoch is not None else None
        if epoch is None:
            epoch = self.epoch
        elif hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        resume, self.resume_at = self.resume_at, None
        skip = resume["batches"] if resume is not None and resume["epoch"] == epoch else 0
        self._position = {"epoch": epoch, "batches": 0}
        # a resumed pass was begun before the checkpoint: beginning it again must not draw from torch's global
        # random stream (DataLoader.__iter__ draws its workers' seed there), which the checkpoint may have restored
        batches = self.epoch_batches(epoch) if skip == 0 else without_random_draws(self.epoch_batches, epoch)
        for batch in batches:
            self._position["batches"] += 1
            if self._position["batches"] > skip:
                yield batch

    def state_dict(self) -> dict[str, int]:
        """:attr:`position`, which Lightning saves in its checkpoints."""
        return dict(self.position)

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.resume_at = {"epoch": int(state["epoch"]), "batches": int(state["batches"])}


def without_random_draws(make: Callable[[int], Iterator[Any]], epoch: int) -> Iterator[Any]:
    """``make(epoch)``, with torch's global random state as it was before."""
    state = torch.get_rng_state()
    try:
        return make(epoch)
    finally:
        torch.set_rng_state(state)


class ResumableDataLoader(ResumablePasses, DataLoader):
    """A ``DataLoader`` whose passes are resumable epochs (:class:`ResumablePasses`): give it a sampler whose
    order depends on ``(seed, epoch)`` alone, and let it :meth:`~ResumablePasses.follow` its data module."""

    def __iter__(self) -> Iterator[Any]:
        return self.passes()

    def epoch_batches(self, epoch: int) -> Iterator[Any]:
        # DataLoader.__iter__ draws the sampler's indices (eagerly with workers): only once the epoch is set
        return DataLoader.__iter__(self)
