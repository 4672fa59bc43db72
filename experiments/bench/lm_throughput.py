"""LM throughput: tokens/s of a training step (forward + backward) and its peak memory, for ParaGRU,
ParaLSTM, Transformer and Mamba2 language models of equal parameter count, at sequence lengths
512 … 8192 and a fixed number of tokens per step (``batch = tokens_per_step // T``, at least 1).

The ParaGRU model is ``--dim`` × ``--layers``; every other architecture gets the same layers and the
width (a multiple of ``--dim-multiple``) whose parameter count is closest to it, which must come
within ``--tolerance`` (5%). A step is the LM objective (cross-entropy of random tokens) and its
backward, no optimizer. Times: one warm-up call and more until ``--warmup-s`` seconds, then
repetitions until ``--min-time-s`` seconds and at least ``--repeats`` calls; the median is reported.
Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` over the case (weights, gradients and
activations, bf16 autocast); on CPU the growth of the process's peak RSS (``ru_maxrss``) over its RSS
before the model was built, one subprocess per case: an upper bound that includes allocator slack.

    python experiments/bench/lm_throughput.py                        # CPU, ~2M-parameter models as the tiny configs
    python experiments/bench/lm_throughput.py --dim 96 --threads 1   # ~0.56M, 1 thread: ~5 min, steady on a busy CPU
    python experiments/bench/lm_throughput.py --device cuda --dim 1024 --layers 24 --tokens-per-step 65536
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import peak_memory
import torch
import torch.nn.functional as F
from kernel_bench import _timed  # same timing conventions as the kernel benchmark

from pararnn_ts.nn import LanguageModel

RESULTS = Path(__file__).parent / "results"
VOCAB, MLP_RATIO = 257, 2.667  # byte-level, SwiGLU hidden as in the tiny configs (rounded up to a multiple of 64)
#: per architecture: heads and mixer arguments (those of experiments/lm/tiny_*.yaml), and what widths must be
#: multiples of (heads of equal, for attention even, size; Mamba2: heads divide the inner width 2·dim)
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "paragru": {"num_heads": 2, "mixer_kwargs": {"mode": "auto"}, "width_step": 2},
    "paralstm": {"num_heads": 2, "mixer_kwargs": {"mode": "auto"}, "width_step": 2},
    "transformer": {"num_heads": 4, "mixer_kwargs": {}, "width_step": 8},
    "mamba2": {"num_heads": 4, "mixer_kwargs": {"state_size": 32, "chunk_size": 64}, "width_step": 2},
}
REFERENCE = "paragru"


def build(arch: str, dim: int, layers: int, device: torch.device | str = "cpu") -> LanguageModel:
    spec = ARCHITECTURES[arch]
    return LanguageModel(VOCAB, dim, layers, arch, spec["num_heads"], MLP_RATIO, **spec["mixer_kwargs"]).to(device)


def count_params(arch: str, dim: int, layers: int) -> int:
    """Parameters of the model (built on the meta device: no memory, no initialisation work)."""
    with torch.device("meta"):
        model = build(arch, dim, layers, "meta")
    return sum(p.numel() for p in model.parameters())


def matched_dim(arch: str, target: int, layers: int, multiple: int) -> int:
    """The width, a multiple of ``multiple`` (and of the architecture's ``width_step``), whose model has the
    parameter count closest to ``target``."""
    multiple = math.lcm(multiple, ARCHITECTURES[arch]["width_step"])
    lo, hi = 1, 1
    while count_params(arch, hi * multiple, layers) < target:  # counts grow with the width
        lo, hi = hi, 2 * hi
    while lo < hi:  # the smallest multiple reaching the target
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if count_params(arch, mid * multiple, layers) < target else (lo, mid)
    candidates = [k * multiple for k in (lo - 1, lo) if k >= 1]
    return min(candidates, key=lambda d: abs(count_params(arch, d, layers) - target))


def equal_size_dims(
    archs: Sequence[str], dim: int, layers: int, multiple: int, tolerance: float
) -> dict[str, tuple[int, int]]:
    """``{arch: (dim, params)}`` matched to the ParaGRU model of width ``dim``; ``ValueError`` past ``tolerance``."""
    target = count_params(REFERENCE, dim, layers)
    dims = {}
    for arch in archs:
        d = dim if arch == REFERENCE else matched_dim(arch, target, layers, multiple)
        params = count_params(arch, d, layers)
        if abs(params / target - 1) > tolerance:
            raise ValueError(
                f"{arch}: the closest width {d} has {params:,} parameters, {params / target - 1:+.1%} off the "
                f"{target:,} of {REFERENCE} (tolerance {tolerance:.0%}); pass a smaller --dim-multiple, "
                "a larger --dim or a larger --tolerance"
            )
        dims[arch] = (d, params)
    return dims


def training_step(model: LanguageModel, batch: int, T: int, device: torch.device) -> Callable[[], None]:
    """One forward + backward of the LM loss on fixed random tokens ``(batch, T + 1)``."""
    tokens = torch.randint(0, VOCAB, (batch, T + 1), generator=torch.Generator().manual_seed(0)).to(device)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(inputs)
        F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten()).backward()
        for p in model.parameters():
            p.grad = None

    return step


def measure(
    arch: str, dim: int, layers: int, T: int, batch: int, device: torch.device, timing: argparse.Namespace
) -> dict[str, Any]:
    """One case in this process: median step time, tokens/s, first call, peak memory (MiB), solver."""
    row: dict[str, Any] = {"arch": arch, "dim": dim, "layers": layers, "T": T, "batch": batch}
    try:
        base = peak_memory.start(device)
        torch.manual_seed(0)
        model = build(arch, dim, layers, device)
        step = training_step(model, batch, T, device)
        first = _timed(step, device)
        spent = first
        while spent < timing.warmup_s:
            spent += _timed(step, device)
        times: list[float] = []
        while len(times) < timing.repeats or sum(times) < timing.min_time_s:
            times.append(_timed(step, device))
        peak = peak_memory.peak_mib(device, base)
    except (RuntimeError, MemoryError) as error:  # OOM, or e.g. cuDNN refusing a size
        return peak_memory.failed_row(row, error)
    median = statistics.median(times)
    row.update(time_s=median, tokens_per_s=batch * T / median, first_call_s=first, calls=len(times), peak_mib=peak)
    stats = getattr(getattr(model.blocks[0].mixer, "cell", None), "last_stats", None)
    if stats is not None:
        row["solver"] = f"{stats.mode}/{stats.backend}" if stats.backend else stats.mode
    return row


def run_case(args: argparse.Namespace, arch: str, dim: int, T: int) -> dict[str, Any]:
    """A case in this process (CUDA: peak memory is per case already) or in a fresh one (CPU: its own peak RSS)."""
    batch = max(1, args.tokens_per_step // T)
    if args.device == "cuda":
        return measure(arch, dim, args.layers, T, batch, torch.device("cuda"), args)
    cmd = [sys.executable, __file__, "--worker", arch, str(dim), str(T), str(batch), "--layers", str(args.layers)]
    cmd += ["--warmup-s", str(args.warmup_s), "--min-time-s", str(args.min_time_s), "--repeats", str(args.repeats)]
    cmd += ["--threads", str(torch.get_num_threads())]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        return {"arch": arch, "dim": dim, "T": T, "batch": batch, "error": done.stderr.strip().splitlines()[-1][:160]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(rows: Sequence[dict[str, Any]], params: dict[str, int]) -> str:
    """Markdown: one row per architecture and T."""
    lines = [
        "| arch | params | T | batch | step (ms) | tokens/s | peak (MiB) | solver |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        measured = (
            f"{1e3 * r['time_s']:.0f} | {r['tokens_per_s']:,.0f} | {r['peak_mib']:.0f}"
            if "time_s" in r
            else f"{r['error'][:40]} | - | -"
        )
        lines.append(
            f"| {r['arch']} | {params[r['arch']] / 1e6:.2f}M | {r['T']} | {r['batch']} | {measured} "
            f"| {r.get('solver', '-')} |"
        )
    return "\n".join(lines)


def machine_info(device: torch.device) -> dict[str, Any]:
    cpu = f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    return {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else cpu,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "precision": "bf16 autocast" if device.type == "cuda" else "float32",
        "peak_memory": "max_memory_allocated" if device.type == "cuda" else "ru_maxrss growth, one process per case",
        "load_average_1min_at_start": os.getloadavg()[0],  # other work on the machine skews CPU timings
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", nargs="+", default=list(ARCHITECTURES), choices=list(ARCHITECTURES))
    p.add_argument("--T", nargs="+", type=int, default=[512, 1024, 2048, 4096, 8192])
    p.add_argument("--tokens-per-step", type=int, default=8192)
    p.add_argument("--dim", type=int, default=192, help="width of the ParaGRU model; the others are matched to it")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--dim-multiple", type=int, default=2, help="widths of the other models are multiples of this")
    p.add_argument("--tolerance", type=float, default=0.05, help="largest relative parameter-count difference")
    p.add_argument("--warmup-s", type=float, default=1.0, help="least seconds of warm-up calls (after the first)")
    p.add_argument("--min-time-s", type=float, default=1.0, help="least seconds of timed calls per case")
    p.add_argument("--repeats", type=int, default=3, help="least timed calls per case")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", type=Path, default=None, help="results file (default results/lm_throughput_<device>.json)")
    p.add_argument("--worker", nargs=4, metavar=("ARCH", "DIM", "T", "BATCH"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available here; run on CPU (the default)")
    for name in ("tokens_per_step", "dim", "layers", "dim_multiple", "repeats", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        arch, dim, T, batch = args.worker[0], *map(int, args.worker[1:])
        print(json.dumps(measure(arch, dim, args.layers, T, batch, device, args)))
        return []
    dims = equal_size_dims(args.archs, args.dim, args.layers, args.dim_multiple, args.tolerance)
    for arch, (dim, params) in dims.items():
        print(f"{arch}: dim {dim} × {args.layers} layers, {params:,} parameters", file=sys.stderr)
    out = args.out or RESULTS / f"lm_throughput_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    machine = {**machine_info(device), "tokens_per_step": args.tokens_per_step, "layers": args.layers}
    machine["models"] = {arch: {"dim": dim, "params": params} for arch, (dim, params) in dims.items()}
    rows = []
    for T in args.T:
        for arch in args.archs:
            rows.append(run_case(args, arch, dims[arch][0], T))
            r = rows[-1]
            shown = f"{r['tokens_per_s']:,.0f} tokens/s" if "time_s" in r else r["error"]
            print(f"  {arch} T={T}: {shown}", file=sys.stderr, flush=True)
            out.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
    params = {arch: p for arch, (_, p) in dims.items()}
    print(f"\n{machine}\n\n{table(rows, params)}\n\nwrote {out}")
    return rows


if __name__ == "__main__":
    main()
