"""Memmapped token shards and the fixed-length windows that models train on.

A shard folder holds, for each split, ``<split>.bin`` (the token ids back to back, ``uint16`` when
the vocabulary fits, else ``uint32``) and ``<split>.json`` (:class:`ShardInfo`), plus the
``config.json`` of the recipe that made it (:func:`build_shard_dir`). Same input, same bytes. Every
folder has the splits of :data:`~pararnn_ts.lm.corpus.SPLITS` (train, val); a test split
(``test.bin``, ``test.json``) only when its recipe made one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from ..notices import warn
from .corpus import SPLITS, TEST_SPLIT
from .tokenizers import EOS, Tokenizer

#: version of the layout below; bumped when it changes, so old caches are not misread
SHARD_FORMAT = 1
CONFIG_FILE = "config.json"


def token_dtype(vocab_size: int) -> np.dtype:
    """``uint16`` when every id fits (``vocab_size <= 65536``), else ``uint32``."""
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


@dataclasses.dataclass(frozen=True)
class ShardInfo:
    """What ``<split>.json`` says about ``<split>.bin``."""

    split: str
    dtype: str
    vocab_size: int
    tokenizer: str
    num_tokens: int
    num_bytes: int  # UTF-8 bytes of the text behind the tokens (end-of-text tokens have none)
    num_documents: int
    format: int = SHARD_FORMAT


class ShardWriter:
    """Appends the tokens of one split to ``<directory>/<split>.bin``; :meth:`close` writes its ``.json``."""

    def __init__(self, directory: Path, split: str, tokenizer: Tokenizer) -> None:
        self.directory, self.split, self.tokenizer = Path(directory), split, tokenizer
        self.dtype = token_dtype(tokenizer.vocab_size)
        self.file = open(self.directory / f"{split}.bin", "wb")
        self.num_tokens = self.num_bytes = self.num_documents = 0

    def write(self, ids: Iterable[int], num_bytes: int) -> None:
        """Append one document's ``ids``, made from ``num_bytes`` bytes of text."""
        array = np.asarray(list(ids), dtype=np.int64)
        vocab_size = self.tokenizer.vocab_size
        if array.size and (array.min() < 0 or array.max() >= vocab_size):
            raise ValueError(f"token ids must lie in [0, {vocab_size}), got [{array.min()}, {array.max()}]")
        self.file.write(array.astype(self.dtype).tobytes())
        self.num_tokens += array.size
        self.num_bytes += num_bytes
        self.num_documents += 1

    def close(self) -> ShardInfo:
        self.file.close()
        info = ShardInfo(
            self.split,
            self.dtype.name,
            self.tokenizer.vocab_size,
            self.tokenizer.name,
            self.num_tokens,
            self.num_bytes,
            self.num_documents,
        )
        metadata = json.dumps(dataclasses.asdict(info), indent=1, sort_keys=True)
        (self.directory / f"{self.split}.json").write_text(metadata)
        return info


def truncate_utf8(text: str, max_bytes: int) -> str:
    """The longest prefix of ``text`` whose UTF-8 encoding has at most ``max_bytes`` bytes."""
    return text.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")


