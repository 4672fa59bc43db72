"""Exact resume: a run restarted from any checkpoint, mid-epoch included, continues with the uninterrupted run's
batches, losses and learning rates."""

from __future__ import annotations

from pathlib import Path

import pytest
from lightning.pytorch.callbacks import ModelCheckpoint
from lm_training import Record
from lm_training import fit as train

from pararnn_ts.lm import ByteTokenizer, CausalLM, RandomWindowSampler, TextDataModule, TokenWindowDataset
from pararnn_ts.lm.corpus import stdlib_root
from pararnn_ts.lm.datamodule import ResumableDataLoader

STEPS, EPOCH = 8, 5  # two epochs of 5 batches (limit_train_batches), the second one cut at step 8


def make_data(cache_dir: Path) -> TextDataModule:
    paths = [str(stdlib_root() / "json" / "*.py")]
    return TextDataModule("files", paths, seq_len=32, batch_size=8, cache_dir=str(cache_dir), val_fraction=0.2)


def fit(shard_dir: Path, callbacks=(), ckpt_path: Path | None = None) -> Record:
    model = CausalLM(ByteTokenizer().vocab_size, dim=32, num_layers=2, num_heads=2, mixer_kwargs={"mode": "sequential"})
    return train(
        model, make_data(shard_dir), STEPS, callbacks, ckpt_path, limit_train_batches=EPOCH, limit_val_batches=0
    )


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> tuple[Path, Path, Record]:
    """The shards, the checkpoints of every step, and the record of the uninterrupted run."""
    folder = tmp_path_factory.mktemp("lm_resume")
    make_data(folder / "shards").prepare_data()
    every_step = ModelCheckpoint(folder / "ckpt", filename="{step}", every_n_train_steps=1, save_top_k=-1)
    return folder / "shards", folder / "ckpt", fit(folder / "shards", [every_step])


@pytest.mark.parametrize("step", [2, EPOCH, EPOCH + 1], ids=["mid-epoch", "epoch-end", "mid-second-epoch"])
def test_resumed_run_repeats_the_uninterrupted_losses_step_by_step(straight, step):
    shard_dir, ckpt_dir, uninterrupted = straight
    assert len(uninterrupted.losses) == STEPS
    resumed = fit(shard_dir, ckpt_path=ckpt_dir / f"step={step}.ckpt")
    assert resumed.windows == uninterrupted.windows[step:]
    assert resumed.losses == uninterrupted.losses[step:]
    assert resumed.lrs == uninterrupted.lrs[step:]


def test_the_loader_state_skips_the_batches_served_in_the_same_epoch_only(tmp_path):
    data = make_data(tmp_path)
    data.prepare_data()
    data.setup("fit")

    def loader() -> ResumableDataLoader:
        dataset = TokenWindowDataset(data.tokens["train"], 16)
        return ResumableDataLoader(dataset, batch_size=4, sampler=RandomWindowSampler(dataset, seed=3), drop_last=True)

    def starts(batches) -> list[list[list[int]]]:
        return [b["inputs"].tolist() for b in batches]

    first = loader()
    first.sampler.set_epoch(1)
    epoch = starts(first)
    assert first.state_dict() == {"epoch": 1, "batches": len(epoch)} and len(epoch) == len(first) > 3
    iterator = iter(first)
    for _ in range(3):
        next(iterator)
    state = first.state_dict()
    assert state == {"epoch": 1, "batches": 3}

    same_epoch = loader()
    same_epoch.load_state_dict(state)
    same_epoch.sampler.set_epoch(1)
    assert starts(same_epoch) == epoch[3:]
    assert starts(same_epoch) == epoch  # the skip applies to the first pass only

    next_epoch = loader()
    next_epoch.load_state_dict(state)
    next_epoch.sampler.set_epoch(2)
    reference = loader()
    reference.sampler.set_epoch(2)
    assert starts(next_epoch) == starts(reference) != epoch
