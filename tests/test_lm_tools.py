"""LM tools: the tiny-results script (quick mode), the throughput benchmark's pieces, and text generation through
``pararnn-ts predict`` (printed, and saved to the run's ``predictions.jsonl``)."""

from __future__ import annotations

import csv
import json
import math
import statistics
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_in_two_processes, small_lm

from pararnn_ts.cli import main as cli_main
from pararnn_ts.lm import ByteTokenizer, TextDataModule
from pararnn_ts.nn import LanguageModel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments" / "lm"))
sys.path.insert(0, str(ROOT / "experiments" / "bench"))
import lm_throughput  # noqa: E402
import peak_memory  # noqa: E402
import tiny_results  # noqa: E402

TINY_GRU = ROOT / "experiments" / "lm" / "tiny_paragru.yaml"


pytestmark = pytest.mark.usefixtures("bare_argv", "in_tmp_path")


def metrics_column(run: Path, key: str) -> list[float]:
    with open(run / "metrics.csv") as f:
        return [float(row[key]) for row in csv.DictReader(f) if row.get(key)]


def unigram_reference(cache_dir: Path, num_targets: int) -> float:
    """Bits per byte of the first ``num_targets`` validation targets under add-one-smoothed train frequencies."""
    info = {s: json.loads((cache_dir / f"{s}.json").read_text()) for s in ("train", "val")}
    tokens = {s: np.fromfile(cache_dir / f"{s}.bin", dtype=info[s]["dtype"]).tolist() for s in info}
    counts, total = Counter(tokens["train"]), len(tokens["train"]) + 257
    targets = tokens["val"][1 : 1 + num_targets]
    bits = -sum(math.log2((counts[t] + 1) / total) for t in targets)
    return bits / (len(targets) * info["val"]["num_bytes"] / info["val"]["num_tokens"])


def test_tiny_results_quick_mode_trains_then_tabulates_and_collects_again(tmp_path, capsys):
    # one of the four architectures: each is a `pararnn-ts fit` subprocess, seconds of imports alone
    options = ["--quick", "--architectures", "paragru", "--root", str(tmp_path / "runs")]
    (row,) = tiny_results.main([*options, "--", *small_lm(tmp_path / "cache")])
    report = json.loads((tmp_path / "runs" / "tiny_results.json").read_text())
    assert report["rows"] == [row] and row["architecture"] == "paragru"
    run = Path(row["run"])
    assert run == tmp_path / "runs" / "paragru" / "version_0" and (run / "run.json").is_file()
    model = LanguageModel(257, 32, 1, "paragru", 2, 2.667)
    assert row["params"] == sum(p.numel() for p in model.parameters())
    assert row["train_steps"] == row["max_steps"] == 3 and row["tokens_per_step"] == 4 * 32
    assert row["tokens_per_s"] == statistics.median(metrics_column(run, "train/tokens_per_s")) > 0
    assert row["val_bpb"] == metrics_column(run, "val/bpb")[-1]
    assert row["val_tokens"] == 2 * 4 * 32  # the quick mode validates 2 batches of 4 windows
    assert row["unigram_val_bpb"] == pytest.approx(unigram_reference(tmp_path / "cache", 2 * 4 * 32), rel=1e-9)
    assert row["wall_s"] > 0
    markdown = (tmp_path / "runs" / "tiny_results.md").read_text()
    assert "| paragru | 0.03M | 3 | 128 |" in markdown and markdown in capsys.readouterr().out

    with pytest.raises(SystemExit):  # the results of the first call are not replaced without asking
        tiny_results.main(["--collect-only", *options])
    assert "pass --overwrite to replace them" in capsys.readouterr().err
    assert tiny_results.main(["--collect-only", "--overwrite", *options]) == [row]


def test_unknown_architecture_is_refused(capsys):
    with pytest.raises(SystemExit):
        tiny_results.main(["--architectures", "rwkv"])
    assert "rwkv" in capsys.readouterr().err


