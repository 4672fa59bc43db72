"""The place of a resumable training loader (``pararnn_ts.loaders``) in what a checkpoint saves."""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

from pararnn_ts.loaders import EpochShuffleSampler, ResumableDataLoader


def loader() -> ResumableDataLoader:
    data = TensorDataset(torch.arange(12))
    return ResumableDataLoader(data, batch_size=2, sampler=EpochShuffleSampler(len(data), seed=1))


def firsts(batches) -> list[int]:
    return [int(batch[0][0]) for batch in batches]


def test_a_loaded_position_is_what_the_loader_saves_until_its_next_pass_starts():
    """A checkpoint saved before the first batch of a resumed fit keeps the place that fit resumed from."""
    resumed = loader()
    resumed.load_state_dict({"epoch": 0, "batches": 4})
    assert resumed.state_dict() == {"epoch": 0, "batches": 4}
    passes = iter(resumed)
    assert resumed.state_dict() == {"epoch": 0, "batches": 4}  # a pass starts on its first batch
    next(passes)
    assert resumed.state_dict() == {"epoch": 0, "batches": 5}


def test_rewind_saves_only_the_batches_whose_step_finished_and_a_resumed_pass_serves_the_rest():
    straight = firsts(loader())
    interrupted = loader()
    passes = iter(interrupted)
    for _ in range(3):  # the third batch's step is under way when the fit stops
        next(passes)
    interrupted.rewind(2)
    assert interrupted.state_dict() == {"epoch": 0, "batches": 2}
    interrupted.rewind(5)  # never more than it served
    assert interrupted.state_dict() == {"epoch": 0, "batches": 2}
    resumed = loader()
    resumed.load_state_dict(interrupted.state_dict())
    assert firsts(resumed) == straight[2:]
