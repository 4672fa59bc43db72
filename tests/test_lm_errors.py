"""Mistakes refused with errors that name the argument and the fix: ``generate``'s flags and checkpoints, a tokenizer
larger than the model's vocabulary, unknown ``mixer_kwargs``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from lm_training import fit

from pararnn_ts.cli import lightning_cli
from pararnn_ts.lm import BPETokenizer, CausalLM, TextDataModule
from pararnn_ts.lm.corpus import stdlib_root
from pararnn_ts.lm.generate import generate
from pararnn_ts.lm.generate import main as generate_main
from pararnn_ts.lm.module import mixer_arguments
from pararnn_ts.lm.tokenizers import load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
LM_CONFIGS = sorted(ROOT.glob("models/lm_*.yaml")) + sorted(ROOT.glob("experiments/lm/paper/*.yaml"))
FORECASTER = "pararnn_ts.forecast.cli_module.ParaRNNForecaster"
TINY = {"dim": 16, "num_layers": 1, "mixer_kwargs": {"mode": "sequential"}}


def make_data(cache_dir: Path, tokenizer: str = "byte") -> TextDataModule:
    paths = [str(stdlib_root() / "json" / "*.py")]
    data = TextDataModule("files", paths, tokenizer=tokenizer, seq_len=16, batch_size=2, cache_dir=str(cache_dir))
    data.prepare_data()
    return data


@pytest.fixture(scope="module")
def bpe600(tmp_path_factory) -> str:
    """A BPE tokenizer JSON file of 600 tokens, more than the 257 of the byte-level configs."""
    pytest.importorskip("tokenizers")
    path = tmp_path_factory.mktemp("bpe") / "bpe600.json"
    texts = [path.read_text(encoding="utf-8") for path in sorted((stdlib_root() / "json").glob("*.py"))]
    tokenizer = BPETokenizer.train(texts, vocab_size=600)
    assert tokenizer.vocab_size == 600
    tokenizer.save(path)
    return str(path)


@pytest.fixture(scope="module")
def byte_ckpt(tmp_path_factory) -> Path:
    """A CausalLM of 300 embedding rows trained one step on byte tokens (fewer than 300: fine)."""
    folder = tmp_path_factory.mktemp("byte_ckpt")
    data = make_data(folder / "shards")
    fit(CausalLM(300, **TINY), data, 1, [ModelCheckpoint(folder / "ckpt", save_last=True)], limit_val_batches=0)
    return folder / "ckpt" / "last.ckpt"


def test_generate_refuses_the_checkpoint_of_another_model(tmp_path):
    forecaster = tmp_path / "forecaster.ckpt"
    torch.save({"hyper_parameters": {"_class_path": FORECASTER, "hidden_size": 8}, "state_dict": {}}, forecaster)
    with pytest.raises(ValueError, match=f"{forecaster} is a {FORECASTER} checkpoint, not a CausalLM one"):
        generate_main(["--ckpt", str(forecaster)])
    plain = tmp_path / "plain.ckpt"
    torch.save({"hyper_parameters": {"hidden_size": 8}, "state_dict": {}}, plain)
    with pytest.raises(ValueError, match="holds no CausalLM hyperparameters"):
        generate_main(["--ckpt", str(plain)])


def test_generate_names_a_cell_that_cannot_be_imported_here(byte_ckpt, tmp_path, capsys):
    """A checkpoint of the user's cell, generated from where its module is not importable: one error line, exit 2."""
    from pararnn_ts.cli import console

    checkpoint = torch.load(byte_ckpt, weights_only=False)
    checkpoint["hyper_parameters"]["cell"] = {"class_path": "my_cells.TanhRNN", "init_args": {"mode": "parallel"}}
    moved = tmp_path / "mycell.ckpt"
    torch.save(checkpoint, moved)
    with pytest.raises(SystemExit) as exit_:
        console(["generate", "--ckpt", str(moved), "--prompt", "a"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith(f"error: --ckpt {moved} was trained with the cell 'my_cells.Tan")
    assert "PYTHONPATH" in err and "Traceback" not in err


def test_generate_refuses_a_file_that_is_not_a_checkpoint(tmp_path):
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError, match=f"--ckpt {text} is not a PyTorch checkpoint"):
        generate_main(["--ckpt", str(text)])


def test_generate_names_a_missing_checkpoint(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        generate_main(["--ckpt", str(tmp_path / "missing.ckpt")])
    assert exit_.value.code == 2
    assert f"argument --ckpt: no file at {tmp_path / 'missing.ckpt'}" in capsys.readouterr().err


def test_generate_help_names_the_verb_and_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        generate_main(["--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: pararnn-ts generate ") and "(default: 0.8)" in out


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--temperature", "-0.5", "must be >= 0"),
        ("--temperature", "nan", "must be >= 0"),
        ("--top-k", "0", "must be >= 1"),
        ("--max-new-tokens", "-1", "must be >= 0"),
        ("--top-k", "two", "invalid int value"),
        ("--temperature", "inf", "must be >= 0 and finite, got inf"),
        ("--top-p", "0", "must be in (0, 1], got 0"),
        ("--top-p", "1.01", "must be in (0, 1], got 1.01"),
        ("--top-p", "nan", "must be in (0, 1], got nan"),
        ("--seed", "18446744073709551616", "must be in [0, 18446744073709551615], got 18446744073709551616"),
        ("--seed", "-1", "must be in [0, 18446744073709551615], got -1"),
    ],
)
def test_generate_refuses_bad_sampling_flags_before_loading(flag, value, message, tmp_path, capsys):
    not_a_checkpoint = tmp_path / "empty.ckpt"
    not_a_checkpoint.touch()  # loading it would fail otherwise
    with pytest.raises(SystemExit) as exit_:
        generate_main(["--ckpt", str(not_a_checkpoint), flag, value])
    assert exit_.value.code == 2 and f"argument {flag}: {message}" in capsys.readouterr().err


def test_a_prompt_that_is_not_utf8_text_is_refused_naming_the_byte(byte_ckpt):
    """A Latin-1 terminal hands Python the byte 0xe9 of "café" as a lone surrogate: the byte tokenizer failed on it
    with UnicodeEncodeError, the BPE one with "TextInputSequence must be str"."""
    prompt = b"caf\xe9".decode("utf-8", "surrogateescape")
    with pytest.raises(ValueError, match=r"generate: prompt is not UTF-8 text \(byte 0xe9 at position 3\); set"):
        generate_main(["--ckpt", str(byte_ckpt), "--prompt", prompt, "--max-new-tokens", "1"])
    with pytest.raises(ValueError, match=r"predict_prompts\[1\] is not UTF-8 text \(byte 0xe9"):
        TextDataModule("stdlib", predict_prompts=["ok", prompt])
    model = CausalLM(300, **TINY)
    with pytest.raises(TypeError, match="prompt must be a str, got list; for several prompts call generate once"):
        generate(model, load_tokenizer("byte"), ["a", "b"], 1)


def test_generate_refuses_a_tokenizer_larger_than_the_checkpoints_vocabulary(byte_ckpt, bpe600, capsys):
    with pytest.raises(ValueError, match=r"has 600 tokens, more than the model's vocab_size=300: .* --tokenizer"):
        generate_main(["--ckpt", str(byte_ckpt), "--tokenizer", bpe600])
    generate_main(["--ckpt", str(byte_ckpt), "--prompt", "def ", "--max-new-tokens", "3"])  # its own: byte, 257
    assert capsys.readouterr().out.startswith("def ")


def test_fit_refuses_a_tokenizer_larger_than_vocab_size_before_any_step(bpe600, tmp_path):
    data = make_data(tmp_path / "shards", tokenizer=bpe600)
    model = CausalLM(257, **TINY)
    with pytest.raises(
        ValueError, match=r"600 tokens, more than the model's vocab_size=257: pass --model\.init_args\.vocab_size=600"
    ):
        fit(model, data, 1)
    assert model.model is None  # refused in setup, before the backbone was built


def test_unknown_mixer_kwargs_are_refused_when_the_model_is_configured(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"\['modee'\] are not arguments of mixer='paragru' \(did you mean 'mode'"):
        CausalLM(257, mixer_kwargs={"modee": "parallel"})
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["pararnn-ts"])  # the CLI must not read pytest's arguments
    config = ["-c", str(ROOT / "experiments" / "lm" / "tiny_mamba2.yaml")]
    with pytest.raises(ValueError, match=r"\['state_sise'\] are not arguments of mixer='mamba2'.*'state_size'"):
        lightning_cli([*config, "--model.init_args.mixer_kwargs.state_sise=16"], run=False)


