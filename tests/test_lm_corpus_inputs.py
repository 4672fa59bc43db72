"""Language-model inputs that change, grow or are odd: stale caches, stable splits, text that spells the end-of-text
token, bytes that are not UTF-8, unusable cache folders, ignored arguments and tokenizers without end-of-text."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from test_lm_data import hf_datasets_installed

from pararnn_ts.cli import refusal
from pararnn_ts.lm import (
    BPETokenizer,
    ByteTokenizer,
    TextDataModule,
    open_shard,
    read_jsonl,
    read_text_files,
    write_shards,
)
from pararnn_ts.lm.corpus import import_hf_datasets, source_fingerprint, stdlib_root
from pararnn_ts.lm.shards import build_shard_dir
from pararnn_ts.lm.tokenizers import EOS

CAPS = {"max_train_bytes": 10_000, "max_val_bytes": 10_000}


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts), encoding="utf-8")
    return path


def refused(error: pytest.ExceptionInfo, *parts: str) -> None:
    """``error`` is a refusal (the CLI prints it as one ``error:`` line) whose message holds every one of ``parts``."""
    assert refusal(error.value), error.value
    assert all(part in str(error.value) for part in parts), (str(error.value), parts)


# --- F1: source="hf" with local data files --------------------------------------------------------------------


def test_hf_local_data_files_are_fingerprinted_and_hub_ids_are_not(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = write_jsonl(tmp_path / "code.jsonl", [f"document {i}" for i in range(24)])
    paths = ["json", "*.jsonl"]
    before = TextDataModule("hf", paths, **CAPS)
    inputs = before.cache_config()["inputs"]
    write_jsonl(data, ["document 0", "document 1", "document 2"])  # the user shrinks the corpus
    after = TextDataModule("hf", paths, **CAPS)
    assert after.cache_config()["inputs"] not in (inputs, None)
    assert after.cache_dir != before.cache_dir  # so the default cache folder is a new one
    # A Hub dataset, and data files that are not here (inside a Hub dataset, remote), are not checked again.
    for hub in (
        ["cerebras/SlimPajama-627B"],
        ["allenai/c4", "en/c4-train.0000*.json.gz"],
        ["json", "https://x/a.jsonl"],
    ):
        assert source_fingerprint("hf", hub) is None
    (tmp_path / "local_dataset").mkdir()
    (tmp_path / "local_dataset" / "part.jsonl").write_text('{"text": "x"}\n')
    assert source_fingerprint("hf", ["local_dataset"]) is not None  # a local dataset folder is files too


@pytest.mark.skipif(not hf_datasets_installed(), reason="needs Hugging Face `datasets` (pip install datasets)")
def test_hf_shards_of_edited_local_files_are_not_reused(tmp_path, monkeypatch):
    monkeypatch.setattr(import_hf_datasets().config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    data = write_jsonl(tmp_path / "code.jsonl", [f"document {i}: " + "text " * 20 for i in range(24)])
    cache = tmp_path / "cache"
    TextDataModule("hf", ["json", str(data)], cache_dir=str(cache), val_fraction=0.2, **CAPS).prepare_data()
    write_jsonl(data, ["document 0", "document 1", "document 2"])
    edited = TextDataModule("hf", ["json", str(data)], cache_dir=str(cache), val_fraction=0.2, **CAPS)
    with pytest.raises(FileExistsError, match=r"another config \(differences in \['inputs'\]\)"):
        edited.prepare_data()


# --- F2: keys, and so splits, of files ------------------------------------------------------------------------


def test_a_files_key_depends_on_its_own_pattern_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("corpus/a.txt", "corpus/sub/b.txt", "more/c.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
        write_jsonl((tmp_path / name).with_suffix(".jsonl"), [name, name])
    alone = dict(read_text_files(["corpus/**/*.txt"]))
    assert list(alone) == ["a.txt", "sub/b.txt"]
    with_more = dict(read_text_files(["corpus/**/*.txt", "more/*.txt"]))
    assert with_more == {**alone, "c.txt": "more/c.txt"}  # the corpus files keep their keys, and so their splits
    lines = dict(read_jsonl([str(tmp_path / "corpus/*.jsonl")]))
    assert dict(read_jsonl([str(tmp_path / "corpus/*.jsonl"), str(tmp_path / "more/*.jsonl")])) == {
        **lines,
        "c.jsonl:1": "more/c.txt",
        "c.jsonl:2": "more/c.txt",
    }
    assert list(dict(read_text_files(["corpus/sub/*.txt", "corpus/**/*.txt"]))) == ["a.txt", "b.txt"]  # first wins


def test_one_pattern_keys_files_as_before(tmp_path):
    """Keys of one pattern are what they were when keys were relative to the files' common folder."""
    json_dir = stdlib_root() / "json"
    assert [key for key, _ in read_text_files([f"{json_dir}/*.py"])] == sorted(p.name for p in json_dir.glob("*.py"))
    assert [key for key, _ in read_text_files([json_dir / "decoder.py"])] == ["decoder.py"]
    email = [key for key, _ in read_text_files([f"{stdlib_root() / 'email'}/**/*.py"])]
    assert "mime/text.py" in email and "utils.py" in email