def test_throughput_widths_give_the_closest_parameter_counts():
    dims = lm_throughput.equal_size_dims(list(lm_throughput.ARCHITECTURES), 32, 2, 2, tolerance=0.05)
    target = sum(p.numel() for p in LanguageModel(257, 32, 2, "paragru", 2, 2.667, mode="sequential").parameters())
    assert dims["paragru"] == (32, target)
    for arch, (dim, params) in dims.items():
        spec = lm_throughput.ARCHITECTURES[arch]
        built = LanguageModel(257, dim, 2, arch, spec["num_heads"], 2.667, **spec["mixer_kwargs"])
        assert params == sum(p.numel() for p in built.parameters()) and abs(params / target - 1) <= 0.05
    # brute force over every valid width: none is closer for Mamba2
    counts, mamba2 = {}, lm_throughput.ARCHITECTURES["mamba2"]["mixer_kwargs"]
    for d in range(2, 66, 2):
        counts[d] = sum(p.numel() for p in LanguageModel(257, d, 2, "mamba2", 4, 2.667, **mamba2).parameters())
    assert min(abs(c - target) for c in counts.values()) == abs(dims["mamba2"][1] - target)
    with pytest.raises(ValueError, match="tolerance"):
        lm_throughput.equal_size_dims(["mamba2"], 32, 2, 64, tolerance=0.01)


def test_throughput_measures_a_training_step():
    timing = lm_throughput.parse_args(["--warmup-s", "0", "--min-time-s", "0", "--repeats", "2"])
    row = lm_throughput.measure("paragru", 16, 1, 32, 2, torch.device("cpu"), timing)
    assert row["calls"] == 2 and row["tokens_per_s"] == pytest.approx(2 * 32 / row["time_s"])
    assert row["peak_mib"] >= 0 and row["solver"].startswith(("fused", "sequential", "parallel"))
    model = lm_throughput.build("transformer", 16, 1)
    lm_throughput.training_step(model, 2, 8, torch.device("cpu"))()
    assert all(p.grad is None for p in model.parameters())  # the step clears what its backward wrote
    table = lm_throughput.table([row], {"paragru": 1234})
    assert "| paragru | 0.00M | 32 | 2 |" in table


def test_a_failed_case_becomes_a_row_that_says_why():
    row = {"model": "paragru", "seq_len": 32}
    oom = peak_memory.failed_row(row, torch.cuda.OutOfMemoryError("CUDA out of memory.\nTried to allocate 2 GiB"))
    assert oom == {**row, "error": "out of memory: CUDA out of memory."}
    assert peak_memory.failed_row(row, MemoryError())["error"] == "out of memory: MemoryError"
    assert peak_memory.failed_row(row, RuntimeError("cuDNN error: bad size"))["error"] == "cuDNN error: bad size"
    assert "error" not in row


