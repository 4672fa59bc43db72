"""The Parity task: its data and the tagger that learns it."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pararnn_ts import ParaGRU, ParaLSTM, RotationOscillator
from pararnn_ts.nn import GatedLinearRNN
from pararnn_ts.synthetic import AllLengthsParity, ParityDataModule, RandomLengthParity, SequenceTagger, parity_batch


def running_xor(bits: list[int]) -> list[int]:
    out, acc = [], 0
    for b in bits:
        acc ^= b
        out.append(acc)
    return out


# ---- data --------------------------------------------------------------------------------------
def test_targets_are_the_running_parity():
    batch = parity_batch(np.random.default_rng(0), batch_size=16, length=40)
    assert batch["inputs"].shape == batch["targets"].shape == (16, 40)
    assert batch["inputs"].dtype == batch["targets"].dtype == torch.int64
    assert set(batch["inputs"].unique().tolist()) == {0, 1}
    for bits, targets in zip(batch["inputs"].tolist(), batch["targets"].tolist(), strict=True):
        assert targets == running_xor(bits)


def test_training_lengths_are_uniform_within_bounds():
    data = RandomLengthParity(batch_size=2, min_len=3, max_len=7, seed=0, split="train")
    lengths = [data[i]["inputs"].shape[1] for i in range(300)]
    assert set(lengths) == set(range(3, 8))  # every length, bounds included, nothing else
    counts = np.bincount(lengths)[3:]
    assert counts.min() > 300 / 5 / 2  # roughly uniform, far from any single length dominating


def test_eval_set_covers_every_length_equally():
    data = AllLengthsParity(batch_size=2, min_len=5, max_len=9, seed=0, split="val", batches_per_length=3)
    lengths = sorted(data[i]["inputs"].shape[1] for i in range(len(data)))
    assert lengths == sorted(list(range(5, 10)) * 3)


def test_splits_differ_and_are_deterministic_per_seed():
    dm, same, other = (ParityDataModule(batch_size=8, min_len=4, max_len=12, seed=s) for s in (0, 0, 1))
    val, test = list(dm.val_dataloader()), list(dm.test_dataloader())
    for a, b in zip(val, same.val_dataloader(), strict=True):
        assert torch.equal(a["inputs"], b["inputs"])
    assert any(not torch.equal(a["inputs"], b["inputs"]) for a, b in zip(val, other.val_dataloader(), strict=True))
    assert any(not torch.equal(a["inputs"], b["inputs"]) for a, b in zip(val, test, strict=True))
    # no validation batch is a training batch of the first epochs
    train = [b["inputs"] for b in dm.train_dataloader()]
    assert not any(t.shape == v["inputs"].shape and torch.equal(t, v["inputs"]) for t in train for v in val)


def test_training_batches_are_fresh_each_epoch_and_reproducible():
    def epoch(dm: ParityDataModule, e: int) -> list[torch.Tensor]:
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(e)  # what Lightning does before every epoch
        return [b["inputs"] for b in loader]

    dm = ParityDataModule(batch_size=4, min_len=4, max_len=12, batches_per_epoch=5, seed=0)
    first, second = epoch(dm, 0), epoch(dm, 1)
    assert len(first) == len(second) == 5
    assert not any(a.shape == b.shape and torch.equal(a, b) for a in first for b in second)
    again = epoch(ParityDataModule(batch_size=4, min_len=4, max_len=12, batches_per_epoch=5, seed=0), 1)
    assert all(torch.equal(a, b) for a, b in zip(second, again, strict=True))


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"min_len": 0}, "min_len"),
        ({"min_len": 10, "max_len": 5}, "max_len"),
        ({"batch_size": 0}, "batch_size"),
        ({"batches_per_epoch": 0}, "batches_per_epoch"),
        ({"eval_batches_per_length": 0}, "eval_batches_per_length"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        ParityDataModule(**kwargs)


# ---- model -------------------------------------------------------------------------------------
CELLS = {
    "paragru": lambda mode: ParaGRU(4, 6, num_heads=2, max_norm=None, mode=mode),
    "paralstm": lambda mode: ParaLSTM(4, 6, num_heads=2, max_norm=None, mode=mode),
    "linear": lambda mode: GatedLinearRNN(4, 6, num_heads=2, mode=mode),
    "user cell": lambda mode: RotationOscillator(4, 5, mode=mode),  # output is 2·hidden wide
}


@pytest.mark.parametrize("mode", ["sequential", "parallel"])
@pytest.mark.parametrize("name", CELLS)
def test_loss_is_finite_and_every_parameter_gets_a_gradient(name, mode):
    torch.manual_seed(0)
    model = SequenceTagger(CELLS[name](mode))
    batch = parity_batch(np.random.default_rng(0), batch_size=3, length=20)
    loss, logits = model.loss(batch)
    assert logits.shape == (3, 20, 2)
    assert torch.isfinite(loss)
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, pname


def test_cell_without_input_size_is_rejected():
    cell = RotationOscillator(4, 5)
    cell.input_size = None
    with pytest.raises(ValueError, match="input_size"):
        SequenceTagger(cell)


def test_validation_metrics_cover_all_positions_of_all_lengths():
    """val_acc and val_loss are means over positions, not over batches of different lengths."""
    torch.manual_seed(0)
    model = SequenceTagger(ParaGRU(4, 6, max_norm=None))
    dm = ParityDataModule(batch_size=5, min_len=2, max_len=9, eval_batches_per_length=2, seed=3)
    trainer = pl.Trainer(
        logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False
    )
    (metrics,) = trainer.validate(model, datamodule=dm)
    correct = total = loss_sum = 0
    with torch.no_grad():
        for batch in dm.val_dataloader():
            logits = model(batch["inputs"])
            correct += (logits.argmax(-1) == batch["targets"]).sum().item()
            total += batch["targets"].numel()
            loss_sum += F.cross_entropy(logits.flatten(0, 1), batch["targets"].flatten(), reduction="sum").item()
    assert metrics["val_acc"] == pytest.approx(correct / total, abs=1e-6)
    assert metrics["val_loss"] == pytest.approx(loss_sum / total, rel=1e-5)
