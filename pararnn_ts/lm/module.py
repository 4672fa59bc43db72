"""``CausalLM``: the paper's language-model recipe as a LightningModule (AdamW, warmup + cosine, z-loss)."""

from __future__ import annotations

import difflib
import inspect
import json
import math
import time
from functools import partial
from operator import itemgetter
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric

from ..cells.factory import CellFactory, record_cell, refuse_builtin_settings, resolve_cell
from ..nn import MIXERS, LanguageModel
from ..nn.backbone import MIXER_SPECS, MixerName, check_mixer_cell
from ..nn.mixers import MIXER_ARGUMENTS, RNN_CELLS, builtin_cell_settings
from ..outputs import gathered, results_folder
from .generate import TOKENIZER_KEY, check_trained_tokenizer, generate, tokenizer_record
from .tokenizers import Tokenizer, check_vocab_size

#: names of parameters never decayed whatever their shape: the cells' recurrent diagonals and input bias
#: (``A``, ``C``, ``b``, all 2-D) and Mamba2's ``A_log``, ``dt_bias``, ``D``
NO_DECAY_NAMES = frozenset({"A", "C", "b", "A_log", "dt_bias", "D"})
EVAL_SPLITS = ("val", "test")
#: the splits whose metrics each stage logs
STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ()}
#: where ``predict`` writes its samples, one JSON object per line, in the trainer's log folder
PREDICTIONS_FILE = "predictions.jsonl"

#: constructor arguments that the LM backbone and ParaRNNMixer fill in themselves, never ``mixer_kwargs``
BUILDER_ARGUMENTS = frozenset({"self", "dim", "cell", "num_heads", "input_size", "hidden_size"})


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, min_ratio: float) -> float:
    """LR factor at optimizer step ``step`` (0-based): linear ``1/warmup .. 1``, then cosine to ``min_ratio``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def decays(name: str, p: Tensor) -> bool:
    """Whether parameter ``name`` gets weight decay: weights of 2 or more dimensions, but not :data:`NO_DECAY_NAMES`."""
    return p.dim() >= 2 and name.rsplit(".", 1)[-1] not in NO_DECAY_NAMES


def mixer_arguments(mixer: MixerName) -> list[str]:
    """The keywords ``mixer_kwargs`` may hold for ``mixer``: those named by the ``__init__`` of its classes and
    their bases, as far as each ``__init__`` passes ``**kwargs`` on (a cell's reach ``ParaCell``)."""
    names: set[str] = set()
    mixer_class, fixed = MIXER_SPECS[mixer]  # a ParaRNNMixer passes the keywords it does not name to its cell
    classes = (mixer_class, RNN_CELLS[fixed["cell"]]) if "cell" in fixed else (mixer_class,)
    for cls in classes:
        for base in cls.__mro__[: cls.__mro__.index(nn.Module)]:
            if "__init__" not in vars(base):
                continue
            parameters = inspect.signature(base.__init__).parameters.values()
            names.update(p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))
            if all(p.kind is not p.VAR_KEYWORD for p in parameters):
                break
    return sorted(names - BUILDER_ARGUMENTS)