# --- F5: text that spells the end-of-text token -----------------------------------------------------------------


def test_bpe_encodes_text_that_spells_the_end_of_text_token_as_text(tmp_path):
    pytest.importorskip("tokenizers")
    texts = [(stdlib_root() / "json" / name).read_text(encoding="utf-8") for name in ("decoder.py", "encoder.py")]
    tokenizer = BPETokenizer.train(texts, vocab_size=400)
    tokenizer.save(tmp_path / "bpe.json")
    document = f'EOS = "{EOS}"  # ends a document'
    for bpe in (tokenizer, BPETokenizer.from_file(tmp_path / "bpe.json")):
        ids = bpe.encode(document)
        assert bpe.eos_id not in ids and bpe.decode(ids) == document
    write_shards([("train", document), ("train", "next"), ("val", "v")], tokenizer, tmp_path)
    tokens = open_shard(tmp_path, "train")[0].tolist()
    assert tokens.count(tokenizer.eos_id) == 2 and tokens[-1] == tokenizer.eos_id  # one after each document


# --- F6: bytes that are not UTF-8 -------------------------------------------------------------------------------


def test_text_that_is_not_utf8_is_refused_naming_file_line_and_fix(tmp_path):
    (tmp_path / "fine.txt").write_text("café\n", encoding="utf-8")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(b"first line\nabc\xff\xfe\x80def caf\xe9\n")
    with pytest.raises(ValueError) as error:
        list(read_text_files([str(tmp_path / "*.txt")]))
    refused(error, f"{latin1}, line 2", "0xff", "iconv -f latin1 -t utf-8")
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"text": "hello world"}\n\n{"text": "caf\xe9"}\n')
    with pytest.raises(ValueError) as error:
        list(read_jsonl([bad]))
    refused(error, f"{bad}, line 3", "0xe9", "not UTF-8")


# --- F12: unusable cache folders, empty splits ------------------------------------------------------------------


def test_a_cache_dir_that_is_a_file_or_holds_a_foreign_config_is_refused_naming_it(tmp_path):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    for cache_dir in (a_file, a_file / "shards"):
        with pytest.raises(FileExistsError) as error:
            TextDataModule(cache_dir=str(cache_dir), **CAPS).prepare_data()
        refused(error, f"{a_file} is a file, not a folder", "cache_dir")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    for content in ("not json {", "[1, 2]"):
        (foreign / "config.json").write_text(content)
        with pytest.raises(FileExistsError) as error:
            TextDataModule(cache_dir=str(foreign), **CAPS).prepare_data()
        refused(error, f"{foreign} holds a config.json that is not a shard recipe")
    assert a_file.read_text() == "mine" and (foreign / "config.json").read_text() == "[1, 2]"


