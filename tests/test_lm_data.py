"""Language-model data: tokenisers, corpora, shards, windows and ``TextDataModule``."""

from __future__ import annotations

import importlib.util
import json
import pickle
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pararnn_ts.lm import (
    BPETokenizer,
    ByteTokenizer,
    ContiguousWindowSampler,
    RandomWindowSampler,
    TextDataModule,
    TokenWindowDataset,
    open_shard,
    read_jsonl,
    split_of,
    stdlib_documents,
    stdlib_files,
    write_shards,
)
from pararnn_ts.lm.corpus import hf_documents, import_hf_datasets, stdlib_root
from pararnn_ts.lm.tokenizers import EOS

ROOT = Path(__file__).resolve().parents[1]
HAS_TOKENIZERS = importlib.util.find_spec("tokenizers") is not None
TINY_CAPS = {"max_train_bytes": 40_000, "max_val_bytes": 8_000}


def hf_datasets_installed() -> bool:
    try:
        import_hf_datasets()
    except ImportError:
        return False
    return True


def random_unicode(rng: random.Random, length: int) -> str:
    """Any code point but the surrogates (which UTF-8 cannot encode), ASCII-heavy like real text."""
    points = [rng.choice((rng.randrange(0x20, 0x7F), rng.randrange(0x80, 0xD800), rng.randrange(0xE000, 0x110000)))]
    points += [rng.randrange(0x80, 0xD800) if rng.random() < 0.3 else rng.randrange(0, 0x80) for _ in range(length)]
    points.append(rng.randrange(0x10000, 0x110000))
    return "".join(map(chr, points))


@pytest.fixture
def text_corpus(tmp_path) -> Path:
    """Ten small text files copied from the standard library's json package and friends."""
    folder = tmp_path / "docs"
    folder.mkdir()
    for path in sorted((stdlib_root() / "json").glob("*.py")) + sorted((stdlib_root() / "email").glob("_*.py"))[:5]:
        (folder / f"{path.parent.name}_{path.name}.txt").write_bytes(path.read_bytes())
    return folder


@pytest.fixture
def jsonl_file(tmp_path) -> Path:
    path = tmp_path / "records.jsonl"
    records = [{"id": i, "text": f"document {i}: " + "héllo wörld " * (i + 1)} for i in range(40)]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n", encoding="utf-8")
    return path


# --- tokenisers ---------------------------------------------------------------------------------------------


def test_byte_tokenizer_round_trips_any_unicode():
    tokenizer, rng = ByteTokenizer(), random.Random(0)
    assert tokenizer.vocab_size == 257 and tokenizer.eos_id == 256
    for length in (0, 1, 17, 500):
        text = random_unicode(rng, length)
        ids = tokenizer.encode(text)
        assert len(ids) == len(text.encode("utf-8")) and max(ids, default=0) < 256
        assert tokenizer.decode(ids) == text
    assert tokenizer.encode(EOS) == list(EOS.encode())  # text never turns into special tokens
    assert tokenizer.decode([104, 105, 256, 0xFF]) == f"hi{EOS}\ufffd"  # invalid UTF-8 decodes, marked
    with pytest.raises(ValueError, match="257"):
        tokenizer.decode([257])


def test_byte_tokenizer_without_special_tokens():
    tokenizer = ByteTokenizer(special_tokens=())
    assert (tokenizer.vocab_size, tokenizer.eos_id, tokenizer.name) == (256, None, "byte")


@pytest.mark.skipif(not HAS_TOKENIZERS, reason="needs the `tokenizers` package (pip install tokenizers)")
def test_bpe_trains_saves_and_loads_with_round_trip(text_corpus, tmp_path):
    texts = [path.read_text() for path in sorted(text_corpus.iterdir())]
    tokenizer = BPETokenizer.train(texts, vocab_size=400)
    assert tokenizer.vocab_size == 400 and tokenizer.eos_id is not None
    rng = random.Random(1)
    samples = [texts[0][:2000], random_unicode(rng, 300), "  def  f(x):\n\treturn x  # ünïcödé 🎉"]
    for text in samples:
        assert tokenizer.decode(tokenizer.encode(text)) == text
    assert len(tokenizer.encode(texts[0])) < 0.6 * len(texts[0].encode())  # merges were learned
    tokenizer.save(tmp_path / "bpe.json")
    loaded = BPETokenizer.from_file(tmp_path / "bpe.json")
    assert loaded.name == tokenizer.name and loaded.vocab_size == 400
    assert all(loaded.encode(text) == tokenizer.encode(text) for text in samples)


