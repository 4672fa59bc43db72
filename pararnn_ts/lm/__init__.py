"""Language modelling: tokenisers, text corpora, token shards, the data module that serves them, and the
LightningModule that trains on them. Generation: :mod:`pararnn_ts.lm.generate` (``pararnn-ts generate``)."""

from .corpus import hf_documents, read_jsonl, read_text_files, split_of, stdlib_documents, stdlib_files
from .datamodule import ResumableDataLoader, TextDataModule
from .module import CausalLM
from .shards import (
    ContiguousWindowSampler,
    RandomWindowSampler,
    ShardInfo,
    TokenWindowDataset,
    build_shard_dir,
    open_shard,
    write_shards,
)
from .tokenizers import BPETokenizer, ByteTokenizer, load_tokenizer

__all__ = [
    "BPETokenizer",
    "ByteTokenizer",
    "CausalLM",
    "ContiguousWindowSampler",
    "RandomWindowSampler",
    "ResumableDataLoader",
    "ShardInfo",
    "TextDataModule",
    "TokenWindowDataset",
    "build_shard_dir",
    "hf_documents",
    "load_tokenizer",
    "open_shard",
    "read_jsonl",
    "read_text_files",
    "split_of",
    "stdlib_documents",
    "stdlib_files",
    "write_shards",
]