def write_shards(
    split_texts: Iterable[tuple[str, str]],
    tokenizer: Tokenizer,
    directory: Path,
    max_bytes: Mapping[str, int | None] | None = None,
    splits: tuple[str, ...] = SPLITS,
) -> dict[str, ShardInfo]:
    """Tokenise ``(split, text)`` documents into one shard per split of ``splits`` (:data:`SPLITS`, plus
    ``"test"`` for a recipe with a test split).

    Each document is followed by the end-of-text token, if the tokeniser has one (if not, a warning
    says that documents run together). ``max_bytes[split]`` caps the text of a split (the document
    that crosses the cap is cut); reading stops once every split is full, so a capped stream need not
    be read to its end.

    Raises:
        ValueError: for a document of a split that is not in ``splits``.
    """
    unknown = set(splits) - {*SPLITS, TEST_SPLIT}
    if unknown or not set(SPLITS) <= set(splits):
        raise ValueError(f"write_shards: splits must be {SPLITS}, optionally with {TEST_SPLIT!r}; got {splits}")
    caps = {split: (max_bytes or {}).get(split) for split in splits}
    writers = {split: ShardWriter(directory, split, tokenizer) for split in splits}
    eos = [] if tokenizer.eos_id is None else [tokenizer.eos_id]
    if not eos:
        warn(
            f"tokenizer {tokenizer.name!r} has no {EOS!r} token, so documents are written back to back with no "
            "separator: the model is not told where one ends and the next begins (add the token to the tokenizer)"
        )
    for split, text in split_texts:
        if split not in writers:
            raise ValueError(f"write_shards: a document of the {split!r} split, which is not in {tuple(writers)}")
        writer, cap = writers[split], caps[split]
        if cap is not None:
            if writer.num_bytes >= cap:
                if all(c is not None and writers[s].num_bytes >= c for s, c in caps.items()):
                    break
                continue
            text = truncate_utf8(text, cap - writer.num_bytes)
        writer.write(tokenizer.encode(text) + eos, num_bytes=len(text.encode("utf-8")))
    return {split: writer.close() for split, writer in writers.items()}


def read_shard_info(directory: str | Path, split: str) -> ShardInfo:
    path = Path(directory) / f"{split}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no {split} shard in {directory} (missing {path.name})")
    try:
        info = ShardInfo(**(json_object(path) or {}))
    except TypeError:
        raise ValueError(f"{path} does not describe a {split} shard; prepare it again") from None
    if info.format != SHARD_FORMAT:
        raise ValueError(f"{path} has shard format {info.format}, this code reads {SHARD_FORMAT}; prepare it again")
    return info


def open_shard(directory: str | Path, split: str) -> tuple[np.ndarray, ShardInfo]:
    """The tokens of a split, memory-mapped read-only (``(num_tokens,)``), and their :class:`ShardInfo`."""
    info = read_shard_info(directory, split)
    path = Path(directory) / f"{split}.bin"
    expected = info.num_tokens * np.dtype(info.dtype).itemsize
    if not path.is_file() or path.stat().st_size != expected:
        raise ValueError(f"{path} is missing or not {expected} bytes as {split}.json says; prepare it again")
    if info.num_tokens == 0:
        return np.zeros(0, dtype=info.dtype), info
    return np.memmap(path, dtype=info.dtype, mode="r", shape=(info.num_tokens,)), info


def json_object(path: Path) -> dict[str, Any] | None:
    """The JSON object that the file ``path`` holds, or ``None`` if it holds anything else."""
    try:
        value = json.loads(path.read_bytes())
    except ValueError:  # not JSON, or not UTF-8
        return None
    return value if isinstance(value, dict) else None


def read_config(directory: Path) -> dict[str, Any] | None:
    """The recipe in ``directory/config.json``; ``None`` if there is no such file.

    Raises:
        FileExistsError: the file is not a JSON object (not a recipe of ours).
    """
    path = directory / CONFIG_FILE
    if not path.is_file():
        return None
    config = json_object(path)
    if config is None:
        raise FileExistsError(
            f"{directory} holds a {CONFIG_FILE} that is not a shard recipe; it is left as it is: delete it, or "
            "choose another cache_dir/output folder"
        )
    return config


