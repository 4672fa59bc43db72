"""The Triton kernels compile for a GPU (sm_90) without one: ``experiments/bench/triton_compile_check.py`` on a
subset of the launches (every kernel at least once), in a process without ``TRITON_INTERPRET``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import triton  # noqa: F401  (a plain import: CI installs triton, so a missing one must fail, not skip)

from pararnn_ts.ops import _triton_kernels

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "bench" / "triton_compile_check.py"
#: every kernel at least once: each op's Newton and sequential kernels (fast_math on and off) on float32 inputs
#: with the clip, the bf16 input path without it, both scans in reverse on bf16, the clip's chain rule
SUBSET = ["*/fp32/clip", "gru_forward/*/bf16/noclip", "*_scan/bf16/reverse", "clip_rows_backward"]


def run_check(*args: str, interpret: bool = False) -> subprocess.CompletedProcess:
    """The check with ``args`` in a fresh process, without ``TRITON_INTERPRET`` unless ``interpret``."""
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    command = [sys.executable, str(SCRIPT), *args]
    return subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_every_kernel_compiles_for_sm90_with_fma_and_the_approximate_tanh_only_under_fast_math(tmp_path):
    out = tmp_path / "compile.json"
    done = run_check("--arch", "90", "--out", str(out), "--only", *SUBSET)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    kernels = {name for name in dir(_triton_kernels) if name.endswith("_kernel")}
    assert {r["kernel"] for r in rows} == kernels  # a new kernel needs a launch in the check
    for r in rows:
        assert r["registers"] > 0, r["launch"]
        assert r["tanh_approx"] == ("/fast/" in r["launch"]), r["launch"]  # exact kernels stay exact
        assert r["enable_fp_fusion"] is True and r["fma"] > 0, r["launch"]  # contracted as tuned (Triton 3.10: off)


def test_a_glob_matching_no_launch_is_an_error(tmp_path):
    done = run_check("--out", str(tmp_path / "x.json"), "--only", "no_such_kernel*")
    assert done.returncode != 0 and "--only ['no_such_kernel*'] matches no launch" in done.stderr


def test_the_check_refuses_to_run_under_the_interpreter(tmp_path):
    done = run_check("--out", str(tmp_path / "x.json"), interpret=True)
    assert done.returncode != 0 and "unset it" in done.stderr
