"""The language model's held-out test split (``TextDataModule(test_fraction=...)``, ``prepare.py --test-fraction``,
``pararnn-ts test``), and training with no validation split (``val_fraction=0``, ``limit_val_batches=0``).

Without a test split, splits, shards and cache folders must stay those of the versions before test splits: the
expected values below were computed on that code (commit a0f6ffd), or are computed here from the hash rule itself.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import inspect
import itertools
import json
import math
import platform
import re
import sysconfig
from pathlib import Path

import pytest
import torch
from conftest import JSON_PY, small_lm
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities.model_helpers import is_overridden

from pararnn_ts.cli import main as cli_main
from pararnn_ts.cli import refusal
from pararnn_ts.lm import ByteTokenizer, TextDataModule
from pararnn_ts.lm.corpus import split_of
from pararnn_ts.lm.shards import write_shards
from pararnn_ts.nn import LanguageModel

ROOT = Path(__file__).resolve().parents[1]
TINY_GRU = ROOT / "experiments" / "lm" / "tiny_paragru.yaml"
README = (ROOT / "README.md").read_text()


def position(key: str) -> float:
    """Where the hash puts ``key`` in [0, 1): the first 8 bytes of its SHA-256, big-endian, over 2⁶⁴."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2**64


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def refused(error: pytest.ExceptionInfo, *parts: str) -> None:
    """The error is a refusal (one ``error:`` line from ``pararnn-ts``) and names every one of ``parts``."""
    assert refusal(error.value), error.value
    for part in parts:
        assert part in str(error.value), (part, str(error.value))


def write_corpus(folder: Path, count: int = 40) -> str:
    """``count`` small text files ``doc000.txt``...; returns their glob."""
    folder.mkdir(parents=True)
    for i in range(count):
        (folder / f"doc{i:03d}.txt").write_text(f"document {i}: " + "abcdefgh" * (i + 1) + "\n")
    return str(folder / "*.txt")


# --- without a test split nothing changes ---------------------------------------------------------------------

#: the keys doc000.txt ... doc099.txt that val_fraction=0.2 held out before test splits existed
VAL_KEYS_AT_02 = [0, 11, 13, 14, 25, 26, 32, 33, 35, 41, 43, 51, 58, 60, 61, 66, 67, 71, 76, 88, 93, 94, 95, 97, 99]
#: sha256 of the shard files that write_corpus(40) gave with val_fraction=0.2, seq_len=8, before test splits existed
SHARDS_AT_02 = {
    "train.bin": "7953120d282ec9795ba8b8ad7c269b870f33472d79a63796155d819d36335e9f",
    "train.json": "2ee9f22932d221371288daab33db4f0d2dcaa4b78f1931fd17c93168c3483303",
    "val.bin": "5e42a2fc767b9adc5bc5430052b085c5b4443a36b56d0de3ee1c19d70b76dfee",
    "val.json": "442e7057f25e19e683b7b5981ce80a174b58b2f2ca32c9cb90411ab299126c4c",
}


#: a Hub stream's config holds nothing of this machine: its default cache folders, before test splits existed
HUB = {"source": "hf", "paths": ["cerebras/SlimPajama-627B"], "max_train_bytes": 10**6, "max_val_bytes": 10**5}
HUB_FOLDERS = {0.05: "d46ce1abaa08ad84", 0.0: "561b9cfb9125ef4b"}  # by val_fraction