def build_shard_dir(directory: str | Path, config: Mapping[str, Any], build: Callable[[Path], None]) -> bool:
    """Make ``directory`` hold the shards that ``config`` describes, unless it already does.

    ``build(folder)`` writes the shards into a fresh folder, which becomes ``directory`` only once
    complete (with ``config.json``), so an interrupted run leaves no half-written cache behind.

    Returns:
        ``True`` if it built the shards, ``False`` if ``directory`` already held them.

    Raises:
        FileExistsError: ``directory`` holds shards of another config, or files that are not shards; or it,
            or a folder above it, is a file.
    """
    directory = Path(directory)
    for folder in (directory, *directory.parents):
        if folder.exists():
            if not folder.is_dir():
                raise FileExistsError(f"{folder} is a file, not a folder; choose another cache_dir/output folder")
            break
    config = json.loads(json.dumps(dict(config)))  # the form it takes in config.json (lists, not tuples)
    existing = read_config(directory)
    if existing == config:
        return False
    if existing is not None:
        changed = sorted(key for key in existing.keys() | config.keys() if existing.get(key) != config.get(key))
        raise FileExistsError(
            f"{directory} holds shards made with another config (differences in {changed}); it is left as it is: "
            "delete it, or choose another cache_dir/output folder"
        )
    if directory.exists() and any(directory.iterdir()):
        raise FileExistsError(f"{directory} is not empty and holds no {CONFIG_FILE}; choose another folder")
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = directory.parent / f".{directory.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        build(staging)
        (staging / CONFIG_FILE).write_text(json.dumps(config, indent=1, sort_keys=True))
        try:
            if directory.exists():
                directory.rmdir()  # empty, checked above
            os.rename(staging, directory)
        except OSError:  # another run filled it meanwhile (two fits of one config started together)
            if read_config(directory) == config:
                return False  # the same shards: its folder stays
            raise FileExistsError(
                f"{directory} was filled by another run while this one built its shards; it is left as it is: "
                "choose another cache_dir/output folder, or run again to reuse it if it holds this config's"
            ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return True


class TokenWindowDataset(Dataset):
    """Item ``start`` is the window ``tokens[start : start + seq_len + 1]`` as a next-token pair.

    Items are ``{"inputs": (seq_len,), "targets": (seq_len,)}`` int64 tensors with
    ``targets = inputs`` shifted by one. Valid starts are ``0 .. len(tokens) - seq_len - 1``;
    :class:`RandomWindowSampler` and :class:`ContiguousWindowSampler` choose which.
    """

    def __init__(self, tokens: np.ndarray, seq_len: int) -> None:
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        if len(tokens) < seq_len + 1:
            raise ValueError(f"{len(tokens)} tokens hold no window of seq_len + 1 = {seq_len + 1}; use more text")
        self.tokens, self.seq_len = tokens, seq_len

    def __len__(self) -> int:
        return len(self.tokens) - self.seq_len

    @property
    def num_windows(self) -> int:
        """How many non-overlapping windows fit: one epoch's worth."""
        return (len(self.tokens) - 1) // self.seq_len

    def __getitem__(self, start: int) -> dict[str, Tensor]:
        window = torch.from_numpy(self.tokens[start : start + self.seq_len + 1].astype(np.int64))
        return {"inputs": window[:-1], "targets": window[1:]}

    def __getstate__(self) -> dict[str, Any]:
        """Workers reopen the memmap instead of receiving a copy of the tokens."""
        state = self.__dict__.copy()
        if isinstance(self.tokens, np.memmap):
            state["tokens"] = (self.tokens.filename, self.tokens.dtype.str, len(self.tokens))
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if isinstance(state["tokens"], tuple):
            filename, dtype, length = state["tokens"]
            state["tokens"] = np.memmap(filename, dtype=dtype, mode="r", shape=(length,))
        self.__dict__.update(state)


class RandomWindowSampler(Sampler[int]):
    """Training: ``num_windows`` window starts drawn uniformly per epoch from the stream ``(seed, epoch)``.

    Lightning calls :meth:`set_epoch` before each epoch (also through its distributed wrapper).
    """

    def __init__(self, dataset: TokenWindowDataset, seed: int = 0) -> None:
        self.num_starts, self.num_windows = len(dataset), dataset.num_windows
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_windows

    def __iter__(self) -> Iterator[int]:
        starts = np.random.default_rng([self.seed, self.epoch]).integers(0, self.num_starts, size=self.num_windows)
        return iter(starts.tolist())


class ContiguousWindowSampler(Sampler[int]):
    """Evaluation: the non-overlapping windows ``0, seq_len, 2·seq_len, ...`` in order."""

    def __init__(self, dataset: TokenWindowDataset) -> None:
        self.seq_len, self.num_windows = dataset.seq_len, dataset.num_windows

    def __len__(self) -> int:
        return self.num_windows

    def __iter__(self) -> Iterator[int]:
        return iter(range(0, self.num_windows * self.seq_len, self.seq_len))
