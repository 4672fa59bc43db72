"""``TextDataModule``: text from a source, tokenised once into cached shards, served as windows."""

from __future__ import annotations

import hashlib
import inspect
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
from torch.utils.data import DataLoader, Sampler

from ..loaders import ResumableDataLoader
from ..notices import warn
from .corpus import (
    SPLITS,
    TEST_SPLIT,
    check_fractions,
    source_documents,
    source_fingerprint,
    split_documents,
    trains_on_test,
)
from .generate import check_prompt, check_sampling
from .shards import (
    SHARD_FORMAT,
    ContiguousWindowSampler,
    RandomWindowSampler,
    TokenWindowDataset,
    build_shard_dir,
    open_shard,
    read_config,
    read_shard_info,
    write_shards,
)
from .tokenizers import Tokenizer, load_tokenizer

#: where tokenised shards go unless ``cache_dir`` says otherwise (relative to the working directory)
DEFAULT_CACHE_ROOT = Path("runs") / "cache"
#: the splits each stage of a trainer reads (``fit`` tests after training, when there is a test split)
STAGE_SPLITS = {"fit": ("train", "val", TEST_SPLIT), "validate": ("val",), "test": (TEST_SPLIT,), "predict": ()}


class TextDataModule(pl.LightningDataModule):
    """Next-token windows of a text corpus: ``{"inputs", "targets"}`` of shape ``(batch_size, seq_len)``.

    ``prepare_data`` reads the source once, splits it by document (a hash of each document's key,
    see :func:`pararnn_ts.lm.corpus.split_of`), tokenises it and writes memmapped shards to
    ``cache_dir``; later runs with the same config reuse them. Training draws windows at random
    offsets (new ones every epoch, fixed by ``seed``; a run resumed mid-epoch picks up at the same
    batch, see :class:`ResumableDataLoader`); validation reads the held-out documents in contiguous,
    non-overlapping windows, and so does the test split, when there is one (``test_fraction > 0``; see
    :meth:`test_dataloader`). ``predict`` generates text after each of ``predict_prompts``
    (``pararnn-ts predict -c <config> --ckpt_path <checkpoint>``, see :meth:`predict_dataloader`).

    Training without validation: ``val_fraction=0`` with ``trainer.limit_val_batches=0`` (a validation split too
    short for one window is refused otherwise).

    Args:
        source: ``"stdlib"`` (the Python standard library's source, no download), ``"files"``
            (UTF-8 text files), ``"jsonl"`` (JSON lines), ``"shards"`` (a folder written by a
            ``datasets/*/prepare.py`` script, with its own text_field, val_fraction, test_fraction and caps:
            giving them here warns) or ``"hf"`` (a Hugging Face ``datasets`` stream).
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
        max_train_bytes, max_val_bytes, max_test_bytes: caps on the UTF-8 bytes of text per split (keep CPU runs
            small; required for ``"hf"``, whose streams may be endless, for each split it makes).
        val_fraction: share of documents held out for validation (0: none; then train with
            ``trainer.limit_val_batches=0``).
        test_fraction: share of documents held out as a test split, for ``pararnn-ts test`` (and the test that
            follows ``fit``). They are taken from the documents ``test_fraction=0`` trains on: validation stays
            the same, and ``test_fraction=0`` (no test split) keeps the shards and cache folder of earlier versions.
            A checkpoint trained on some of the test documents (with a smaller ``val_fraction + test_fraction``)
            is refused by ``test`` and by a resumed ``fit``.
        seed: seeds the training windows' offsets and the sampling of generated text.
        predict_prompts: texts to continue in ``predict``; ``None``: one empty prompt (a new document).
        max_new_tokens, temperature, top_k, top_p, stop_at_eos: sampling of generated text
            (:func:`pararnn_ts.lm.generate.generate`; ``temperature=0`` is greedy; ``top_p=1`` samples from all
            tokens; ``stop_at_eos`` ends a text before its first end-of-text token).
    """

    #: the arguments only ``predict`` reads (a resumed fit does not warn when they differ from the checkpoint's)
    predict_arguments = ("predict_prompts", "max_new_tokens", "temperature", "top_k", "top_p", "stop_at_eos")

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
        max_test_bytes: int | None = None,
        val_fraction: float = 0.05,
        test_fraction: float = 0.0,
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
        if source == "shards" and len(paths) != 1:
            raise ValueError(
                f"source='shards' reads one shard folder: give paths=[<the folder>], got {len(paths)} paths"
            )
        check_fractions(val_fraction, test_fraction)
        if source != "shards" and max_test_bytes is not None and test_fraction == 0:
            raise ValueError("TextDataModule: max_test_bytes caps a test split, and test_fraction=0 makes none")
        if source == "hf":
            caps = {"train": (max_train_bytes, 1), "val": (max_val_bytes, val_fraction)}
            caps[TEST_SPLIT] = (max_test_bytes, test_fraction)
            missing = [f"max_{split}_bytes" for split, (cap, share) in caps.items() if cap is None and share > 0]
            if missing:
                raise ValueError(f"source='hf' streams may be endless: set {' and '.join(missing)}")
        for name, value in (("seq_len", seq_len), ("batch_size", batch_size)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"TextDataModule: {name} must be a positive int, got {value!r}")
        check_sampling(max_new_tokens, temperature, top_k, top_p, seed, owner="TextDataModule")
        self.save_hyperparameters()
        self.source, self.paths, self.text_field = source, list(paths or []), text_field
        self.seq_len, self.batch_size, self.num_workers, self.seed = seq_len, batch_size, num_workers, seed
        self.max_bytes = {"train": max_train_bytes, "val": max_val_bytes}
        if test_fraction > 0:  # only then: the cache config of test_fraction=0 stays that of earlier versions
            self.max_bytes[TEST_SPLIT] = max_test_bytes
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        prompts = [""] if predict_prompts is None else list(predict_prompts)
        self.predict_prompts = [check_prompt(p, f"TextDataModule: predict_prompts[{i}]") for i, p in enumerate(prompts)]
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
            has_test = (self.cache_dir / f"{TEST_SPLIT}.json").is_file()
            if test_fraction > 0 and not has_test:
                raise ValueError(
                    f"test_fraction={test_fraction}: the shards in {self.cache_dir} have no test split (no "
                    f"{TEST_SPLIT}.json; prepared without --test-fraction); prepare them again into a new folder with "
                    f"--test-fraction {test_fraction} and train on that folder"
                )
            warn_unused_with_shards(
                cache_dir=cache_dir,
                text_field=text_field,
                val_fraction=val_fraction,
                test_fraction=test_fraction,
                max_train_bytes=max_train_bytes,
                max_val_bytes=max_val_bytes,
                max_test_bytes=max_test_bytes,
            )
        else:
            has_test = test_fraction > 0
            self.cache_dir = Path(cache_dir) if cache_dir else DEFAULT_CACHE_ROOT / config_hash(self.cache_config())
        self.splits: tuple[str, ...] = (*SPLITS, TEST_SPLIT) if has_test else SPLITS
        self.tokens: dict[str, np.ndarray] = {}
        self.restored_splits: dict[str, float] | None = None  # the split_fractions() a restored checkpoint recorded

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    @property
    def has_test_split(self) -> bool:
        """Whether there is a test split: ``test_fraction > 0``, or a shard folder prepared with one."""
        return TEST_SPLIT in self.splits

    def check_shard_tokenizer(self) -> None:
        written_with = read_shard_info(self.cache_dir, "train").tokenizer
        if written_with != self.tokenizer.name:
            raise ValueError(
                f"the shards in {self.cache_dir} were written with tokenizer {written_with!r}, not "
                f"{self.tokenizer.name!r}; pass that tokenizer (prepare scripts save BPE ones as tokenizer.json)"
            )

    def cache_config(self) -> dict[str, Any]:
        """Everything that decides the shards' content; its hash names the default cache folder.

        ``test_fraction`` (and the test split's cap) enter it only when above 0, so that without a test split the
        config, and the default folder, are those of versions that had no test splits."""
        config = {
            "format": SHARD_FORMAT,
            "source": self.source,
            "paths": self.paths,
            "inputs": source_fingerprint(self.source, self.paths),
            "text_field": self.text_field,
            "tokenizer": self.tokenizer.name,
            "val_fraction": self.val_fraction,
            "max_bytes": self.max_bytes,
        }
        if self.test_fraction > 0:
            config["test_fraction"] = self.test_fraction
        return config

    def prepare_data(self) -> None:
        """Tokenise the source into ``cache_dir``, unless it already holds these shards (or ``predict`` runs: it
        reads no split)."""
        if self.source == "shards" or getattr(getattr(self, "trainer", None), "predicting", False):
            return
        # a split that gets no documents is full from the start, so that a capped stream is not read to its end
        shares = {"val": self.val_fraction, TEST_SPLIT: self.test_fraction}
        caps = {split: 0 if shares.get(split, 1) == 0 else cap for split, cap in self.max_bytes.items()}

        def build(folder: Path) -> None:
            documents = source_documents(self.source, self.paths, self.text_field)
            split_texts = split_documents(documents, self.val_fraction, self.test_fraction)
            write_shards(split_texts, self.tokenizer, folder, caps, self.splits)

        build_shard_dir(self.cache_dir, self.cache_config(), build)

    def setup(self, stage: str | None = None) -> None:
        """Open the shards; refuse a split that ``stage`` reads (every split without a stage) if it is too short for
        one window. ``fit`` reads train, val and the test split that follows it; a trainer with
        ``limit_val_batches=0`` (``limit_test_batches=0``) reads no val (test) split, ``predict`` none."""
        if stage == "predict":  # prompts only: the shards need not exist
            return
        if not (self.cache_dir / "train.json").is_file():
            raise FileNotFoundError(f"no shards in {self.cache_dir}: call prepare_data() before setup()")
        self.restored_splits = None  # this run's checkpoint, if any, is restored after setup (load_state_dict)
        trainer = getattr(self, "trainer", None)
        read = set(STAGE_SPLITS.get(stage, self.splits))
        if getattr(trainer, "limit_val_batches", None) == 0:
            read.discard("val")
        if getattr(trainer, "limit_test_batches", None) == 0:
            read.discard(TEST_SPLIT)
        for split in self.splits:
            self.tokens[split], info = open_shard(self.cache_dir, split)
            if split in read and info.num_tokens < self.seq_len + 1:
                raise ValueError(self.short_split_message(split, info.num_tokens, stage))
            if split != "train" or split not in read:
                continue
            windows = TokenWindowDataset(self.tokens[split], self.seq_len).num_windows  # one epoch's
            if windows < self.batch_size:
                raise ValueError(
                    f"TextDataModule: the train split in {self.cache_dir} has {info.num_tokens} tokens, {windows} "
                    f"windows of seq_len={self.seq_len}, fewer than one batch (batch_size={self.batch_size}); the "
                    "training loader drops an incomplete batch, so nothing would train: give more text, or a smaller "
                    "batch_size or seq_len"
                )

    def short_split_message(self, split: str, num_tokens: int, stage: str | None = None) -> str:
        """Why ``split`` (of ``num_tokens``) is refused, and how to give it a window; for a fit (``stage`` ``"fit"``
        or ``None``), also how to fit without it."""
        prepared = " when preparing it" if self.source == "shards" else ""
        window = self.seq_len + 1
        short = f"the {split} split in {self.cache_dir} has {num_tokens} tokens, fewer than seq_len + 1 = {window}"
        if split == "train":
            return (
                f"{short}: give more text, a larger max_train_bytes (if set) or a smaller val_fraction (or "
                f"test_fraction){prepared}, or a smaller seq_len"
            )
        share = "val_fraction" if split == "val" else "test_fraction"
        fix = f"give more text, a larger max_{split}_bytes (if set) or a larger {share}{prepared}, or a smaller seq_len"
        if self.split_fractions()[share] == 0:
            fix = f"{share}=0 holds out no documents: give a {share} above 0{prepared}"
        if stage not in ("fit", None):  # validate/test read this split only: there is nothing to skip
            return f"{short}: {fix}"
        if split == "val":
            return f"{short}: {fix}; or train without validation: --trainer.limit_val_batches 0"
        return f"{short}: {fix}; or skip the test after the fit: --trainer.limit_test_batches 0"

    def split_fractions(self) -> dict[str, float | None]:
        """``{"val_fraction", "test_fraction"}`` that made the splits: a shard folder's own, from its recipe (``None``
        where it has none; a recipe without ``test_fraction`` made no test split: 0)."""
        if self.source != "shards":
            return {"val_fraction": self.val_fraction, "test_fraction": self.test_fraction}
        recipe = read_config(self.cache_dir) or {}
        test_fraction = recipe.get("test_fraction", 0.0 if "val_fraction" in recipe else None)
        return {"val_fraction": recipe.get("val_fraction"), "test_fraction": test_fraction}

    def state_dict(self) -> dict[str, Any]:
        """What checkpoints record of the data: the fractions that made the splits, so that ``test`` refuses
        weights trained on its documents (:meth:`check_test_held_out`)."""
        return {"splits": self.split_fractions()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Called by Lightning when it restores a checkpoint that recorded :meth:`state_dict`."""
        self.restored_splits = state_dict.get("splits")

    def check_test_held_out(self) -> None:
        """Refuse the weights of the trainer's checkpoint if their training read any of this test split's documents:
        trained with a smaller ``val_fraction + test_fraction`` (:func:`~pararnn_ts.lm.corpus.trains_on_test`), or
        before checkpoints recorded their splits. Weights not read from a checkpoint (the test after ``fit``) pass.
        """
        ckpt_path = getattr(getattr(self, "trainer", None), "ckpt_path", None)
        if not self.has_test_split or not ckpt_path:
            return
        now = self.split_fractions()
        fix = (
            f"to test it, train a model with this data's val_fraction={now['val_fraction']} and "
            f"test_fraction={now['test_fraction']}; to score this one, use pararnn-ts validate"
        )
        trained = self.restored_splits
        if trained is None:
            raise ValueError(
                f"checkpoint {ckpt_path} records no test split (it was written before TextDataModule had test "
                "splits, or with another data module), so its training may have read this test split's documents: "
                f"its test scores would not be held-out scores; {fix}"
            )
        if None in (*trained.values(), *now.values()):  # a shard folder without a recipe of ours: nothing to compare
            return
        if trains_on_test(
            (trained["val_fraction"], trained["test_fraction"]), (now["val_fraction"], now["test_fraction"])
        ):
            raise ValueError(
                f"checkpoint {ckpt_path} was trained with val_fraction={trained['val_fraction']} and "
                f"test_fraction={trained['test_fraction']}, so on some of the documents that this data's "
                f"val_fraction={now['val_fraction']} and test_fraction={now['test_fraction']} hold out for testing: "
                f"its test scores would not be held-out scores; {fix}"
            )

    def train_dataloader(self) -> DataLoader:
        self.check_test_held_out()  # a resumed fit: the test after it would score trained-on text
        dataset = TokenWindowDataset(self.tokens["train"], self.seq_len)
        sampler = RandomWindowSampler(dataset, self.seed)
        return self.loader(dataset, sampler, drop_last=True, cls=ResumableDataLoader).follow(self)

    def val_dataloader(self) -> DataLoader:
        return self.eval_loader("val")

    @property
    def test_dataloader(self) -> Callable[[], DataLoader]:
        """The test split's windows, served as validation's are (contiguous, in order), when there is a test split
        (:attr:`has_test_split`). Without one this is Lightning's unimplemented hook, so ``pararnn-ts fit`` runs no
        test and ``pararnn-ts test`` is refused (``pararnn-ts`` asks whether the hook is overridden)."""
        if self.has_test_split:
            return self.held_out_test_dataloader
        return super().test_dataloader

    def held_out_test_dataloader(self) -> DataLoader:
        """:attr:`test_dataloader` when there is a test split; refuses checkpoints trained on it
        (:meth:`check_test_held_out`)."""
        self.check_test_held_out()
        return self.eval_loader(TEST_SPLIT)

    def check_test_split(self) -> None:
        """Raise ``ValueError``, saying how to make one, if there is no test split (for ``pararnn-ts test``)."""
        if self.has_test_split:
            return
        if self.source == "shards":
            how = (
                f"the shards in {self.cache_dir} were prepared without one: prepare them again into a new folder "
                "with --test-fraction (e.g. 0.05) and train on that folder"
            )
        else:
            how = (
                "test_fraction=0 holds out none: train with --data.init_args.test_fraction (e.g. 0.05) and test with it"
            )
        raise ValueError(f"TextDataModule has no test split: {how}; or score a checkpoint with pararnn-ts validate")

    def eval_loader(self, split: str) -> DataLoader:
        dataset = TokenWindowDataset(self.tokens[split], self.seq_len)
        return self.loader(dataset, ContiguousWindowSampler(dataset), drop_last=False)

    def predict_dataloader(self) -> DataLoader:
        """One item per prompt: ``{"prompt", "max_new_tokens", "temperature", "top_k", "top_p", "seed",
        "stop_at_eos"}``, the arguments of :func:`pararnn_ts.lm.generate.generate` besides model and tokenizer
        (``CausalLM.predict_step``). Each process samples its share of the prompts, so there must be at least one
        prompt a process."""
        processes = self.trainer.world_size if self.trainer is not None else 1
        if len(self.predict_prompts) < processes:
            raise ValueError(
                f"TextDataModule: {len(self.predict_prompts)} predict_prompts for {processes} processes, each of which "
                "samples its share: give at least one prompt a process (--data.init_args.predict_prompts) or predict "
                "in fewer (--trainer.devices)"
            )
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
        """UTF-8 bytes of text per token in ``split``: bits per byte = bits per token / this (NaN for a split with no
        tokens, e.g. ``val_fraction=0``'s validation)."""
        info = read_shard_info(self.cache_dir, split)
        return info.num_bytes / info.num_tokens if info.num_tokens else math.nan

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
