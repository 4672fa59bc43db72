"""``TextDataModule``: text from a source, tokenised once into cached shards, served as windows."""

from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
from torch.utils.data import DataLoader, Sampler

from ..loaders import ResumableDataLoader
from ..notices import warn
from .corpus import source_documents, source_fingerprint, split_documents
from .generate import check_sampling
from .shards import (
    SHARD_FORMAT,
    ContiguousWindowSampler,
    RandomWindowSampler,
    TokenWindowDataset,
    build_shard_dir,
    open_shard,
    read_shard_info,
    write_shards,
)
from .tokenizers import Tokenizer, load_tokenizer

#: where tokenised shards go unless ``cache_dir`` says otherwise (relative to the working directory)
DEFAULT_CACHE_ROOT = Path("runs") / "cache"


class TextDataModule(pl.LightningDataModule):
    """Next-token windows of a text corpus: ``{"inputs", "targets"}`` of shape ``(batch_size, seq_len)``.

    ``prepare_data`` reads the source once, splits it by document (a hash of each document's key,
    see :func:`pararnn_ts.lm.corpus.split_of`), tokenises it and writes memmapped shards to
    ``cache_dir``; later runs with the same config reuse them. Training draws windows at random
    offsets (new ones every epoch, fixed by ``seed``; a run resumed mid-epoch picks up at the same
    batch, see :class:`ResumableDataLoader`); validation reads the held-out documents in contiguous,
    non-overlapping windows. ``predict`` generates text after each of ``predict_prompts``
    (``pararnn-ts predict -c <config> --ckpt_path <checkpoint>``, see :meth:`predict_dataloader`).

    Args:
        source: ``"stdlib"`` (the Python standard library's source, no download), ``"files"``
            (UTF-8 text files), ``"jsonl"`` (JSON lines), ``"shards"`` (a folder written by a
            ``datasets/*/prepare.py`` script, with its own text_field, val_fraction and caps: giving
            them here warns) or ``"hf"`` (a Hugging Face ``datasets`` stream).
        paths: files or globs for ``"files"``/``"jsonl"`` (a file's split follows from its path relative
            to the folder its own glob starts from, see :func:`pararnn_ts.lm.corpus.keyed_files`); the
            shard folder for ``"shards"``; for ``"hf"`` the dataset then its data files
            (``["cerebras/SlimPajama-627B"]``, ``["json", "data/*.jsonl"]``).
        text_field: the field holding the text in JSONL / Hugging Face records.
        tokenizer: ``"byte"``, or the path of a BPE tokenizer JSON file.
        seq_len: tokens per window (each item holds ``seq_len + 1`` tokens: inputs and shifted targets).
        batch_size: windows per batch.
        num_workers: DataLoader worker processes.
        cache_dir: shard folder; default ``runs/cache/<hash of the config>``. An existing folder
            made with another config is never overwritten: that is an error. The config includes the
            sizes and times of local input files (for ``"hf"``, its local data files), so edited files
            are tokenised again; a Hub dataset is not checked again once tokenised.
        max_train_bytes, max_val_bytes: caps on the UTF-8 bytes of text per split (keep CPU runs
            small; required for ``"hf"``, whose streams may be endless).
        val_fraction: share of documents held out for validation.
        seed: seeds the training windows' offsets and the sampling of generated text.
        predict_prompts: texts to continue in ``predict``; ``None``: one empty prompt (a new document).
        max_new_tokens, temperature, top_k, top_p, stop_at_eos: sampling of generated text
            (:func:`pararnn_ts.lm.generate.generate`; ``temperature=0`` is greedy; ``top_p=1`` samples from all
            tokens; ``stop_at_eos`` ends a text before its first end-of-text token).
    """

    def __init__(
        self,
        source: Literal["stdlib", "files", "jsonl", "shards", "hf"] = "stdlib",
        paths: list[str] | None = None,
        text_field: str = "text",
        tokenizer: str = "byte",
        seq_len: int = 256,
        batch_size: int = 16,
        num_workers: int = 0,
        cache_dir: str | None = None,
        max_train_bytes: int | None = None,
        max_val_bytes: int | None = None,
        val_fraction: float = 0.05,
        seed: int = 0,
        predict_prompts: list[str] | None = None,
        max_new_tokens: int = 200,
        temperature: float = 0.8,
        top_k: int | None = None,
        top_p: float = 1.0,
        stop_at_eos: bool = True,
    ) -> None:
        super().__init__()
        if source not in ("stdlib", "files", "jsonl", "shards", "hf"):
            raise ValueError(f"unknown source {source!r}; use 'stdlib', 'files', 'jsonl', 'shards' or 'hf'")
        if source != "stdlib" and not paths:
            raise ValueError(f"source={source!r} needs paths")
        if source == "hf" and (max_train_bytes is None or max_val_bytes is None):
            raise ValueError("source='hf' streams may be endless: set max_train_bytes and max_val_bytes")
        for name, value in (("seq_len", seq_len), ("batch_size", batch_size)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"TextDataModule: {name} must be a positive int, got {value!r}")
        check_sampling(max_new_tokens, temperature, top_k, top_p)
        self.save_hyperparameters()
        self.source, self.paths, self.text_field = source, list(paths or []), text_field
        self.seq_len, self.batch_size, self.num_workers, self.seed = seq_len, batch_size, num_workers, seed
        self.max_bytes = {"train": max_train_bytes, "val": max_val_bytes}
        self.val_fraction = val_fraction
        self.predict_prompts = [""] if predict_prompts is None else list(predict_prompts)
        self.sampling = {
            "max_new_tokens": max_new_tokens,
            "temperature": temperature,
            "top_k": top_k,
            "top_p": top_p,
            "seed": seed,
            "stop_at_eos": stop_at_eos,
        }
        self.tokenizer: Tokenizer = load_tokenizer(tokenizer)
        if source == "shards":
            self.cache_dir = Path(self.paths[0])
            self.check_shard_tokenizer()
            warn_unused_with_shards(
                cache_dir=cache_dir,
                text_field=text_field,
                val_fraction=val_fraction,
                max_train_bytes=max_train_bytes,
                max_val_bytes=max_val_bytes,
            )
        else:
            self.cache_dir = Path(cache_dir) if cache_dir else DEFAULT_CACHE_ROOT / config_hash(self.cache_config())
        self.tokens: dict[str, np.ndarray] = {}

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def check_shard_tokenizer(self) -> None:
        written_with = read_shard_info(self.cache_dir, "train").tokenizer
        if written_with != self.tokenizer.name:
            raise ValueError(
                f"the shards in {self.cache_dir} were written with tokenizer {written_with!r}, not "
                f"{self.tokenizer.name!r}; pass that tokenizer (prepare scripts save BPE ones as tokenizer.json)"
            )

    def cache_config(self) -> dict[str, Any]:
        """Everything that decides the shards' content; its hash names the default cache folder."""
        return {
            "format": SHARD_FORMAT,
            "source": self.source,
            "paths": self.paths,
            "inputs": source_fingerprint(self.source, self.paths),
            "text_field": self.text_field,
            "tokenizer": self.tokenizer.name,
            "val_fraction": self.val_fraction,
            "max_bytes": self.max_bytes,
        }

    def prepare_data(self) -> None:
        """Tokenise the source into ``cache_dir``, unless it already holds these shards."""
        if self.source == "shards":
            return

        def build(folder: Path) -> None:
            documents = source_documents(self.source, self.paths, self.text_field)
            write_shards(split_documents(documents, self.val_fraction), self.tokenizer, folder, self.max_bytes)

        build_shard_dir(self.cache_dir, self.cache_config(), build)

    def setup(self, stage: str | None = None) -> None:
        if not (self.cache_dir / "train.json").is_file():
            raise FileNotFoundError(f"no shards in {self.cache_dir}: call prepare_data() before setup()")
        for split in ("train", "val"):
            self.tokens[split], info = open_shard(self.cache_dir, split)
            if info.num_tokens < self.seq_len + 1:
                share = "a smaller" if split == "train" else "a larger"
                prepared = " when preparing it" if self.source == "shards" else ""
                raise ValueError(
                    f"the {split} split in {self.cache_dir} has {info.num_tokens} tokens, fewer than seq_len + 1 = "
                    f"{self.seq_len + 1}: give more text, a larger max_{split}_bytes (if set) or {share} val_fraction"
                    f"{prepared}, or a smaller seq_len"
                )

    def train_dataloader(self) -> DataLoader:
        dataset = TokenWindowDataset(self.tokens["train"], self.seq_len)
        sampler = RandomWindowSampler(dataset, self.seed)
        return self.loader(dataset, sampler, drop_last=True, cls=ResumableDataLoader).follow(self)

    def val_dataloader(self) -> DataLoader:
        dataset = TokenWindowDataset(self.tokens["val"], self.seq_len)
        return self.loader(dataset, ContiguousWindowSampler(dataset), drop_last=False)

    def predict_dataloader(self) -> DataLoader:
        """One item per prompt: ``{"prompt", "max_new_tokens", "temperature", "top_k", "top_p", "seed",
        "stop_at_eos"}``, the arguments of :func:`pararnn_ts.lm.generate.generate` besides model and tokenizer
        (``CausalLM.predict_step``)."""
        return DataLoader([{"prompt": prompt, **self.sampling} for prompt in self.predict_prompts], batch_size=None)

    def loader(
        self, dataset: TokenWindowDataset, sampler: Sampler[int], drop_last: bool, cls: type[DataLoader] = DataLoader
    ) -> DataLoader:
        return cls(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def bytes_per_token(self, split: str = "val") -> float:
        """UTF-8 bytes of text per token in ``split``: bits per byte = bits per token / this."""
        info = read_shard_info(self.cache_dir, split)
        return info.num_bytes / info.num_tokens

    def unigram_bits_per_byte(self, split: str = "train", num_windows: int | None = None) -> float:
        """Bits per byte of ``split`` under the train split's unigram distribution (add-one smoothed).

        On ``"train"`` this is (up to the smoothing) the entropy of the train unigram distribution: the baseline a
        language model must beat; on ``"val"`` it is that model's score on held-out text. ``num_windows``: score
        only the targets of the first ``num_windows`` contiguous windows (what a validation capped by
        ``limit_val_batches`` reads), at the split's bytes per token as :class:`~pararnn_ts.lm.CausalLM` does.
        """
        counts = np.bincount(self.tokens["train"], minlength=self.vocab_size).astype(np.float64) + 1
        log2_p = np.log2(counts / counts.sum())
        if num_windows is None:
            scored, num_bytes = self.tokens[split], read_shard_info(self.cache_dir, split).num_bytes
        else:
            if not isinstance(num_windows, int) or num_windows < 1:
                raise ValueError(f"unigram_bits_per_byte: num_windows must be an int >= 1 or None, got {num_windows!r}")
            scored = self.tokens[split][1 : 1 + num_windows * self.seq_len]
            num_bytes = len(scored) * self.bytes_per_token(split)
        bits = -(np.bincount(scored, minlength=self.vocab_size) * log2_p).sum()
        return float(bits / num_bytes)


def warn_unused_with_shards(**arguments: Any) -> None:
    """Warn about the ``TextDataModule`` arguments given off their defaults that ``source="shards"`` ignores: the
    folder was made with its own (the prepare script's options)."""
    defaults = inspect.signature(TextDataModule).parameters
    unused = [name for name, value in arguments.items() if value != defaults[name].default]
    if unused:
        warn(
            f"source='shards' reads a prepared folder as it is, so {', '.join(unused)} "
            f"{'is' if len(unused) == 1 else 'are'} ignored (the prepare script's options decide them)"
        )


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode("utf-8")).hexdigest()[:16]
