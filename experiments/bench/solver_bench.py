"""Solver benchmark: ``sequential`` vs ``parallel`` for ParaGRU and ParaLSTM.

For each cell, mode and sequence length it measures forward and forward+backward wall time
(median of repeats after warm-up calls: on CPU the first calls at large T are slowed by the
allocator faulting in fresh pages), the peak memory of the first call, and the Newton iterations
used; prints a Markdown table and writes a JSON file.

Each measurement runs in a fresh subprocess so peak memory is not polluted by earlier runs.
On CPU, peak memory is the growth of the process's peak RSS over the first call; on CUDA it is
``torch.cuda.max_memory_allocated`` over what the inputs hold.

    python experiments/bench/solver_bench.py                       # the issue's sizes, ~10 min on 2 cores
    python experiments/bench/solver_bench.py --T 256 1024 --repeats 2 --out /tmp/bench.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import peak_memory
import torch

from pararnn_ts import ParaGRU, ParaLSTM

CELLS = {"paragru": ParaGRU, "paralstm": ParaLSTM}
DEFAULT_OUT = Path(__file__).parent / "results" / "solver_cpu.json"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(
    cell: str, mode: str, T: int, passes: str, batch: int, hidden: int, warmup: int, repeats: int, device: str
) -> dict:
    """One measurement in this process: returns times (s), peak memory (MiB) and Newton stats."""
    dev = torch.device(device)
    torch.manual_seed(0)
    rnn = CELLS[cell](hidden, hidden, num_heads=4, mode=mode).to(dev)
    x = torch.randn(batch, T, hidden, device=dev, requires_grad=passes == "fwd+bwd")

    def call() -> None:
        if passes == "fwd":
            with torch.no_grad():
                rnn(x)
        else:
            y, _ = rnn(x)
            y.sum().backward()
            x.grad = None
            rnn.zero_grad(set_to_none=True)
        _sync(dev)

    base = peak_memory.start(dev)
    start = time.perf_counter()
    call()
    first = time.perf_counter() - start
    peak = peak_memory.peak_mib(dev, base)
    for _ in range(warmup - 1):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    stats = rnn.last_stats
    return {
        "cell": cell,
        "mode": mode,
        "T": T,
        "passes": passes,
        "time_s": statistics.median(times) if times else first,
        "first_call_s": first,
        "peak_mib": peak,
        "newton_iterations": stats.iterations,
        "newton_iterations_total": stats.total_iterations,
        "chunks": stats.chunks,
        "residual": stats.residual,
        "fell_back": stats.fell_back,
    }


def run_in_subprocess(args: argparse.Namespace, cell: str, mode: str, T: int, passes: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", cell, mode, str(T), passes]
    cmd += ["--batch", str(args.batch), "--hidden", str(args.hidden)]
    cmd += ["--warmup", str(args.warmup), "--repeats", str(args.repeats)]
    cmd += ["--device", args.device]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    lines = [
        "| cell | mode | T | fwd (s) | fwd+bwd (s) | peak fwd (MiB) | peak fwd+bwd (MiB) | Newton its (max/chunk) "
        "| chunks | Newton its (sum over chunks) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    index = {(r["cell"], r["mode"], r["T"], r["passes"]): r for r in rows}
    for cell, mode, T in dict.fromkeys((r["cell"], r["mode"], r["T"]) for r in rows):
        f, fb = index[(cell, mode, T, "fwd")], index[(cell, mode, T, "fwd+bwd")]
        newton = (
            f"{f['newton_iterations']} | {f['chunks']} | {f['newton_iterations_total']}"
            if mode == "parallel"
            else "- | - | -"
        )
        lines.append(
            f"| {cell} | {mode} | {T} | {f['time_s']:.4f} | {fb['time_s']:.4f} | "
            f"{f['peak_mib']:.0f} | {fb['peak_mib']:.0f} | {newton} |"
        )
    return "\n".join(lines)


def growth_lines(rows: list[dict], Ts: list[int]) -> list[str]:
    """Time ratio from the second-smallest to the largest T for the parallel mode."""
    if len(Ts) < 3:
        return []
    lo, hi = sorted(Ts)[1], max(Ts)
    out = []
    for r in rows:
        if r["mode"] == "parallel" and r["T"] == hi:
            key = (r["cell"], "parallel", lo, r["passes"])
            base = next(b for b in rows if (b["cell"], b["mode"], b["T"], b["passes"]) == key)
            ratio = r["time_s"] / base["time_s"]
            # Newton work ∝ T × mean iterations per chunk (chunks are of equal length).
            work = (hi * r["newton_iterations_total"] / r["chunks"]) / (
                lo * base["newton_iterations_total"] / base["chunks"]
            )
            out.append(
                f"parallel {r['cell']} {r['passes']}: T={lo}→{hi} ({hi // lo}× longer) took {ratio:.1f}× the time "
                f"for {work:.1f}× the Newton work (T × mean iterations per chunk)"
            )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", nargs="+", default=list(CELLS), choices=list(CELLS))
    p.add_argument("--modes", nargs="+", default=["sequential", "parallel"], choices=["sequential", "parallel"])
    p.add_argument("--T", nargs="+", type=int, default=[256, 1024, 4096, 16384])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--warmup", type=int, default=2, help="calls before timing (the first measures memory)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--worker", nargs=4, metavar=("CELL", "MODE", "T", "PASSES"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        cell, mode, T, passes = args.worker
        sizes = (args.batch, args.hidden, args.warmup, args.repeats, args.device)
        print(json.dumps(measure(cell, mode, int(T), passes, *sizes)))
        return
    rows = []
    for cell in args.cells:
        for mode in args.modes:
            for T in args.T:
                for passes in ("fwd", "fwd+bwd"):
                    rows.append(run_in_subprocess(args, cell, mode, T, passes))
                    print(f"  {cell} {mode} T={T} {passes}: {rows[-1]['time_s']:.4f} s", file=sys.stderr, flush=True)
    machine = {
        "device": args.device if args.device != "cpu" else f"cpu ({platform.processor() or platform.machine()})",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "hidden": args.hidden,
        "warmup": args.warmup,
        "repeats": args.repeats,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
    print(f"\nB={args.batch}, D={args.hidden}, {machine}\n")
    print(table(rows))
    for line in growth_lines(rows, args.T):
        print(line)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
