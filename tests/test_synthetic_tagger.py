"""SequenceTagger's hyperparameters and logged solver statistics (its training on Parity: tests/test_parity.py)."""

from __future__ import annotations

import csv
import warnings

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from pararnn_ts import ParaGRU
from pararnn_ts.synthetic import ParityDataModule, SequenceTagger


def fit(model: SequenceTagger, tmp_path, steps: int = 2) -> pl.Trainer:
    """``steps`` training steps on Parity strings of 4-8 bits, logged every step to ``tmp_path``."""
    trainer = pl.Trainer(
        max_steps=steps,
        limit_val_batches=0,
        log_every_n_steps=1,
        logger=CSVLogger(tmp_path, name="tagger"),
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=ParityDataModule(batch_size=4, min_len=4, max_len=8, batches_per_epoch=steps))
    return trainer


def logged(trainer: pl.Trainer, key: str) -> list[float]:
    with open(f"{trainer.logger.log_dir}/metrics.csv") as f:
        return [float(row[key]) for row in csv.DictReader(f) if row.get(key)]


@pytest.mark.parametrize("max_iters, fell_back", [(1, 1.0), (12, 0.0)])
def test_newton_falling_back_to_the_loop_is_logged(max_iters, fell_back, tmp_path):
    """Newton needs up to T updates on strings of T ≤ 8 bits: 1 never converges (the loop recomputes), 12 does."""
    torch.manual_seed(0)
    model = SequenceTagger(ParaGRU(4, 6, max_norm=None, mode="parallel", max_iters=max_iters, chunk_size=None))
    trainer = fit(model, tmp_path)
    assert logged(trainer, "newton_fell_back") == [fell_back, fell_back]
    assert all(iters <= max_iters for iters in logged(trainer, "newton_iters"))


def test_the_sequential_mode_logs_no_newton_statistics(tmp_path):
    trainer = fit(SequenceTagger(ParaGRU(4, 6, max_norm=None, mode="sequential")), tmp_path)
    assert logged(trainer, "train_loss") and not logged(trainer, "newton_fell_back")


def test_a_tagger_built_in_python_keeps_its_live_cell_out_of_the_hyperparameters(tmp_path):
    """The cell module's weights are in the state dict; its hyperparameters hold the other arguments, with no
    warning about a module among them, and loading the checkpoint takes the cell again."""
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*nn.Module")
        model = SequenceTagger(ParaGRU(4, 6, max_norm=None, mode="sequential"), lr=0.02)
    expected = {"vocab_size": 2, "num_classes": 2, "lr": 0.02, "weight_decay": 0.01}
    assert dict(model.hparams) == dict(model.hparams_initial) == expected
    trainer = fit(model, tmp_path)
    path = tmp_path / "tagger.ckpt"
    trainer.save_checkpoint(path)
    assert "cell" not in torch.load(path, weights_only=True)["hyper_parameters"]
    loaded = SequenceTagger.load_from_checkpoint(path, cell=ParaGRU(4, 6, max_norm=None))
    assert loaded.hparams.lr == 0.02
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