def check_mixer_kwargs(mixer: MixerName, mixer_kwargs: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming the keys of ``mixer_kwargs`` that ``mixer`` does not take (typos included)."""
    accepted = mixer_arguments(mixer)
    unknown = sorted(set(mixer_kwargs) - set(accepted))
    if unknown:
        close = {key: difflib.get_close_matches(key, accepted, 1) for key in unknown}
        hints = ", ".join(f"{match[0]!r} for {key!r}" for key, match in close.items() if match)
        raise ValueError(
            f"CausalLM: mixer_kwargs {unknown} are not arguments of mixer={mixer!r}"
            + (f" (did you mean {hints}?)" if hints else "")
            + f"; it takes {accepted}"
        )


def lm_losses(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Mean cross-entropy and mean squared log-partition ``logsumexp(logits)²`` (the z-loss), in float32.

    ``logits`` ``(B, T, V)``, ``targets`` ``(B, T)`` → two scalars.
    """
    logits = logits.float()
    lse = logits.logsumexp(-1)
    target_logits = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return (lse - target_logits).mean(), lse.pow(2).mean()


class CausalLM(pl.LightningModule):
    """Next-token prediction with a :class:`~pararnn_ts.nn.LanguageModel` (built in :meth:`configure_model`).

    The objective is ``cross-entropy + z_loss · mean(logsumexp(logits)²)``. Logged: ``train/loss``
    (cross-entropy), ``train/z_loss``, ``train/ppl``, ``train/bpb``, ``train/tokens_per_s`` every step,
    and ``val/loss``, ``val/ppl``, ``val/bpb`` over the whole validation set (token-weighted
    means, synchronised across processes). Bits per byte = loss / ln 2 / bytes per token of the same split:
    ``train/bpb`` divides by the train split's bytes per token, ``val/bpb`` by the validation split's.
    ``predict`` generates text (:meth:`predict_step`, with the data module's tokenizer) and writes it to
    ``predictions.jsonl`` in the trainer's log folder.

    Checkpoints record the data module's tokenizer (its name and, for BPE, the tokenizer itself: ``pararnn-ts
    generate`` needs nothing else); validating, testing, predicting or resuming with another tokenizer is refused.

    Args:
        vocab_size, dim, num_layers, mixer, num_heads, mlp_ratio, tie_embeddings: of the
            :class:`~pararnn_ts.nn.LanguageModel`.
        mixer_kwargs: passed to the mixer (ParaRNN: ``mode``, ``max_norm``, ``hidden``, ...); unknown keys are
            refused here (:func:`mixer_arguments` lists the accepted ones).
        lr: peak learning rate of AdamW.
        weight_decay: decoupled weight decay, applied to matrices only (see :func:`decays`).
        betas: of AdamW.
        warmup_fraction: share of ``trainer.estimated_stepping_batches`` spent in linear warmup.
        min_lr_ratio: the cosine schedule ends at ``min_lr_ratio · lr``.
        z_loss: weight of the z-loss (paper: 1e-4; 5e-6 at 7B).
        bytes_per_token: text bytes per token of every split, for bits per byte; ``None``: each split's own,
            the data module's ``bytes_per_token(split)`` if it has that method, else bits per byte are not logged.
        cell: a user cell for ``mixer="paragru"`` (or ``"paralstm"``): in a config ``cell: {class_path:
            my_cells.MyCell, init_args: {...}}`` (its own arguments, without ``input_size`` and ``hidden_size``: each
            block calls it as ``cell(hidden, hidden)``, ``hidden`` being ``dim`` unless ``mixer_kwargs`` set it), in
            Python a ParaCell subclass or a ``functools.partial`` of one; its output must be ``hidden`` wide. It
            replaces ParaGRU/ParaLSTM in every block; ``num_heads`` must then be 1 and ``mixer_kwargs`` keep the
            cell options (``max_norm``, ``mode``, ...) at their defaults. ``None``: the mixer's own cell. Checkpoints
            record it as its ``{class_path, init_args}`` (see :mod:`pararnn_ts.cells.factory`).

    Batches are ``{"inputs": (B, T) int64, "targets": (B, T) int64}``.
    """

    #: the files ``predict`` writes to the run's folder (``pararnn-ts`` refuses to replace them)
    RESULT_FILES = {"predict": (PREDICTIONS_FILE,)}

    def __init__(
        self,
        vocab_size: int,
        dim: int = 128,
        num_layers: int = 4,
        mixer: MixerName = "paragru",
        num_heads: int = 1,
        mlp_ratio: float = 8 / 3,
        tie_embeddings: bool = True,
        mixer_kwargs: dict[str, Any] | None = None,
        lr: float = 3e-3,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.95),
        warmup_fraction: float = 0.1,
        min_lr_ratio: float = 0.0,
        z_loss: float = 1e-4,
        bytes_per_token: float | None = None,
        cell: CellFactory | None = None,
    ) -> None:
        super().__init__()
        if mixer not in MIXERS:
            raise ValueError(f"CausalLM: mixer={mixer!r} is not one of {MIXERS}")
        if not 0 <= warmup_fraction <= 1 or not 0 <= min_lr_ratio <= 1:
            raise ValueError(
                f"CausalLM: warmup_fraction and min_lr_ratio must lie in [0, 1], got {warmup_fraction}, {min_lr_ratio}"
            )
        if bytes_per_token is not None and not bytes_per_token > 0:
            raise ValueError(f"CausalLM: bytes_per_token must be > 0, got {bytes_per_token}")
        check_mixer_kwargs(mixer, mixer_kwargs or {})
        self.cell_spec = None if cell is None else resolve_cell(cell, "CausalLM")  # hparams: as a config names it
        check_mixer_cell(mixer, self.cell_spec, "CausalLM")
        if self.cell_spec is not None:  # what configures the built-in cells keeps its defaults
            cell_kwargs = {k: v for k, v in (mixer_kwargs or {}).items() if k not in MIXER_ARGUMENTS}
            settings = builtin_cell_settings(num_heads, **cell_kwargs)
            named = {name if name == "num_heads" else f"mixer_kwargs.{name}": v for name, v in settings.items()}
            refuse_builtin_settings("CausalLM", self.cell_spec, **named)
        self.save_hyperparameters()
        record_cell(self.hparams, "CausalLM")
        self.model: LanguageModel | None = None
        self.bytes_per_token: dict[str, float] = {}  # of each split that logs bits per byte
        if bytes_per_token is not None:
            self.bytes_per_token = dict.fromkeys(("train", *EVAL_SPLITS), bytes_per_token)
        self.eval_loss = nn.ModuleDict({split: MeanMetric() for split in EVAL_SPLITS})
        self._last_step_end: float | None = None
        self.tokenizer: Tokenizer | None = None
        self.predicted: list[dict[str, Any]] = []

    def configure_model(self) -> None:
        """Build the backbone (once) and give it the DCLM init, also when the strategy builds it on ``meta``."""
        if self.model is not None:
            return
        hp = self.hparams
        self.model = LanguageModel(
            hp.vocab_size,
            hp.dim,
            hp.num_layers,
            hp.mixer,
            hp.num_heads,
            hp.mlp_ratio,
            tie_embeddings=hp.tie_embeddings,
            cell=self.cell_spec,
            **(hp.mixer_kwargs or {}),
        )
        self.model.reset_parameters()

    def setup(self, stage: str) -> None:
        """Take the data module's tokenizer (refused if its ids overflow ``vocab_size``) and the bytes per token of
        each split that ``stage`` logs. A checkpoint's tokenizer is checked against it once Lightning has read the
        checkpoint, in :meth:`on_load_checkpoint` (before any step)."""
        datamodule = getattr(self.trainer, "datamodule", None)
        self.tokenizer = getattr(datamodule, "tokenizer", None)
        if self.tokenizer is not None:
            size = self.tokenizer.vocab_size
            check_vocab_size(self.tokenizer, self.hparams.vocab_size, f"pass --model.init_args.vocab_size={size}")
        if self.hparams.bytes_per_token is None and hasattr(datamodule, "bytes_per_token"):
            self.bytes_per_token.update({split: datamodule.bytes_per_token(split) for split in STAGE_SPLITS[stage]})

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the data module's tokenizer (:func:`~pararnn_ts.lm.generate.tokenizer_record`)."""
        if self.tokenizer is not None:
            checkpoint[TOKENIZER_KEY] = tokenizer_record(self.tokenizer)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint trained with a tokenizer other than the data module's (validate, test, predict and
        resumed fits; checkpoints written before tokenizers were recorded pass)."""
        if self.tokenizer is not None:
            fix = "pass the one it was trained with as --data.init_args.tokenizer (the run's config.yaml names it)"
            check_trained_tokenizer(checkpoint, self.tokenizer, f"checkpoint {self.trainer.ckpt_path}", fix)

    def forward(self, tokens: Tensor) -> Tensor:
        """``tokens`` ``(B, T)`` → logits ``(B, T, vocab_size)``. Outside a Trainer the first call builds the network
        (:meth:`configure_model`; call it first to hand its parameters to an optimizer)."""
        self.configure_model()
        return self.model(tokens)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        ce, z = lm_losses(self(batch["inputs"]), batch["targets"])
        self.log_dict(self._rates("train", ce.detach()), prog_bar=True)
        self.log("train/z_loss", z.detach())
        return ce + self.hparams.z_loss * z

    def on_train_batch_end(self, outputs: Any, batch: dict[str, Tensor], batch_idx: int) -> None:
        now = time.perf_counter()
        if self._last_step_end is not None:
            tokens = batch["inputs"].numel() * self.trainer.world_size
            self.log("train/tokens_per_s", tokens / (now - self._last_step_end))
        self._last_step_end = now

    def on_validation_start(self) -> None:
        self._last_step_end = None  # steps/s measures training only

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_eval("test")

    def on_predict_epoch_start(self) -> None:
        self.predicted = []

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> str:
        """Prints and returns ``prompt`` + its sampled continuation; ``batch`` holds the ``prompt`` and the
        sampling settings of :func:`~pararnn_ts.lm.generate.generate` (see ``TextDataModule.predict_dataloader``)."""
        if self.tokenizer is None:
            raise RuntimeError("CausalLM.predict_step needs a tokenizer: predict with a data module that has one")
        completion = generate(self.model, self.tokenizer, **batch)
        self.predicted.append({**batch, "completion": completion})
        text = batch["prompt"] + completion
        self.print(f"--- sample {batch_idx} ---\n{text}")
        return text

    def on_predict_epoch_end(self) -> None:
        """Write the samples of every process, in prompt order, to :data:`PREDICTIONS_FILE` in the trainer's log
        folder (its root folder without a logger): one JSON object per line, the ``prompt``, the sampling settings
        and the ``completion``. Under DDP each process samples its share of the prompts; the first one writes."""
        # the indices of this process's prompts (one a batch), of which limit_predict_batches may sample the first only
        order = getattr(self.trainer.predict_dataloaders, "sampler", range(len(self.predicted)))
        mine = list(zip(order, self.predicted, strict=False))
        records = [record for _, record in sorted(gathered(self.trainer, mine), key=itemgetter(0))]
        folder = results_folder(self.trainer)
        if folder is not None and records:
            path = folder / PREDICTIONS_FILE
            path.write_text("".join(json.dumps(record) + "\n" for record in records))
            print(f"\nwrote {len(records)} samples to {path}")

    def _evaluate(self, batch: dict[str, Tensor], split: str) -> None:
        ce, _ = lm_losses(self(batch["inputs"]), batch["targets"])
        self.eval_loss[split].update(ce, weight=batch["targets"].numel())

    def _log_eval(self, split: str) -> None:
        metric = self.eval_loss[split]
        self.log_dict(self._rates(split, metric.compute()), prog_bar=True)
        metric.reset()

    def _rates(self, split: str, loss: Tensor) -> dict[str, Tensor]:
        """Loss in nats per token, perplexity and (when ``split``'s bytes per token are known) bits per byte."""
        rates = {f"{split}/loss": loss, f"{split}/ppl": loss.exp()}
        if split in self.bytes_per_token:
            rates[f"{split}/bpb"] = loss / math.log(2) / self.bytes_per_token[split]
        return rates

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Two AdamW groups: matrices with ``weight_decay``, everything else (norms, biases, diagonals) without."""
        named = list(self.model.named_parameters())
        return [
            {"params": [p for n, p in named if decays(n, p)], "weight_decay": self.hparams.weight_decay},
            {"params": [p for n, p in named if not decays(n, p)], "weight_decay": 0.0},
        ]

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        optimizer = torch.optim.AdamW(self.parameter_groups(), lr=hp.lr, betas=tuple(hp.betas))
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise ValueError("CausalLM: the LR schedule needs a finite length: set trainer.max_steps (or max_epochs)")
        total = max(1, int(total))
        warmup = max(1, round(hp.warmup_fraction * total)) if hp.warmup_fraction > 0 else 0
        schedule = partial(warmup_cosine, total_steps=total, warmup_steps=warmup, min_ratio=hp.min_lr_ratio)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
