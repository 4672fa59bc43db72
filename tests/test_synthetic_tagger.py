"""SequenceTagger's hyperparameters (its training on Parity: tests/test_parity.py; its Newton statistics:
tests/test_callbacks.py)."""

from __future__ import annotations

import warnings

import lightning.pytorch as pl
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