def test_without_a_test_fraction_splits_and_cache_folders_are_those_of_earlier_versions(tmp_path, monkeypatch):
    """(Written so that it passes on the code before test splits too: it checks nothing new.)"""
    keys = [f"doc{i:03d}.txt" for i in range(100)]
    assert [i for i, key in enumerate(keys) if split_of(key, 0.2) == "val"] == VAL_KEYS_AT_02
    for key in [f"doc/{i}.py" for i in range(2000)]:
        for val_fraction in (0.0, 0.05, 0.2):
            assert split_of(key, val_fraction) == ("val" if position(key) < val_fraction else "train")
    for val_fraction, folder in HUB_FOLDERS.items():
        assert TextDataModule(**HUB, val_fraction=val_fraction).cache_dir.name == folder
    # the default (stdlib) folder is the hash of the config that earlier versions hashed, rebuilt here by hand
    monkeypatch.chdir(tmp_path)
    stdlib = {"python": platform.python_version(), "stdlib": str(Path(sysconfig.get_paths()["stdlib"]))}
    config = {
        "format": 1,
        "source": "stdlib",
        "paths": [],
        "inputs": stdlib,
        "text_field": "text",
        "tokenizer": "byte+<|endoftext|>",
        "val_fraction": 0.05,
        "max_bytes": {"train": None, "val": 262144},
    }
    folder = hashlib.sha256(json.dumps(config, sort_keys=True).encode("utf-8")).hexdigest()[:16]
    assert TextDataModule(max_val_bytes=262144).cache_dir == Path("runs") / "cache" / folder

    # the shards themselves: the same files, byte for byte, and a recipe with no test_fraction
    pattern = write_corpus(tmp_path / "corpus")
    data = TextDataModule("files", [pattern], seq_len=8, val_fraction=0.2, cache_dir=str(tmp_path / "shards"))
    data.prepare_data()
    assert sorted(path.name for path in (tmp_path / "shards").iterdir()) == ["config.json", *SHARDS_AT_02]
    assert {name: sha256_of(tmp_path / "shards" / name) for name in SHARDS_AT_02} == SHARDS_AT_02
    recipe = json.loads((tmp_path / "shards" / "config.json").read_text())
    assert sorted(recipe) == [
        "format",
        "inputs",
        "max_bytes",
        "paths",
        "source",
        "text_field",
        "tokenizer",
        "val_fraction",
    ]
    data.setup()
    assert not is_overridden("test_dataloader", data, LightningDataModule)  # pararnn-ts fit tests nothing


def test_test_fraction_zero_is_no_test_split(tmp_path):
    for key in [f"doc/{i}.py" for i in range(2000)]:
        assert split_of(key, 0.05, 0.0) == split_of(key, 0.05)
    for val_fraction, folder in HUB_FOLDERS.items():
        assert TextDataModule(**HUB, val_fraction=val_fraction, test_fraction=0.0).cache_dir.name == folder
    pattern = write_corpus(tmp_path / "corpus")
    data = TextDataModule("files", [pattern], seq_len=8, val_fraction=0.2, test_fraction=0.0, cache_dir=str(tmp_path))
    assert data.splits == ("train", "val") and not data.has_test_split
    assert not is_overridden("test_dataloader", data, LightningDataModule)


# --- test_fraction > 0 ---------------------------------------------------------------------------------------


