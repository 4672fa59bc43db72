"""``CausalLM``: training, resume, optimizer groups, schedule, z-loss, bits per byte, the tokenizer a checkpoint
records, generation and two-process DDP."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from lm_training import Record
from lm_training import fit as train

from pararnn_ts.lm import BPETokenizer, ByteTokenizer, CausalLM, TextDataModule
from pararnn_ts.lm.corpus import stdlib_root
from pararnn_ts.lm.generate import generate, generate_tokens, load_checkpoint, main
from pararnn_ts.lm.module import decays, lm_losses, warmup_cosine
from pararnn_ts.nn import MIXERS, LanguageModel

HERE = Path(__file__).resolve().parent
TINY = {"dim": 32, "num_layers": 2, "num_heads": 2}


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory) -> Path:
    """Shards of the standard library's json package (byte tokens), written once for this module."""
    folder = tmp_path_factory.mktemp("lm_module") / "shards"
    make_data(folder).prepare_data()
    return folder


def make_data(cache_dir: Path, **kwargs) -> TextDataModule:
    paths = [str(stdlib_root() / "json" / "*.py")]
    settings = {"seq_len": 32, "batch_size": 8, "cache_dir": str(cache_dir), "val_fraction": 0.2, **kwargs}
    return TextDataModule("files", paths, **settings)


def make_model(**kwargs) -> CausalLM:
    settings = {"vocab_size": ByteTokenizer().vocab_size, **TINY, "mixer_kwargs": {"mode": "sequential"}}
    return CausalLM(**{**settings, **kwargs})


@pytest.fixture(scope="module")
def bpe_run(tmp_path_factory) -> Path:
    """A folder holding ``bpe/tokenizer.json`` (300 tokens, learnt from the json package), its shards in ``shards``,
    and ``ckpt/last.ckpt``: a 300-token model trained one step there, its data module given the tokenizer's path
    relative to that folder."""
    pytest.importorskip("tokenizers")
    folder = tmp_path_factory.mktemp("bpe_run")
    texts = [path.read_text(encoding="utf-8") for path in sorted((stdlib_root() / "json").glob("*.py"))]
    (folder / "bpe").mkdir()
    BPETokenizer.train(texts, vocab_size=300).save(folder / "bpe" / "tokenizer.json")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        data = make_data(folder / "shards", tokenizer="bpe/tokenizer.json")
        checkpoints = ModelCheckpoint(folder / "ckpt", save_last=True)
        train(make_model(vocab_size=300), data, 1, [checkpoints], limit_val_batches=0)
    return folder


def without_tokenizer_record(ckpt: Path, out: Path) -> str:
    """A copy of ``ckpt`` at ``out`` as written before checkpoints recorded their tokenizer."""
    torch.save({k: v for k, v in torch.load(ckpt, weights_only=True).items() if k != "tokenizer"}, out)
    return str(out)


def fit(
    model: CausalLM, shard_dir: Path, max_steps: int, callbacks=(), ckpt_path=None, tokenizer="byte", **trainer_kwargs
) -> Record:
    return train(model, make_data(shard_dir, tokenizer=tokenizer), max_steps, callbacks, ckpt_path, **trainer_kwargs)


def test_training_reduces_the_loss_with_warmup_then_cosine_decay(shard_dir):
    model = make_model(lr=1e-2, warmup_fraction=0.2)
    record = fit(model, shard_dir, max_steps=30, limit_val_batches=2, val_check_interval=15)
    assert sum(record.losses[-5:]) / 5 < sum(record.losses[:5]) / 5 - 1.0
    peak = record.lrs.index(max(record.lrs))
    assert peak == 5 and max(record.lrs) == pytest.approx(1e-2)
    assert all(a < b for a, b in zip(record.lrs[:peak], record.lrs[1 : peak + 1], strict=True))
    assert all(a >= b for a, b in zip(record.lrs[peak:], record.lrs[peak + 1 :], strict=False))
    assert record.lrs[-1] < 0.01 * record.lrs[peak]
    assert 0 < model.trainer.callback_metrics["val/bpb"] < 8