def test_bpe_vocab_with_no_room_for_merges_is_refused():
    with pytest.raises(ValueError, match="vocab_size=100 leaves no room for merges.*vocab_size >= 258"):
        BPETokenizer.train(["some text"], vocab_size=100)
    assert BPETokenizer.train(["some text"] * 3, vocab_size=258).vocab_size == 258


def test_bpe_without_tokenizers_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # makes `import tokenizers` fail
    with pytest.raises(ImportError, match="pip install tokenizers"):
        BPETokenizer.train(["some text"], vocab_size=300)


# --- corpora ------------------------------------------------------------------------------------------------


def test_stdlib_corpus_is_real_deterministic_and_split_by_file():
    files = stdlib_files()
    assert len(files) > 100 and files == stdlib_files()
    root = stdlib_root()
    keys = [path.relative_to(root).as_posix() for path in files]
    assert "json/decoder.py" in keys and keys == sorted(keys)
    assert not any(part in {"test", "tests", "site-packages"} for key in keys for part in key.split("/")[:-1])
    splits = {key: split_of(key, 0.05) for key in keys}
    train = {key for key, split in splits.items() if split == "train"}
    val = {key for key, split in splits.items() if split == "val"}
    assert train and val and not train & val and train | val == set(keys)
    assert 0.01 < len(val) / len(keys) < 0.15
    first = next(stdlib_documents())
    assert first[0] == keys[0] and len(first[1]) > 0


def test_jsonl_reader_and_missing_field_error(jsonl_file, tmp_path):
    documents = list(read_jsonl([jsonl_file], text_field="text"))
    assert len(documents) == 40 and documents[3] == ("records.jsonl:4", "document 3: " + "héllo wörld " * 4)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "fine"}\n\n{"body": "no text here"}\n')
    with pytest.raises(ValueError) as error:
        list(read_jsonl([broken], text_field="text"))
    message = str(error.value)
    assert str(broken) in message and "line 3" in message and "'text'" in message and "body" in message


def test_hf_reader_without_datasets_says_how_to_install(monkeypatch, jsonl_file):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(ImportError, match="pip install datasets"):
        next(hf_documents("json", data_files=[str(jsonl_file)]))