def test_test_documents_come_from_train_only_and_validation_does_not_move(tmp_path):
    keys = [f"doc/{i}.py" for i in range(4000)]
    for val_fraction, test_fraction in ((0.05, 0.1), (0.2, 0.05), (0.0, 0.3)):
        for key in keys:
            p = position(key)
            expected = "val" if p < val_fraction else "test" if p < val_fraction + test_fraction else "train"
            assert split_of(key, val_fraction, test_fraction) == expected
            if expected == "test":
                assert split_of(key, val_fraction) == "train"
            else:
                assert split_of(key, val_fraction) == expected
        share = sum(split_of(key, val_fraction, test_fraction) == "test" for key in keys) / len(keys)
        assert abs(share - test_fraction) < 0.03
    for bad, message in (((0.05, -0.1), "test_fraction must be in [0, 1)"), ((0.5, 0.5), "val_fraction + test")):
        with pytest.raises(ValueError, match=re.escape(message)):
            split_of("a", *bad)
        with pytest.raises(ValueError, match=re.escape(message)) as error:
            TextDataModule(val_fraction=bad[0], test_fraction=bad[1])
        refused(error)

    # shards: validation byte for byte as without a test split; test documents are the train documents it took
    pattern = write_corpus(tmp_path / "corpus")
    data = TextDataModule(
        "files", [pattern], seq_len=8, val_fraction=0.2, test_fraction=0.25, cache_dir=str(tmp_path / "shards")
    )
    data.prepare_data()
    data.setup()
    folder = tmp_path / "shards"
    assert sha256_of(folder / "val.bin") == SHARDS_AT_02["val.bin"]
    assert sha256_of(folder / "val.json") == SHARDS_AT_02["val.json"]
    info = {split: json.loads((folder / f"{split}.json").read_text()) for split in ("train", "val", "test")}
    texts = {p.name: p.read_text() for p in sorted((tmp_path / "corpus").glob("*.txt"))}
    in_test = [name for name in texts if 0.2 <= position(name) < 0.45]
    assert 0 < info["test"]["num_documents"] == len(in_test)
    assert info["train"]["num_documents"] + info["test"]["num_documents"] == 40 - 9  # the 31 trained on before
    expected = [byte for name in in_test for byte in [*texts[name].encode("utf-8"), 256]]
    assert data.tokens["test"].tolist() == expected
    assert json.loads((folder / "config.json").read_text())["test_fraction"] == 0.25
    assert data.has_test_split and is_overridden("test_dataloader", data, LightningDataModule)
    batches = list(data.test_dataloader())
    windows = [window for batch in batches for window in batch["inputs"].tolist()]
    assert windows == [expected[start : start + 8] for start in range(0, (len(expected) - 1) // 8 * 8, 8)]
    assert data.bytes_per_token("test") == info["test"]["num_bytes"] / info["test"]["num_tokens"]
    # another test_fraction is another recipe, so another default cache folder; max_test_bytes needs a test split
    other = TextDataModule("files", [pattern], val_fraction=0.2, test_fraction=0.1)
    assert other.cache_dir != TextDataModule("files", [pattern], val_fraction=0.2).cache_dir
    with pytest.raises(ValueError) as error:
        TextDataModule("files", [pattern], max_test_bytes=100)
    refused(error, "max_test_bytes", "test_fraction=0")
    # shards are written for the splits asked for: a test document without a test shard is an error, not lost
    (tmp_path / "two").mkdir()
    with pytest.raises(ValueError, match="a document of the 'test' split, which is not in \\('train', 'val'\\)"):
        write_shards([("train", "abc"), ("test", "def")], ByteTokenizer(), tmp_path / "two")


def metrics(run: Path) -> dict[str, float]:
    """The last value of each column of the run's ``metrics.csv``."""
    with open(run / "metrics.csv") as f:
        return {key: float(value) for row in csv.DictReader(f) for key, value in row.items() if value}


def loss_by_hand(ckpt: Path, test_file: Path, seq_len: int) -> float:
    """Mean next-token cross-entropy of the checkpoint's model over the contiguous windows of ``test_file``."""
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=False)
    hp = checkpoint["hyper_parameters"]
    model = LanguageModel(
        257, hp["dim"], hp["num_layers"], "paragru", hp["num_heads"], hp["mlp_ratio"], **hp["mixer_kwargs"]
    )
    model.load_state_dict({k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items()})
    info = json.loads(test_file.with_suffix(".json").read_text())
    tokens = torch.frombuffer(bytearray(test_file.read_bytes()), dtype=torch.uint16).long()
    assert len(tokens) == info["num_tokens"]
    count = (len(tokens) - 1) // seq_len
    inputs = tokens[: count * seq_len].view(count, seq_len)
    targets = tokens[1 : count * seq_len + 1].view(count, seq_len)
    with torch.no_grad():
        return torch.nn.functional.cross_entropy(model(inputs).flatten(0, 1), targets.flatten()).item()


@pytest.mark.usefixtures("bare_argv", "in_tmp_path")
def test_pararnn_ts_test_scores_the_held_out_split_and_refuses_checkpoints_trained_on_it(tmp_path, capsys):
    config = ["-c", str(TINY_GRU), f"--trainer.logger.init_args.save_dir={tmp_path}"]
    budget = ["--trainer.max_steps=2", "--trainer.val_check_interval=2", "--trainer.limit_val_batches=1"]
    held_out = [*small_lm(tmp_path / "cache_test"), "--data.init_args.test_fraction=0.2"]
    cli_main(["fit", *config, *held_out, *budget])
    assert "test/loss" in capsys.readouterr().out  # fit tests the trained weights when there is a test split
    runs = tmp_path / "tiny_paragru"
    ckpt = runs / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=False)["TextDataModule"] == {
        "splits": {"val_fraction": 0.2, "test_fraction": 0.2}
    }

    cli_main(["test", *config, *held_out, "--ckpt_path", str(ckpt)])
    scores = metrics(runs / "version_1")
    by_hand = loss_by_hand(ckpt, tmp_path / "cache_test" / "test.bin", 32)  # scanner.py, at 0.258
    assert math.isclose(scores["test/loss"], by_hand, rel_tol=1e-5)
    assert math.isclose(scores["test/ppl"], math.exp(by_hand), rel_tol=1e-5)
    info = json.loads((tmp_path / "cache_test" / "test.json").read_text())
    bpb = by_hand / math.log(2) / (info["num_bytes"] / info["num_tokens"])
    assert math.isclose(scores["test/bpb"], bpb, rel_tol=1e-5)

    # a larger test_fraction would test on documents the checkpoint trained on
    with pytest.raises(ValueError) as error:
        wider = [*small_lm(tmp_path / "cache_wider"), "--data.init_args.test_fraction=0.4", "--ckpt_path", str(ckpt)]
        cli_main(["test", *config, *wider])
    refused(error, str(ckpt), "val_fraction=0.2 and test_fraction=0.2", "test_fraction=0.4", "pararnn-ts validate")

    # a model trained with no test split trained on every test document; a checkpoint written before splits were
    # recorded might have
    capsys.readouterr()
    cli_main(["fit", *config, *small_lm(tmp_path / "cache_plain"), *budget])
    assert "test/loss" not in capsys.readouterr().out
    plain = runs / "version_2" / "checkpoints" / "last.ckpt"
    with pytest.raises(ValueError) as error:
        cli_main(["test", *config, *held_out, "--ckpt_path", str(plain)])
    refused(error, str(plain), "test_fraction=0.0", "held-out")
    checkpoint = torch.load(ckpt, weights_only=False)
    del checkpoint["TextDataModule"]
    torch.save(checkpoint, tmp_path / "unrecorded.ckpt")
    with pytest.raises(ValueError) as error:
        cli_main(["test", *config, *held_out, "--ckpt_path", str(tmp_path / "unrecorded.ckpt")])
    refused(error, "records no test split")
    # a resumed fit whose test split the checkpoint trained on is refused too
    with pytest.raises(ValueError) as error:
        cli_main(["fit", *config, *held_out, *budget, "--trainer.max_steps=4", "--ckpt_path", str(plain)])
    refused(error, str(plain), "test_fraction=0.0")
    # no test split at all: pararnn-ts refuses, and the data module says how to make one
    with pytest.raises(ValueError, match="TextDataModule has no test split: .*--data.init_args.test_fraction"):
        cli_main(["test", *config, *small_lm(tmp_path / "cache_plain"), "--ckpt_path", str(plain)])
    with pytest.raises(ValueError) as error:
        TextDataModule("files", [str(JSON_PY)]).check_test_split()
    refused(error, "--data.init_args.test_fraction")