@pytest.mark.parametrize("same", [True, False])
def test_a_cache_another_run_finished_while_this_one_built_is_reused_or_refused(tmp_path, same):
    """Two fits of one config started together both build the shards: the second to finish found the folder full
    (a raw ``OSError: Directory not empty``); it now takes the other's if they are of its config."""
    target, config = tmp_path / "cache", {"seq_len": 8}

    def build(staging):  # meanwhile the other run finishes first
        (staging / "mine").write_text("shard")
        target.mkdir()
        (target / "config.json").write_text(json.dumps(config if same else {"seq_len": 9}))

    if same:
        assert build_shard_dir(target, config, build) is False
    else:
        with pytest.raises(FileExistsError, match="was filled by another run while this one built its shards"):
            build_shard_dir(target, config, build)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"] and not (target / "mine").exists()


def test_a_short_split_is_told_which_way_to_move_val_fraction(tmp_path):
    (tmp_path / "corpus").mkdir()
    for i in range(20):
        (tmp_path / "corpus" / f"{i}.txt").write_text(f"document {i} " * 10)
    pattern = [str(tmp_path / "corpus" / "*.txt")]
    for val_fraction, split, advice in (
        (0.99, "train", "a smaller val_fraction"),
        (0.01, "val", "a larger val_fraction"),
    ):
        data = TextDataModule("files", pattern, seq_len=64, val_fraction=val_fraction, cache_dir=str(tmp_path / split))
        data.prepare_data()
        with pytest.raises(ValueError) as error:
            data.setup()
        refused(error, f"the {split} split", advice, f"max_{split}_bytes")


def test_a_train_split_of_fewer_windows_than_one_batch_is_refused(tmp_path):
    """The training loader drops an incomplete batch: such a fit trained nothing, exited 0 and tested the initial
    weights."""
    write_shards([("train", "a" * 100), ("val", "b" * 100)], ByteTokenizer(), tmp_path)  # 101 tokens: 12 windows of 8
    TextDataModule("shards", [str(tmp_path)], seq_len=8, batch_size=12).setup("fit")
    with pytest.raises(ValueError) as error:
        TextDataModule("shards", [str(tmp_path)], seq_len=8, batch_size=13).setup("fit")
    refused(error, "12 windows of seq_len=8, fewer than one batch (batch_size=13)", "a smaller batch_size")


# --- F13: arguments that source="shards" ignores, tokenizers without end-of-text -------------------------------


def test_shards_take_one_folder(tmp_path):
    """Of several paths only the first was read, without a word."""
    with pytest.raises(ValueError, match=r"source='shards' reads one shard folder: .* got 2 paths"):
        TextDataModule("shards", [str(tmp_path / "a"), str(tmp_path / "b")])


def test_shards_warn_about_the_arguments_they_ignore(tmp_path):
    write_shards([("train", "a" * 100), ("val", "b" * 100)], ByteTokenizer(), tmp_path)
    with pytest.warns(RuntimeWarning, match="max_train_bytes, max_val_bytes are ignored"):
        TextDataModule("shards", [str(tmp_path)], seq_len=8, **CAPS)
    with pytest.warns(RuntimeWarning, match="val_fraction is ignored"):
        TextDataModule("shards", [str(tmp_path)], seq_len=8, val_fraction=0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TextDataModule("shards", [str(tmp_path)], seq_len=8)  # defaults: nothing to say


def test_a_tokenizer_without_end_of_text_warns_that_documents_run_together(tmp_path):
    pytest.importorskip("tokenizers")
    tokenizer = BPETokenizer.train(["some text to learn from"] * 5, vocab_size=300, special_tokens=("</s>",))
    assert tokenizer.eos_id is None
    with pytest.warns(RuntimeWarning, match=rf"tokenizer '{tokenizer.name}' has no .* no separator") as record:
        write_shards([("train", "one"), ("train", "two"), ("val", "three")], tokenizer, tmp_path)
    assert len(record) == 1 and Path(record[0].filename).resolve() == Path(__file__).resolve()
    assert open_shard(tmp_path, "train")[0].tolist() == tokenizer.encode("one") + tokenizer.encode("two")