def test_mixer_arguments_are_the_mixers_and_their_cells_keywords():
    gru = set(mixer_arguments("paragru"))
    assert {"hidden", "conv_kernel", "max_norm", "recurrent_init", "mode", "tol", "fused_backend"} <= gru
    assert not gru & {"dim", "cell", "num_heads", "input_size", "hidden_size"}  # the builders set those
    assert mixer_arguments("transformer") == ["rope_base"]
    assert mixer_arguments("mamba2") == ["chunk_size", "conv_kernel", "expand", "state_size"]


@pytest.mark.parametrize("config", LM_CONFIGS, ids=lambda c: c.stem)
def test_shipped_lm_configs_pass_the_mixer_kwargs_check(config):
    section = yaml.safe_load(config.read_text())
    init_args = section["init_args"] if "init_args" in section else section["model"]["init_args"]
    CausalLM(**init_args)  # lazy: the backbone is only built in configure_model


def test_a_causal_lm_used_outside_a_trainer_builds_its_network_on_first_use():
    """A Trainer calls configure_model; outside one ``model(x)`` failed on None and ``generate`` on ``.embedding``."""
    assert CausalLM(300, **TINY)(torch.zeros(2, 5, dtype=torch.long)).shape == (2, 5, 300)
    text = generate(CausalLM(300, **TINY), load_tokenizer("byte"), "def ", 3, temperature=0)
    assert isinstance(text, str)


def test_a_tokenizer_that_is_neither_byte_nor_a_file_names_both_kinds():
    with pytest.raises(FileNotFoundError, match=r"no BPE tokenizer file at bytes: the tokenizer is 'byte' or the path"):
        load_tokenizer("bytes")