def test_bits_per_byte_divide_by_each_splits_own_bytes_per_token(bpe_run):
    tokenizer = str(bpe_run / "bpe" / "tokenizer.json")
    model = make_model(vocab_size=300)
    fit(model, bpe_run / "shards", 2, tokenizer=tokenizer, limit_val_batches=1, val_check_interval=2)
    data = make_data(bpe_run / "shards", tokenizer=tokenizer)
    ratios = {split: data.bytes_per_token(split) for split in ("train", "val")}
    assert abs(ratios["train"] / ratios["val"] - 1) > 5e-3  # BPE: the splits differ
    assert model.bytes_per_token == pytest.approx(ratios)
    metrics = model.trainer.callback_metrics
    for split, ratio in ratios.items():
        assert metrics[f"{split}/bpb"].item() == pytest.approx(metrics[f"{split}/loss"].item() / math.log(2) / ratio)


def test_resume_from_a_checkpoint_continues_with_identical_losses(shard_dir, tmp_path):
    steps = 4  # one epoch (limit_train_batches), so the resumed run starts the next epoch's windows
    every = ModelCheckpoint(tmp_path, every_n_train_steps=steps, save_top_k=-1)
    straight = fit(make_model(), shard_dir, 2 * steps, [every], limit_train_batches=steps, limit_val_batches=0)
    (ckpt,) = [p for p in tmp_path.glob("*.ckpt") if f"step={steps}" in p.name]
    resumed = fit(make_model(), shard_dir, 2 * steps, [], ckpt, limit_train_batches=steps, limit_val_batches=0)
    assert resumed.losses == pytest.approx(straight.losses[steps:], rel=1e-6)
    assert resumed.lrs == pytest.approx(straight.lrs[steps:], rel=1e-6)


@pytest.mark.parametrize("mixer", ["paralstm", "mamba2"])
def test_weight_decay_only_on_matrices_not_norms_biases_or_recurrent_diagonals(mixer):
    model = make_model(mixer=mixer, mixer_kwargs=None)
    model.configure_model()
    decayed, kept = model.parameter_groups()
    names = {id(p): n for n, p in model.model.named_parameters()}
    decayed_names = {names[id(p)] for p in decayed["params"]}
    kept_names = {names[id(p)] for p in kept["params"]}
    assert decayed["weight_decay"] == model.hparams.weight_decay and kept["weight_decay"] == 0
    assert len(decayed_names) + len(kept_names) == len(names)
    assert "embedding.weight" in decayed_names and "blocks.0.mixer.in_proj.weight" in decayed_names
    for name in ("norm.weight", "blocks.0.scale", "blocks.0.mixer_norm.weight", "blocks.0.mixer.conv.bias"):
        assert name in kept_names
    own = ("cell.A", "cell.C", "cell.b") if mixer == "paralstm" else ("A_log", "dt_bias", "D")
    for suffix in own:
        assert f"blocks.1.mixer.{suffix}" in kept_names
    assert not any(decays(n, p) for n, p in model.model.named_parameters() if n.endswith(".cell.A"))


def test_warmup_cosine_schedule():
    factors = [warmup_cosine(s, total_steps=100, warmup_steps=10, min_ratio=0.1) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0) and factors[55] == pytest.approx(0.55)
    assert warmup_cosine(100, 100, 10, 0.1) == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:], strict=False))


def test_the_objective_adds_the_z_loss():
    torch.manual_seed(0)
    logits, targets = 3 * torch.randn(2, 5, 11), torch.randint(0, 11, (2, 5))
    ce, z = lm_losses(logits, targets)
    assert ce == pytest.approx(F.cross_entropy(logits.flatten(0, 1), targets.flatten()).item(), rel=1e-6)
    assert z == pytest.approx(logits.logsumexp(-1).pow(2).mean().item(), rel=1e-6)

    model = make_model(z_loss=0.5)
    model.configure_model()
    tokens = torch.randint(0, 257, (2, 9))
    batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}
    with pytest.warns(UserWarning, match="self.log"):  # no trainer attached: logging is skipped
        objective = model.training_step(batch, 0)
    ce, z = lm_losses(model(batch["inputs"]), batch["targets"])
    assert objective.item() == pytest.approx((ce + 0.5 * z).item(), rel=1e-6)