@pytest.mark.skipif(not hf_datasets_installed(), reason="needs Hugging Face `datasets` (pip install datasets)")
def test_hf_streaming_reads_a_local_jsonl_fixture(jsonl_file, tmp_path, monkeypatch):
    monkeypatch.setattr(import_hf_datasets().config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    streamed = list(hf_documents("json", "text", data_files=[str(jsonl_file)]))
    assert [text for _, text in streamed] == [text for _, text in read_jsonl([jsonl_file])]
    with pytest.raises(ValueError, match="record 0"):
        next(hf_documents("json", "body", data_files=[str(jsonl_file)]))


# --- shards and windows -------------------------------------------------------------------------------------


class WideTokenizer:
    """A stand-in with a vocabulary too large for uint16."""

    name, vocab_size, eos_id = "wide", 70_000, 69_999

    def encode(self, text: str) -> list[int]:
        return [60_000 + ord(c) % 1000 for c in text]


@pytest.mark.parametrize("tokenizer, dtype", [(ByteTokenizer(), np.uint16), (WideTokenizer(), np.uint32)])
def test_shards_round_trip_deterministically(tokenizer, dtype, tmp_path):
    documents = [("train", "first document"), ("val", "held out"), ("train", "sécond")]
    for folder in (tmp_path / "a", tmp_path / "b"):
        folder.mkdir()
        infos = write_shards(documents, tokenizer, folder)
    assert infos["train"].num_documents == 2 and infos["train"].num_bytes == len("first documentsécond".encode())
    for split in ("train", "val"):
        tokens, info = open_shard(tmp_path / "a", split)
        expected = [i for s, text in documents if s == split for i in [*tokenizer.encode(text), tokenizer.eos_id]]
        assert tokens.dtype == dtype and info.dtype == np.dtype(dtype).name and tokens.tolist() == expected
        assert info.num_tokens == len(expected) and info.tokenizer == tokenizer.name and info.split == split
        for suffix in (".bin", ".json"):
            assert (tmp_path / "a" / f"{split}{suffix}").read_bytes() == (
                tmp_path / "b" / f"{split}{suffix}"
            ).read_bytes()


def test_memmapped_windows_pickle_as_a_reopened_memmap(tmp_path):
    write_shards([("train", "abcdefgh" * 20), ("val", "v")], ByteTokenizer(), tmp_path)
    dataset = TokenWindowDataset(open_shard(tmp_path, "train")[0], seq_len=8)
    copy = pickle.loads(pickle.dumps(dataset))  # what a DataLoader worker receives under spawn
    assert isinstance(copy.tokens, np.memmap) and torch.equal(copy[5]["inputs"], dataset[5]["inputs"])


def test_shard_caps_cut_each_split(tmp_path):
    documents = [("train", "x" * 100), ("val", "y" * 100), ("train", "é" * 100)]
    infos = write_shards(documents, ByteTokenizer(), tmp_path, {"train": 150, "val": 30})
    assert (infos["train"].num_bytes, infos["val"].num_bytes) == (150, 30)


def test_windows_are_shifted_pairs_and_samplers_cover_the_data():
    tokens = np.arange(1000, dtype=np.uint16)
    dataset = TokenWindowDataset(tokens, seq_len=64)
    item = dataset[10]
    assert item["inputs"].shape == item["targets"].shape == (64,) and item["inputs"].dtype == torch.int64
    assert torch.equal(item["targets"][:-1], item["inputs"][1:]) and item["targets"][-1] == 74
    contiguous = list(ContiguousWindowSampler(dataset))
    assert contiguous == list(range(0, 15 * 64, 64)) and dataset.num_windows == 15  # (1000 - 1) // 64
    sampler = RandomWindowSampler(dataset, seed=3)
    epoch0 = list(sampler)
    assert epoch0 == list(sampler) and len(epoch0) == 15 and max(epoch0) <= 1000 - 65
    sampler.set_epoch(1)
    assert list(sampler) != epoch0
    with pytest.raises(ValueError, match="no window"):
        TokenWindowDataset(tokens[:64], seq_len=64)


# --- the data module ----------------------------------------------------------------------------------------


def test_datamodule_end_to_end_on_the_stdlib(tmp_path):
    dm = TextDataModule(seq_len=32, batch_size=4, cache_dir=str(tmp_path / "cache"), **TINY_CAPS)
    assert dm.vocab_size == 257
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["inputs"].shape == batch["targets"].shape == (4, 32)
    assert torch.equal(batch["inputs"][:, 1:], batch["targets"][:, :-1])
    val_batches = list(dm.val_dataloader())
    assert sum(len(b["inputs"]) for b in val_batches) == (len(dm.tokens["val"]) - 1) // 32
    assert 0 < dm.unigram_bits_per_byte() < 8 and 0 < dm.unigram_bits_per_byte("val") < 8
    assert dm.bytes_per_token() == pytest.approx(1, abs=0.01)


def test_cache_is_reused_and_never_overwritten_by_another_config(tmp_path):
    cache = tmp_path / "cache"
    TextDataModule(cache_dir=str(cache), **TINY_CAPS).prepare_data()
    written = {path.name: path.stat().st_mtime_ns for path in cache.iterdir()}
    TextDataModule(cache_dir=str(cache), seq_len=8, **TINY_CAPS).prepare_data()  # seq_len: same shards
    assert {path.name: path.stat().st_mtime_ns for path in cache.iterdir()} == written
    other = TextDataModule(cache_dir=str(cache), max_train_bytes=20_000, max_val_bytes=8_000)
    with pytest.raises(FileExistsError, match="another config.*max_bytes"):
        other.prepare_data()
    assert {path.name: path.stat().st_mtime_ns for path in cache.iterdir()} == written
    stranger = tmp_path / "not_a_cache"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        TextDataModule(cache_dir=str(stranger), **TINY_CAPS).prepare_data()


def test_default_cache_dir_depends_on_the_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a, b = TextDataModule(**TINY_CAPS), TextDataModule(seq_len=8, batch_size=2, **TINY_CAPS)
    c = TextDataModule(max_train_bytes=1000, max_val_bytes=1000)
    assert a.cache_dir == b.cache_dir != c.cache_dir and a.cache_dir.parent == Path("runs/cache")


def test_datamodule_reads_jsonl_and_text_files(jsonl_file, text_corpus, tmp_path):
    jsonl = TextDataModule("jsonl", [str(jsonl_file)], seq_len=16, batch_size=2, cache_dir=str(tmp_path / "j"))
    jsonl.prepare_data()
    jsonl.setup()
    assert next(iter(jsonl.val_dataloader()))["inputs"].shape == (2, 16)
    files = TextDataModule(
        "files", [str(text_corpus / "*.txt")], seq_len=16, val_fraction=0.3, cache_dir=str(tmp_path / "f")
    )
    files.prepare_data()
    files.setup()
    assert next(iter(files.train_dataloader()))["targets"].shape == (16, 16)


def test_prepare_script_writes_shards_the_datamodule_reads(text_corpus, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("prepare_text_files", ROOT / "datasets" / "text_files" / "prepare.py")
    prepare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prepare)
    with pytest.raises(SystemExit) as exit_info:
        prepare.main(["--help"])
    assert exit_info.value.code == 0 and "--vocab-size" in capsys.readouterr().out
    out = tmp_path / "shards"
    args = ["--input", str(text_corpus / "*.txt"), "--out", str(out), "--val-fraction", "0.3"]
    prepare.main(args)
    prepare.main(args)
    assert "reused" in capsys.readouterr().out
    dm = TextDataModule("shards", [str(out)], seq_len=16, batch_size=2)
    dm.setup()
    assert next(iter(dm.train_dataloader()))["inputs"].shape == (2, 16)
    with pytest.raises(FileExistsError, match="another config"):
        prepare.main([*args[:-1], "0.5"])


def test_stdlib_bytes_fragment_builds_the_datamodule():
    fragment = yaml.safe_load((ROOT / "datasets" / "stdlib_bytes.yaml").read_text())
    assert fragment["class_path"] == "pararnn_ts.lm.TextDataModule"
    dm = TextDataModule(**fragment["init_args"])
    assert (dm.source, dm.seq_len, dm.batch_size, dm.vocab_size) == ("stdlib", 256, 16, 257)


@pytest.mark.parametrize("seed", [-1, 2**64])
def test_a_seed_outside_numpys_range_is_refused_where_the_data_module_is_made(seed):
    """It seeds the training windows (NumPy: 0 to 2**64 - 1): -1 failed inside the fit with NumPy's traceback."""
    with pytest.raises(ValueError, match=rf"TextDataModule: need 0 <= seed <= {2**64 - 1} \(got {seed}\)"):
        TextDataModule("stdlib", seed=seed)


@pytest.mark.parametrize("source, glob", [("files", "**/*.py"), ("jsonl", "*.jsonl")])
def test_a_folder_in_paths_says_to_give_a_glob_of_its_files(source, glob, tmp_path):
    import re

    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_text("hello")
    folder = str(tmp_path / "corpus")
    told = re.escape(f"{folder}/' is a folder; give a glob of its files, e.g. '{folder}/{glob}'")
    with pytest.raises(IsADirectoryError, match=told):  # the default cache folder hashes the files: at once
        TextDataModule(source=source, paths=[folder + "/"])
    data = TextDataModule(source=source, paths=[folder + "/"], cache_dir=str(tmp_path / "cache"))
    with pytest.raises(IsADirectoryError, match=told):  # a given cache folder: when the files are read
        data.prepare_data()
    with pytest.raises(FileNotFoundError, match="no file matches"):  # a missing path is still told apart
        TextDataModule(source=source, paths=[str(tmp_path / "missing")])
