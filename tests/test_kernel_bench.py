"""The kernel benchmark's pieces (``experiments/bench/kernel_bench.py``): the bytes-moved floor, the burst
length, the CPU timer, the table's ratios, one tiny CPU run end to end, and the refusals of bad arguments (also of
``triton_sequential_bound.py`` and ``gpu_session.sh``) before any work."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pararnn_ts import ParaGRU, ParaLSTM
from pararnn_ts.core import Diagonal, linear_scan

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments" / "bench"))
import kernel_bench  # noqa: E402


@pytest.mark.parametrize(("cell", "cls"), [("gru", ParaGRU), ("lstm", ParaLSTM)])
def test_floor_counts_each_array_the_solve_reads_and_writes_once(cell, cls):
    B, T, D = 3, 7, 8
    rnn = cls(D, D, num_heads=4, mode="sequential")
    u = rnn.project(torch.randn(B, T, D))
    h = rnn.solve(u, torch.zeros(B, *rnn.state_shape))
    h = h[0] if isinstance(h, tuple) else h
    forward = 4 * (u.numel() + h.numel())  # read u, write h
    backward = 4 * (2 * u.numel() + 2 * h.numel())  # read u, h, dL/dh; write dL/du
    assert kernel_bench.floor_bytes(f"{cell}/fused-cpu", B, T, D, "fwd") == forward
    assert kernel_bench.floor_bytes(f"{cell}/sequential", B, T, D, "fwd+bwd") == forward + backward


def test_floor_of_a_linear_scan_peer():
    B, T, D = 2, 5, 3
    n = B * T * D
    assert kernel_bench.floor_bytes("peer/fla-hgrn-chunk", B, T, D, "fwd") == 4 * 3 * n  # read a, b; write x
    assert kernel_bench.floor_bytes("peer/fla-hgrn-chunk", B, T, D, "fwd+bwd") == 4 * (3 + 5) * n
    # the wide peer moves as many bytes as a ParaGRU forward+backward of the same D (12 arrays to a scan's 8)
    D = 4
    wide = kernel_bench.floor_bytes("peer/accelerated-scan-triton-wide", B, T, D, "fwd+bwd")
    assert wide == kernel_bench.floor_bytes("gru/fused-triton", B, T, D, "fwd+bwd") == 4 * 12 * B * T * D
    assert kernel_bench.peer_width("peer/accelerated-scan-triton-wide", D) == 6
    assert kernel_bench.peer_width("peer/accelerated-scan-triton", D) == D


def test_burst_length_lasts_about_the_burst_and_stays_in_bounds():
    burst = kernel_bench.BURST_S
    assert kernel_bench._burst_length(burst / 7) == 7
    assert kernel_bench._burst_length(10 * burst) == 1
    assert kernel_bench._burst_length(burst / 1e6) == 200


def test_cpu_timer_makes_every_call_and_divides_by_them(monkeypatch):
    clock = [0.0]  # a fake clock that each call advances by 2 s

    def call() -> None:
        clock[0] += 2.0

    monkeypatch.setattr(kernel_bench.time, "perf_counter", lambda: clock[0])
    assert kernel_bench._timed(call, torch.device("cpu"), calls=5) == 2.0
    assert clock[0] == 10.0


def test_table_and_speedups_are_ratios_of_the_rows():
    bw, floor = 1e9, 4_000_000  # 1 GB/s; a case at the floor takes 4 ms
    rows = [
        {"case": "gru/sequential", "T": 16, "passes": "fwd", "floor_bytes": floor, "time_s": 0.040},
        {"case": "gru/sequential", "T": 16, "passes": "fwd+bwd", "floor_bytes": floor, "time_s": 0.120},
        {"case": "gru/fused-cpu", "T": 16, "passes": "fwd", "floor_bytes": floor, "time_s": 0.004, "latency_s": 0.005},
        {"case": "gru/fused-cpu", "T": 16, "passes": "fwd+bwd", "floor_bytes": floor, "time_s": 0.008},
    ]
    lines = kernel_bench.table(rows, bw).splitlines()
    fused = next(line for line in lines if line.startswith("| gru/fused-cpu |")).split(" | ")
    assert fused[2:6] == ["4.00", "8.00", "5.00", "1.0"]  # fwd, fwd+bwd, 1 call (ms); fwd GB/s
    assert fused[7] == "2.00"  # fwd+bwd / floor
    sequential = next(line for line in lines if line.startswith("| gru/sequential |")).split(" | ")
    assert sequential[7] == "30.00"
    speed = kernel_bench.speedups(rows, 16)
    assert speed == [
        "gru/fused-cpu fwd at T=16 is faster than: 10.00× gru/sequential",
        "gru/fused-cpu fwd+bwd at T=16 is faster than: 15.00× gru/sequential",
    ]


def test_a_tiny_cpu_run_writes_every_case_and_the_machine(tmp_path, monkeypatch, capsys):
    out = tmp_path / "kernels.json"
    args = ["--cells", "gru", "--modes", "sequential", "--T", "17", "--batch", "1", "--hidden", "8"]
    monkeypatch.setattr(sys, "argv", ["kernel_bench.py", *args, "--warmup", "1", "--repeats", "1", "--out", str(out)])
    kernel_bench.main()
    report = json.loads(out.read_text())
    cases = {(r["case"], r["passes"]) for r in report["rows"]}
    assert cases == {(c, p) for c in ("gru/sequential", "gru/layer", "gru/nn.GRU") for p in ("fwd", "fwd+bwd")}
    assert all(r["time_s"] > 0 and r["floor_bytes"] > 0 for r in report["rows"])
    assert report["machine"]["copy_bandwidth_GBps"] > 0 and report["machine"]["hidden"] == 8
    printed = capsys.readouterr().out
    assert "| gru/sequential | 17 |" in printed and "| gru/nn.GRU | 17 |" in printed


def test_cases_are_selected_by_glob_and_a_glob_matching_none_is_an_error():
    names = ["gru/sequential", "gru/fused-triton", "gru/fused-triton-fast", "peer/accelerated-scan-triton-wide"]
    assert kernel_bench.select_cases(names, ["*"]) == names
    picked = kernel_bench.select_cases(names, ["peer/*", "gru/fused-triton"])
    assert picked == ["gru/fused-triton", "peer/accelerated-scan-triton-wide"]  # in the order of the cases
    with pytest.raises(SystemExit, match=r"--cases 'peer/fla\*' matches none .* gru/sequential"):
        kernel_bench.select_cases(names, ["peer/*", "peer/fla*"])


def test_a_run_with_cases_times_only_those(tmp_path, monkeypatch):
    out = tmp_path / "kernels.json"
    args = ["--cells", "gru", "--modes", "sequential", "--T", "5", "--batch", "1", "--hidden", "4", "--cases", "*/nn.*"]
    monkeypatch.setattr(sys, "argv", ["kernel_bench.py", *args, "--warmup", "1", "--repeats", "1", "--out", str(out)])
    kernel_bench.main()
    assert {r["case"] for r in json.loads(out.read_text())["rows"]} == {"gru/nn.GRU"}


def test_resume_times_only_the_cases_a_stopped_run_lacks(tmp_path, monkeypatch):
    out = tmp_path / "kernels.json"
    tiny = ["--cells", "gru", "--modes", "sequential", "--T", "5", "--batch", "1", "--hidden", "4", "--warmup", "1"]
    tiny += ["--repeats", "1", "--out", str(out), "--cases", "gru/sequential", "gru/nn.*"]
    timed = []

    def counted(args, name, T, passes):  # the bookkeeping, not the timing, is under test: a made-up row
        timed.append((name, T, passes))
        if name == "gru/nn.GRU" and passes == "fwd+bwd" and len(timed) > 2:
            raise KeyboardInterrupt  # stopped midway: the rows timed so far are in --out
        return {"case": name, "T": T, "passes": passes, "time_s": 1e-3 * len(timed), "floor_bytes": 1000}

    monkeypatch.setattr(kernel_bench, "run_case", counted)
    monkeypatch.setattr(sys, "argv", ["kernel_bench.py", *tiny])
    with pytest.raises(KeyboardInterrupt):
        kernel_bench.main()
    partial = json.loads(out.read_text())
    assert partial["machine"] is None and len(partial["rows"]) == 3
    monkeypatch.setattr(sys, "argv", ["kernel_bench.py", *tiny])
    with pytest.raises(SystemExit):  # without --resume a file that exists is refused
        kernel_bench.main()
    timed.clear()
    monkeypatch.setattr(sys, "argv", ["kernel_bench.py", *tiny, "--resume"])
    kernel_bench.main()
    assert timed == [("gru/nn.GRU", 5, "fwd+bwd")]
    report = json.loads(out.read_text())
    assert report["rows"][:3] == partial["rows"] and len(report["rows"]) == 4 and report["machine"]["hidden"] == 4


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--hidden", "8"], r"was made with \{.*'hidden': 4.*asks for \{.*'hidden': 8"),
        (["--overwrite"], "give one of them"),
    ],
)
def test_resume_refuses_a_file_of_other_settings_before_timing(tmp_path, monkeypatch, capsys, extra, message):
    out = tmp_path / "kernels.json"
    settings = {"device": "cpu", "batch": 1, "hidden": 4, "warmup": 1, "repeats": 1}
    out.write_text(json.dumps({"settings": settings, "machine": None, "rows": []}))
    tiny = ["--cells", "gru", "--T", "5", "--batch", "1", "--hidden", "4", "--warmup", "1", "--repeats", "1"]
    monkeypatch.setattr(kernel_bench, "run_case", fail)
    monkeypatch.setattr(sys, "argv", ["kernel_bench.py", *tiny, "--out", str(out), "--resume", *extra])
    with pytest.raises(SystemExit):
        kernel_bench.main()
    assert re.search(message, capsys.readouterr().err)


def test_resume_refuses_a_file_that_records_no_settings(tmp_path, monkeypatch, capsys):
    out = tmp_path / "kernels.json"
    out.write_text(json.dumps({"machine": {"hidden": 4}, "rows": []}))
    argv = ["kernel_bench.py", "--cells", "gru", "--T", "5", "--out", str(out), "--resume"]
    monkeypatch.setattr(kernel_bench, "run_case", fail)
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit):
        kernel_bench.main()
    assert "records none (a run from before --resume)" in capsys.readouterr().err


def test_the_accelerated_scan_peer_computes_the_linear_scan_and_its_gradients():
    """The peer's Triton scan (in the interpreter without a GPU) against ``x_t = a_t x_{t-1} + b_t`` in float64."""
    import accelerated_scan  # noqa: F401  (a plain import: `make test` installs the bench extra, so it must not skip)

    torch.manual_seed(0)
    B, T, D = 2, 16, 3
    a, b = torch.rand(B, T, D) * 0.5 + 0.45, torch.randn(B, T, D)
    forward, (gates, tokens) = kernel_bench.peer_scan("accelerated-scan-triton", a, b, train=True)
    x = forward()
    a64, b64 = (t.double().requires_grad_() for t in (a, b))
    ref = linear_scan(a64, b64, Diagonal())
    g = torch.randn(B, T, D, dtype=torch.float64)
    torch.testing.assert_close(x.transpose(1, 2).double(), ref, rtol=1e-5, atol=1e-5)
    x.backward(g.transpose(1, 2).float())
    ref.backward(g)
    torch.testing.assert_close(gates.grad.transpose(1, 2).double(), a64.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(tokens.grad.transpose(1, 2).double(), b64.grad, rtol=1e-5, atol=1e-5)


def fail(*args, **kwargs):
    raise AssertionError("the run did work before refusing its arguments")


def test_a_misspelt_mode_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    out = tmp_path / "x.json"
    argv = ["kernel_bench.py", "--T", "16", "--batch", "1", "--hidden", "8", "--modes", "fussed", "--out", str(out)]
    monkeypatch.setattr(kernel_bench, "run_case", fail)
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as refused:
        kernel_bench.main()
    err = capsys.readouterr().err
    assert refused.value.code == 2 and "--modes: invalid choice: 'fussed'" in err and "'fused'" in err
    assert not out.exists()


def test_device_cuda_without_a_gpu_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    out = tmp_path / "x.json"
    monkeypatch.setattr(kernel_bench.torch.cuda, "is_available", lambda: False)
    for name in ("run_case", "measure", "bandwidth", "case_names"):
        monkeypatch.setattr(kernel_bench, name, fail)
    monkeypatch.setattr(sys, "argv", ["kernel_bench.py", "--device", "cuda", "--T", "16", "--out", str(out)])
    with pytest.raises(SystemExit) as refused:
        kernel_bench.main()
    assert refused.value.code == 2
    assert "--device cuda needs a CUDA GPU; torch.cuda.is_available() is False" in capsys.readouterr().err
    assert not out.exists()


def test_a_failing_worker_shows_its_case_and_the_end_of_its_stderr():
    """A real worker subprocess, given a case whose cell refuses its mode, fails with the cell's own error."""
    args = argparse.Namespace(device="cpu", batch=1, hidden=4, warmup=1, repeats=1)
    with pytest.raises(SystemExit) as failed:
        kernel_bench.run_case(args, "gru/bogus", 5, "fwd")
    message = str(failed.value.code)
    assert message.startswith("case gru/bogus T=5 fwd: its worker exited with status 1")
    assert "ValueError: mode='bogus' is not one of" in message


def test_the_help_says_how_long_the_default_cpu_run_takes_and_how_to_run_quickly(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["kernel_bench.py", "--help"])
    with pytest.raises(SystemExit) as done:
        kernel_bench.main()
    shown = " ".join(capsys.readouterr().out.split())
    assert done.value.code == 0
    assert "takes about 10 minutes on 2 cores" in shown
    assert "--T 64 --batch 1 --hidden 16 --warmup 1 --repeats 1 # a quick check" in shown


def test_the_triton_sequential_bound_refuses_without_a_gpu_before_any_work(tmp_path, monkeypatch, capsys):
    import triton  # noqa: F401  (a plain import: CI installs triton, so a missing one must fail, not skip)
    import triton_sequential_bound

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(triton_sequential_bound.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(triton_sequential_bound, "copy_bandwidth", fail)
    monkeypatch.setattr(triton_sequential_bound, "sweep", fail)
    monkeypatch.setattr(sys, "argv", ["triton_sequential_bound.py"])
    with pytest.raises(SystemExit) as refused:
        triton_sequential_bound.main()
    assert refused.value.code == 2
    assert "needs a CUDA GPU; torch.cuda.is_available() is False" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


GPU_STEPS = "tests tests-triton tests-other bench-gru bench-lstm remaining lm tune all"


@pytest.mark.parametrize(("argv", "error"), [(["bench-gpu"], "unknown step 'bench-gpu'"), ([], "no step given")])
def test_gpu_session_refuses_an_unknown_or_missing_step_before_anything_else(tmp_path, argv, error):
    out = tmp_path / "out"
    script = ROOT / "experiments" / "bench" / "gpu_session.sh"
    env = {**os.environ, "OUT": str(out)}
    done = subprocess.run(["bash", str(script), *argv], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 2 and done.stdout == ""
    assert error in done.stderr and f"STEP one of: {GPU_STEPS}" in done.stderr
    assert not out.exists()  # nor out/gpu.txt: nvidia-smi did not run


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_gpu_session_help_prints_the_usage(tmp_path, flag):
    out = tmp_path / "out"
    script = ROOT / "experiments" / "bench" / "gpu_session.sh"
    env = {**os.environ, "OUT": str(out)}
    done = subprocess.run(["bash", str(script), flag], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("usage: ") and GPU_STEPS in done.stdout
    assert not out.exists()


@pytest.mark.parametrize("resume", [True, False])
def test_gpu_session_resumes_a_benchmark_step_from_the_files_it_is_given(tmp_path, resume):
    """``RESUME_FROM=DIR``: the step's partial results file is copied to ``$OUT`` and the benchmark gets
    ``--resume``; without the variable (or the file) it starts afresh. ``python3`` and ``nvidia-smi`` are stand-ins
    that record their arguments."""
    out, given, fake = tmp_path / "out", tmp_path / "given", tmp_path / "bin"
    for folder in (given, fake):
        folder.mkdir()
    (given / "kernels_cuda_gru.json").write_text('{"rows": []}')
    for tool in ("python3", "nvidia-smi"):
        (fake / tool).write_text(f'#!/bin/sh\necho "$@" >> "{tmp_path}/calls"\n')
        (fake / tool).chmod(0o755)
    env = {**os.environ, "OUT": str(out), "PATH": f"{fake}:{os.environ['PATH']}"}
    if resume:
        env["RESUME_FROM"] = str(given)
    script = ROOT / "experiments" / "bench" / "gpu_session.sh"
    subprocess.run(["bash", str(script), "bench-gru"], cwd=ROOT, env=env, capture_output=True, check=True)
    (bench,) = [line for line in (tmp_path / "calls").read_text().splitlines() if "kernel_bench.py" in line]
    assert bench.split().count("--resume") == resume and f"--out {out}/kernels_cuda_gru.json" in bench
    assert (out / "kernels_cuda_gru.json").exists() == resume


def test_a_cpu_peak_leaves_out_what_the_setup_freed_before_the_case_started():
    """A case's inputs are made, and their temporaries freed, before it starts: they are not its peak."""
    import peak_memory

    script = (
        "import torch, peak_memory\n"
        "cpu = torch.device('cpu')\n"
        "setup = torch.ones(2**26); del setup\n"  # 256 MiB made and freed before the case
        "base = peak_memory.start(cpu)\n"
        "case = torch.ones(2**24)\n"  # 64 MiB
        "print(peak_memory.peak_mib(cpu, base))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "experiments" / "bench")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    assert 60 < float(done.stdout) < 100 and peak_memory.reset_peak_rss()