def test_predict_generates_text_from_a_checkpoint(tmp_path, capsys):
    config = ["-c", str(TINY_GRU), *small_lm(tmp_path / "cache"), f"--trainer.logger.init_args.save_dir={tmp_path}"]
    budget = ["--trainer.max_steps=2", "--trainer.val_check_interval=2", "--trainer.limit_val_batches=1"]
    cli_main(["fit", *config, *budget])
    ckpt = tmp_path / "tiny_paragru" / "version_0" / "checkpoints" / "last.ckpt"
    prompts = ["def ", "import json\n"]
    settings = [
        f"--data.init_args.predict_prompts={json.dumps(prompts)}",
        "--data.init_args.temperature=0",
        "--data.init_args.top_p=0.9",
    ]
    capsys.readouterr()
    cli_main(["predict", *config, "--ckpt_path", str(ckpt), *settings, "--data.init_args.max_new_tokens=8"])
    out = capsys.readouterr().out

    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=False)
    hp = checkpoint["hyper_parameters"]
    reference = LanguageModel(
        257, hp["dim"], hp["num_layers"], "paragru", hp["num_heads"], hp["mlp_ratio"], **hp["mixer_kwargs"]
    )
    reference.load_state_dict({k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items()})
    tokenizer, texts = ByteTokenizer(), []
    for i, prompt in enumerate(prompts):
        sequence = torch.tensor([tokenizer.encode(prompt)])
        with torch.no_grad():
            for _ in range(8):  # greedy, re-running the whole sequence for every token
                sequence = torch.cat([sequence, reference(sequence)[:, -1].argmax(-1, keepdim=True)], dim=1)
        texts.append(tokenizer.decode(sequence[0].tolist()))
        assert f"--- sample {i} ---\n{texts[-1]}\n" in out
    predictions = tmp_path / "tiny_paragru" / "version_1" / "predictions.jsonl"
    assert f"wrote 2 samples to {predictions}" in out
    records = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert [record["prompt"] + record["completion"] for record in records] == texts
    sampling = {"max_new_tokens": 8, "temperature": 0.0, "top_k": None, "top_p": 0.9, "seed": 0, "stop_at_eos": True}
    assert records[0] == {"prompt": "def ", **sampling, "completion": texts[0].removeprefix("def ")}
    # predicting reads no split: a config whose shards were never written does not tokenise its corpus
    elsewhere = ["--data.init_args.cache_dir", str(tmp_path / "unwritten"), *settings]
    elsewhere.append("--data.init_args.max_new_tokens=8")
    cli_main(["predict", *config, "--ckpt_path", str(ckpt), *elsewhere])
    out = capsys.readouterr().out
    assert all(f"--- sample {i} ---\n{text}\n" in out for i, text in enumerate(texts))
    assert not (tmp_path / "unwritten").exists()
    (tmp_path / "predictions.jsonl").write_text("mine")  # without a logger predict writes to the current folder
    with pytest.raises(FileExistsError, match="pararnn-ts predict would replace .*predictions.jsonl"):
        cli_main(["predict", *config, "--ckpt_path", str(ckpt), "--trainer.logger=false"])
    assert (tmp_path / "predictions.jsonl").read_text() == "mine"


def test_two_process_predict_writes_every_prompt_once_in_prompt_order(tmp_path):
    """Under DDP (two CPU processes, gloo) each process samples its share of the prompts (the first gets prompts 0
    and 2, the second prompt 1); the first process writes all of them, as a single process does. Fewer prompts
    than processes are refused."""
    config = ["-c", str(TINY_GRU), *small_lm(tmp_path / "cache"), f"--trainer.logger.init_args.save_dir={tmp_path}"]
    cli_main(
        ["fit", *config, "--trainer.max_steps=2", "--trainer.val_check_interval=2", "--trainer.limit_val_batches=1"]
    )
    prompts = ["def ", "import json\n", "class "]
    predict = [
        "predict",
        *config,
        f"--ckpt_path={tmp_path / 'tiny_paragru' / 'version_0' / 'checkpoints' / 'last.ckpt'}",
        f"--data.init_args.predict_prompts={json.dumps(prompts)}",
        "--data.init_args.temperature=0",
        "--data.init_args.max_new_tokens=4",
    ]
    cli_main(predict)
    run_in_two_processes(predict, tmp_path)
    one, two = ((tmp_path / "tiny_paragru" / f"version_{v}" / "predictions.jsonl").read_text() for v in (1, 2))
    assert two == one and [json.loads(line)["prompt"] for line in one.splitlines()] == prompts
    # fewer prompts than processes: refused, naming the fix (Lightning's sampler failed on the empty share)
    run_in_two_processes(
        [*predict, '--data.init_args.predict_prompts=["def "]'], tmp_path, refusal="at least one prompt a process"
    )


def test_bad_sampling_settings_are_refused():
    with pytest.raises(ValueError, match="temperature"):
        TextDataModule(temperature=-1.0)
    with pytest.raises(ValueError, match="top_k"):
        TextDataModule(top_k=0)
    with pytest.raises(ValueError, match="top_p"):
        TextDataModule(top_p=0.0)
