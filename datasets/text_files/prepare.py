"""Tokenise local text or JSONL files into memmapped train/val(/test) shards for ``TextDataModule(source="shards")``.

    python datasets/text_files/prepare.py --input 'docs/*.txt' --out data/mytext --tokenizer byte
    python datasets/text_files/prepare.py --input 'docs/**/*.md' --out data/mytext --tokenizer bpe --vocab-size 4096
    python datasets/text_files/prepare.py --input 'docs/*.txt' --out data/mytext-test --test-fraction 0.05

Documents (a file, or a JSONL line) go to train, val or (with ``--test-fraction``) test by a hash of
their path, so the split is the same on every machine; test documents are taken from train, so
validation is the same with or without a test split. A BPE tokeniser is trained on the train
documents only and saved as ``<out>/tokenizer.json``. The output is deterministic; rerunning with
the same arguments reuses it, and an existing output made otherwise is never overwritten.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pararnn_ts.cli import exit_on_refusal
from pararnn_ts.lm.corpus import (
    SPLITS,
    TEST_SPLIT,
    check_fractions,
    read_jsonl,
    read_text_files,
    source_fingerprint,
    split_documents,
)
from pararnn_ts.lm.shards import build_shard_dir, read_shard_info, write_shards
from pararnn_ts.lm.tokenizers import BPETokenizer, ByteTokenizer, Tokenizer


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", action="append", required=True, help="file or glob (quoted); repeatable")
    parser.add_argument("--out", required=True, type=Path, help="output folder for the shards")
    parser.add_argument("--format", choices=("text", "jsonl"), default="text", help="one document per file or line")
    parser.add_argument("--text-field", default="text", help="JSONL field holding the text")
    parser.add_argument("--tokenizer", choices=("byte", "bpe"), default="byte")
    parser.add_argument("--vocab-size", type=int, default=4096, help="BPE vocabulary size")
    parser.add_argument("--val-fraction", type=float, default=0.05, help="share of documents held out")
    parser.add_argument(
        "--test-fraction", type=float, default=0.0, help="share of documents held out for testing (0: no test split)"
    )
    parser.add_argument("--max-train-bytes", type=int, default=None, help="cap on the train text")
    parser.add_argument("--max-val-bytes", type=int, default=None, help="cap on the validation text")
    parser.add_argument("--max-test-bytes", type=int, default=None, help="cap on the test text")
    args = parser.parse_args(argv)
    if args.max_test_bytes is not None and args.test_fraction == 0:
        parser.error("--max-test-bytes caps a test split: give --test-fraction too")
    return args


def documents(args: argparse.Namespace):
    if args.format == "jsonl":
        return read_jsonl(args.input, args.text_field)
    return read_text_files(args.input)


def train_documents(args: argparse.Namespace):
    split_texts = split_documents(documents(args), args.val_fraction, args.test_fraction)
    return (text for split, text in split_texts if split == "train")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    check_fractions(args.val_fraction, args.test_fraction)
    splits = (*SPLITS, TEST_SPLIT) if args.test_fraction > 0 else SPLITS
    max_bytes = {"train": args.max_train_bytes, "val": args.max_val_bytes}
    if args.test_fraction > 0:  # only then: folders prepared without a test split keep their recipe
        max_bytes[TEST_SPLIT] = args.max_test_bytes
    config = {
        "inputs": args.input,
        "fingerprint": source_fingerprint("jsonl" if args.format == "jsonl" else "files", args.input),
        "format": args.format,
        "text_field": args.text_field,
        "tokenizer": args.tokenizer,
        "vocab_size": args.vocab_size if args.tokenizer == "bpe" else None,
        "val_fraction": args.val_fraction,
        "max_bytes": max_bytes,
    }
    if args.test_fraction > 0:
        config["test_fraction"] = args.test_fraction

    def build(folder: Path) -> None:
        tokenizer: Tokenizer = ByteTokenizer()
        if args.tokenizer == "bpe":
            tokenizer = BPETokenizer.train(train_documents(args), args.vocab_size)
            tokenizer.save(folder / "tokenizer.json")
        split_texts = split_documents(documents(args), args.val_fraction, args.test_fraction)
        write_shards(split_texts, tokenizer, folder, max_bytes, splits)

    built = build_shard_dir(args.out, config, build)
    for split in splits:
        info = read_shard_info(args.out, split)
        counts = f"{info.num_documents} documents, {info.num_bytes} bytes, {info.num_tokens} tokens"
        print(f"{split}: {counts} ({info.dtype})")
    print(f"{'wrote' if built else 'reused'} {args.out} (tokenizer {info.tokenizer})")


if __name__ == "__main__":
    exit_on_refusal(main)  # a refusal (an existing output made otherwise, a bad file) is one error: line