# --- source: shards ----------------------------------------------------------------------------------------------


def load_prepare():
    spec = importlib.util.spec_from_file_location("text_files_prepare", ROOT / "datasets" / "text_files" / "prepare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prepare_script_makes_a_test_shard_on_request_and_old_folders_still_read(tmp_path, capsys):
    prepare = load_prepare()
    pattern = write_corpus(tmp_path / "corpus")
    common = ["--input", pattern, "--val-fraction", "0.2"]
    prepare.main([*common, "--out", str(tmp_path / "plain")])
    prepare.main([*common, "--out", str(tmp_path / "held"), "--test-fraction", "0.25"])
    out = capsys.readouterr().out
    assert out.count("\ntest: ") == 1 and out.index("\ntest: ") > out.index(f"wrote {tmp_path / 'plain'}")
    plain, held = tmp_path / "plain", tmp_path / "held"
    # no --test-fraction: the folder and its recipe are those of earlier versions (a rerun reuses them)
    assert sorted(path.name for path in plain.iterdir()) == ["config.json", *SHARDS_AT_02]
    assert {name: sha256_of(plain / name) for name in SHARDS_AT_02} == SHARDS_AT_02
    assert "test_fraction" not in json.loads((plain / "config.json").read_text())
    prepare.main([*common, "--out", str(plain)])
    assert "reused" in capsys.readouterr().out
    # --test-fraction: the same validation, and a test shard of the train documents it took
    assert sha256_of(held / "val.bin") == SHARDS_AT_02["val.bin"]
    assert json.loads((held / "config.json").read_text())["test_fraction"] == 0.25
    same = {"val_fraction": 0.2, "test_fraction": 0.25, "cache_dir": str(tmp_path / "dm")}
    TextDataModule("files", [pattern], **same).prepare_data()
    for split in ("train", "val", "test"):
        assert sha256_of(held / f"{split}.bin") == sha256_of(tmp_path / "dm" / f"{split}.bin")

    data = TextDataModule("shards", [str(held)], seq_len=8)
    data.setup()
    assert data.has_test_split and data.split_fractions() == {"val_fraction": 0.2, "test_fraction": 0.25}
    assert len(list(data.test_dataloader())) > 0
    old = TextDataModule("shards", [str(plain)], seq_len=8)
    old.setup()
    assert not old.has_test_split and not is_overridden("test_dataloader", old, LightningDataModule)
    assert old.split_fractions() == {"val_fraction": 0.2, "test_fraction": 0.0}
    with pytest.raises(ValueError) as error:
        old.check_test_split()
    refused(error, str(plain), "--test-fraction")
    with pytest.raises(ValueError) as error:
        TextDataModule("shards", [str(plain)], seq_len=8, test_fraction=0.05)
    refused(error, str(plain), "no test split", "--test-fraction 0.05")
    with pytest.raises(SystemExit):
        prepare.main([*common, "--out", str(tmp_path / "x"), "--max-test-bytes", "10"])
    assert "--max-test-bytes caps a test split" in capsys.readouterr().err


# --- training without validation ------------------------------------------------------------------------------


@pytest.mark.usefixtures("bare_argv", "in_tmp_path")
def test_training_without_a_validation_split(tmp_path):
    config = ["-c", str(TINY_GRU), f"--trainer.logger.init_args.save_dir={tmp_path}", "--trainer.max_steps=2"]
    config.append("--trainer.log_every_n_steps=1")
    no_val = [*small_lm(tmp_path / "cache"), "--data.init_args.val_fraction=0"]
    with pytest.raises(ValueError) as error:
        cli_main(["fit", *config, *no_val])
    refused(error, "the val split", "has 0 tokens", "val_fraction above 0", "--trainer.limit_val_batches 0")
    cli_main(["fit", *config, *no_val, "--trainer.limit_val_batches=0"])
    run = tmp_path / "tiny_paragru" / "version_0"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    logged = metrics(run)
    assert "train/loss" in logged and not any(key.startswith("val/") for key in logged)
    assert json.loads((tmp_path / "cache" / "val.json").read_text())["num_tokens"] == 0
    with pytest.raises(ValueError) as error:  # validating it: the fit's way round does not apply
        cli_main(["validate", *config, *no_val, "--ckpt_path", str(run / "checkpoints" / "last.ckpt")])
    refused(error, "the val split", "has 0 tokens", "val_fraction above 0")
    assert "limit_val_batches" not in str(error.value)
    # and with a test split instead: fit tests it, and pararnn-ts test reads no validation split
    held_out = [*small_lm(tmp_path / "held"), "--data.init_args.val_fraction=0", "--data.init_args.test_fraction=0.3"]
    cli_main(["fit", *config, *held_out, "--trainer.limit_val_batches=0"])
    assert "test/loss" in metrics(tmp_path / "tiny_paragru" / "version_1")
    ckpt = tmp_path / "tiny_paragru" / "version_1" / "checkpoints" / "last.ckpt"
    cli_main(["test", *config, *held_out, "--ckpt_path", str(ckpt)])
    assert "test/loss" in metrics(tmp_path / "tiny_paragru" / "version_2")


def test_a_stream_with_no_validation_needs_no_validation_cap_and_is_not_read_to_its_end(tmp_path, monkeypatch):
    read = itertools.count()

    def endless(source, paths, text_field):
        for i in itertools.count():
            if next(read) > 10_000:
                raise AssertionError("the stream was read on after the train split was full")
            yield f"{paths[0]}:{i}", "x" * 100

    monkeypatch.setattr("pararnn_ts.lm.datamodule.source_documents", endless)
    with pytest.raises(ValueError, match="set max_val_bytes"):
        TextDataModule("hf", ["some/stream"], max_train_bytes=1000)
    with pytest.raises(ValueError, match="set max_test_bytes"):
        TextDataModule("hf", ["some/stream"], max_train_bytes=1000, max_val_bytes=100, test_fraction=0.1)
    data = TextDataModule("hf", ["some/stream"], max_train_bytes=1000, val_fraction=0, cache_dir=str(tmp_path / "a"))
    data.prepare_data()
    assert json.loads((tmp_path / "a" / "train.json").read_text())["num_bytes"] == 1000
    assert math.isnan(data.bytes_per_token("val"))


def test_readme_documents_the_test_split_and_training_without_validation():
    section = README.split("## Language models")[1].split("\n## ")[0]
    flags = set(re.findall(r"--data\.init_args\.(\w+)", section))
    assert {"test_fraction", "val_fraction"} <= flags
    assert flags <= set(inspect.signature(TextDataModule).parameters)
    assert "pararnn-ts test -c experiments/lm/tiny_paragru.yaml" in section
    assert "--trainer.limit_val_batches 0" in section or "--trainer.limit_val_batches=0" in section
    assert "--test-fraction" in section