@pytest.mark.parametrize("mixer", MIXERS)
def test_step_decoding_logits_equal_the_parallel_forward(mixer):
    torch.manual_seed(0)
    model = LanguageModel(257, **TINY, mixer=mixer).eval()
    tokens = torch.randint(0, 257, (2, 12))
    with torch.no_grad():
        full = model(tokens)
        logits, state = model(tokens[:, :5], return_state=True)
        stepped = [logits]
        for t in range(5, 12):
            step_logits, state = model.step(tokens[:, t], state)
            stepped.append(step_logits[:, None])
    torch.testing.assert_close(torch.cat(stepped, dim=1), full, atol=1e-4, rtol=1e-4)


def test_generate_makes_the_requested_tokens_deterministically():
    torch.manual_seed(0)
    model = LanguageModel(257, **TINY)
    prompt = torch.randint(0, 256, (2, 4))
    new = generate_tokens(model, prompt, 10, temperature=1.0, top_k=20, seed=3)
    assert new.shape == (2, 10) and new.dtype == torch.int64
    assert torch.equal(new, generate_tokens(model, prompt, 10, temperature=1.0, top_k=20, seed=3))
    assert not torch.equal(new, generate_tokens(model, prompt, 10, temperature=1.0, top_k=20, seed=4))

    greedy = generate_tokens(model, prompt, 6, temperature=0)
    sequence = prompt
    with torch.no_grad():
        for _ in range(6):  # the reference: re-run the whole sequence for every token
            sequence = torch.cat([sequence, model(sequence)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(greedy, sequence[:, 4:])

    tokenizer = ByteTokenizer()
    text = generate(model, tokenizer, "def f(", 8, temperature=0, stop_at_eos=False)
    new = generate_tokens(model, torch.tensor([list(b"def f(")]), 8, temperature=0)
    assert text == tokenizer.decode(new[0].tolist())


def test_generation_ends_at_the_end_of_text_token():
    torch.manual_seed(0)
    model = LanguageModel(257, **TINY)
    prompt = torch.randint(0, 256, (1, 4)).repeat(2, 1)  # two rows sampling from the same two likeliest tokens
    free = generate_tokens(model, prompt, 12, temperature=1.0, top_k=2, seed=1)
    stop = next(token for token in free[0, :-1].tolist() if token in free[1, :-1].tolist())
    firsts = [row.tolist().index(stop) for row in free]
    stopped = generate_tokens(model, prompt, 12, temperature=1.0, top_k=2, seed=1, stop_token=stop)
    assert firsts[0] != firsts[1] and max(firsts) < 11
    assert torch.equal(stopped, free[:, : max(firsts) + 1])  # until every row has sampled it

    tokenizer = ByteTokenizer()
    new = generate_tokens(model, torch.tensor([list(b"def f(")]), 8, temperature=0)[0].tolist()
    tokenizer.eos_id = new[3]  # the text ends before the first of its end-of-text token
    first = new.index(new[3])
    assert generate(model, tokenizer, "def f(", 8, temperature=0) == tokenizer.decode(new[:first])
    assert generate(model, tokenizer, "def f(", 8, temperature=0, stop_at_eos=False) == tokenizer.decode(new)


def test_generate_from_a_checkpoint_on_the_command_line(shard_dir, tmp_path, capsys):
    fit(make_model(), shard_dir, 1, [ModelCheckpoint(tmp_path, save_last=True)], limit_val_batches=0)
    main(["--ckpt", str(tmp_path / "last.ckpt"), "--prompt", "import ", "--max-new-tokens", "5", "--temperature", "0"])
    assert capsys.readouterr().out.startswith("import ")


def test_checkpoints_are_used_only_with_the_tokenizer_they_were_trained_with(bpe_run, shard_dir, tmp_path):
    ckpt = bpe_run / "ckpt" / "last.ckpt"
    bpe = BPETokenizer.from_file(bpe_run / "bpe" / "tokenizer.json")
    record = torch.load(ckpt, weights_only=True)["tokenizer"]
    assert record == {"name": bpe.name, "json": bpe.tokenizer.to_str()}
    quiet = {"enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False}
    trainer = pl.Trainer(logger=False, default_root_dir=tmp_path, limit_val_batches=1, **quiet)
    byte_data = make_data(shard_dir, max_new_tokens=2)
    refusal = re.escape(
        f"checkpoint {ckpt} was trained with tokenizer {bpe.name!r}, not 'byte+<|endoftext|>': pass the one"
    )
    for run in (trainer.validate, trainer.predict):
        with pytest.raises(ValueError, match=refusal):
            run(make_model(vocab_size=300), datamodule=byte_data, ckpt_path=ckpt)
    with pytest.raises(ValueError, match=refusal):
        fit(make_model(vocab_size=300), shard_dir, 2, ckpt_path=ckpt)  # resuming
    assert not list(tmp_path.iterdir())  # refused before predict wrote anything

    bpe_data = make_data(bpe_run / "shards", tokenizer=str(bpe_run / "bpe" / "tokenizer.json"))
    assert trainer.validate(make_model(vocab_size=300), datamodule=bpe_data, ckpt_path=ckpt)[0]["val/loss"] > 0
    old = without_tokenizer_record(ckpt, tmp_path / "old.ckpt")  # not checked, as before
    assert trainer.validate(make_model(vocab_size=300), datamodule=byte_data, ckpt_path=old)[0]["val/loss"] > 0


def test_generate_decodes_with_the_tokenizer_the_checkpoint_holds_from_any_folder(
    bpe_run, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)  # where the data module's "bpe/tokenizer.json" does not exist
    ckpt, tokenizer_file = str(bpe_run / "ckpt" / "last.ckpt"), str(bpe_run / "bpe" / "tokenizer.json")
    main(["--ckpt", ckpt, "--prompt", "def ", "--max-new-tokens", "6", "--temperature", "0", "--no-stop-at-eos"])
    bpe, model = BPETokenizer.from_file(tokenizer_file), CausalLM.load_from_checkpoint(ckpt).model
    new = generate_tokens(model, torch.tensor([bpe.encode("def ")]), 6, temperature=0)[0].tolist()
    assert capsys.readouterr().out == "def " + bpe.decode(new) + "\n"
    assert load_checkpoint(ckpt, tokenizer_file)[1].name == bpe.name  # given explicitly: the same one
    fix = "pass that one as --tokenizer, or leave --tokenizer out (the checkpoint's own)"
    refusal = f"--ckpt {ckpt} was trained with tokenizer {bpe.name!r}, not 'byte+<|endoftext|>': {fix}"
    with pytest.raises(ValueError, match=re.escape(refusal)):
        main(["--ckpt", ckpt, "--tokenizer", "byte"])

    old = without_tokenizer_record(ckpt, tmp_path / "old.ckpt")  # the data module's relative path, as before
    with pytest.raises(FileNotFoundError, match="relative to the folder it was trained in; run from there or pass"):
        load_checkpoint(old)
    monkeypatch.chdir(bpe_run)
    assert load_checkpoint(old)[1].name == bpe.name


def test_two_process_ddp_agrees_with_one_process(tmp_path):
    """``strategy="ddp"`` relaunches its script, so the fits run in fresh processes (see lm_ddp_fit.py)."""
    runs = {}
    for devices in (1, 2):
        out = tmp_path / f"devices{devices}.pt"
        done = subprocess.run(
            [sys.executable, str(HERE / "lm_ddp_fit.py"), str(devices), str(out)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        runs[devices] = torch.load(out)
    assert runs[2]["losses"] == pytest.approx(runs[1]["losses"], rel=1e-5)
    assert all(math.isfinite(loss) for loss in runs[2]["losses"])
    for name, weight in runs[1]["state_dict"].items():
        torch.testing.assert_close(runs[2]["state_dict"][name], weight, atol=1e-5, rtol=1e-4)
