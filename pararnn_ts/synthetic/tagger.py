"""A one-layer recurrent sequence tagger: a class for every position of a token sequence."""

from __future__ import annotations

import warnings

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from ..core import ParaCell

EVAL_SPLITS = ("val", "test")


class SequenceTagger(pl.LightningModule):
    """Tokens → ``Embedding`` → ``cell`` → ``Linear``: logits for every position.

    Trained with cross-entropy at every position; reports ``train_loss``, and on validation and test
    ``{split}_loss`` (mean over all positions) and ``{split}_acc`` (accuracy over all positions of all
    sequences). What Newton did is logged by :class:`~pararnn_ts.callbacks.LogNewtonStats`.

    Args:
        cell: any :class:`~pararnn_ts.core.cell.ParaCell` (ParaGRU, ParaLSTM, GatedLinearRNN, your
            own); its ``input_size`` is the embedding width.
        vocab_size: number of input tokens.
        num_classes: number of target classes.
        lr, weight_decay: of AdamW.

    Batches are ``{"inputs": (B, T) int64, "targets": (B, T) int64}``.
    """

    def __init__(
        self,
        cell: ParaCell,
        vocab_size: int = 2,
        num_classes: int = 2,
        lr: float = 3e-3,
        weight_decay: float = 0.01,
    ) -> None:
        super().__init__()
        # Built by the CLI (LightningCLI), the hyperparameters are the config's, the cell's as its
        # {"class_path", "init_args"}: a checkpoint then restores the cell it was trained with (--ckpt_path).
        # Built in Python, `cell` is the module itself, whose weights the state dict holds: it is left out, and
        # load_from_checkpoint needs it again (load_from_checkpoint(path, cell=ParaGRU(...))).
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Attribute 'cell' is an instance of `nn.Module`")
            self.save_hyperparameters()
        if isinstance(self.hparams.get("cell"), nn.Module):
            self.save_hyperparameters(ignore=["cell"])
        if cell.input_size is None:
            raise ValueError(
                f"{type(cell).__name__} has input_size=None; "
                "set `input_size` on the cell so the embedding width is known"
            )
        self.cell = cell
        self.embedding = nn.Embedding(vocab_size, cell.input_size)
        self.head = nn.Linear(cell.output_size, num_classes)
        self.accuracy = nn.ModuleDict(
            {split: MulticlassAccuracy(num_classes, average="micro") for split in EVAL_SPLITS}
        )

    def forward(self, inputs: Tensor) -> Tensor:
        """``inputs`` ``(B, T)`` token ids → logits ``(B, T, num_classes)``."""
        y, _ = self.cell(self.embedding(inputs))
        return self.head(y)

    def loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Mean cross-entropy over all positions, and the logits ``(B, T, num_classes)``."""
        logits = self(batch["inputs"])
        return F.cross_entropy(logits.flatten(0, 1), batch["targets"].flatten()), logits

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss, _ = self.loss(batch)
        self.log("train_loss", loss, prog_bar=True, batch_size=batch["targets"].numel())
        return loss

    def _evaluate(self, batch: dict[str, Tensor], split: str) -> None:
        loss, logits = self.loss(batch)
        targets = batch["targets"]
        accuracy = self.accuracy[split]
        accuracy.update(logits.argmax(-1), targets)
        # batch_size = positions, so the epoch value is the mean over all positions.
        self.log(f"{split}_loss", loss, prog_bar=True, batch_size=targets.numel())
        self.log(f"{split}_acc", accuracy, prog_bar=True)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
