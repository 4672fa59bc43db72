"""Kernel benchmark: the recurrence alone, every backend, against the bytes-moved floor.

For ParaGRU and ParaLSTM it times ``cell.solve(u, h0)`` (forward) and the same plus backward to
``u``, ``h0`` and the weights, for the modes ``sequential``, ``parallel`` and ``fused`` (each
fused backend that can run; on GPU also ``fused-triton-newton``, Triton held to its Newton kernels
where its own choice for the size is the sequential ones, and ``fused-triton-fast``, its own choice
with ``fast_math``), next to ``torch.nn.GRU`` /
``torch.nn.LSTM`` of the same hidden size (oneDNN on CPU, cuDNN on GPU; they also do their input
and dense recurrent matmuls) and, on GPU, the peer linear-scan kernels ``accelerated-scan`` and
flash-linear-attention's HGRN when installed (``accelerated-scan-triton-wide``: the same scan over
``WIDE`` times the channels, as many bytes as a ParaGRU forward+backward).

The floor is the fewest bytes a kernel must move (``u`` read once, ``h`` written once; backward:
``u``, ``h``, ``∂L/∂h`` read once, ``∂L/∂u`` written once) over the memory bandwidth measured in
the same run by a large copy. Times are medians after warm-up calls (at least ``--warmup`` calls
and one second). On CUDA each timed repeat is a burst of back-to-back calls (about ``BURST_S``)
divided by its length, the steady state of a training loop whose host runs ahead of the GPU; the
median of single synchronised calls, which also counts the host's launch overhead, is kept as
``latency_s`` ("1 call" in the table). Peak memory is the growth of peak RSS over the first call
(CPU, one subprocess per case) or ``max_memory_allocated`` (CUDA).

    python experiments/bench/kernel_bench.py                          # CPU, the issue's sizes
    python experiments/bench/kernel_bench.py --device cuda --batch 16 --hidden 1024 --T 512 2048 8192 65536
    python experiments/bench/kernel_bench.py --device cuda ... --cases 'gru/fused-triton*' 'peer/*'   # some cases
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import importlib.util
import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import peak_memory
import torch

from pararnn_ts import ParaGRU, ParaLSTM
from pararnn_ts.ops import unavailable_reason

RESULTS = Path(__file__).parent / "results"
CELLS = {"gru": ParaGRU, "lstm": ParaLSTM}
STATE = {"gru": 1, "lstm": 2}  # state values per channel
WARMUP_S = 1.0  # least seconds of warm-up calls per case
BURST_S = 0.02  # on CUDA, each timed repeat is a burst of back-to-back calls lasting about this long
PEERS = (
    "accelerated-scan-warp",
    "accelerated-scan-triton",
    "accelerated-scan-triton-wide",
    "fla-hgrn-chunk",
    "fla-hgrn-recurrent",
)
#: a ``-wide`` peer scans WIDE × D channels: a linear scan's forward+backward moves 8 arrays of its width where a
#: ParaGRU's moves 12, so this is the peer of the same size in bytes (the plain peers are the same size in D)
WIDE = 1.5


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def case_names(cell: str, device: torch.device, modes: list[str], peers: list[str]) -> list[str]:
    """``<cell>/<mode>[-<backend>]`` for every mode and fused backend that can run here, then peers."""
    names = []
    for mode in modes:
        if mode != "fused":
            names.append(f"{cell}/{mode}")
            continue
        for backend in ("cpu", "triton", "cuda"):
            if (device.type == "cpu") == (backend == "cpu") and unavailable_reason(backend, device) is None:
                names.append(f"{cell}/fused-{backend}")
                if backend == "triton":
                    names.append(f"{cell}/fused-triton-newton")
                    if device.type == "cuda":
                        names.append(f"{cell}/fused-triton-fast")
    names.append(f"{cell}/nn.{cell.upper()}")
    if device.type == "cuda" and cell == "gru":
        names += [f"peer/{p}" for p in peers if importlib.util.find_spec(_peer_module(p)) is not None]
    return names


def _peer_module(peer: str) -> str:
    return "accelerated_scan" if peer.startswith("accelerated-scan") else "fla"


def select_cases(names: list[str], patterns: list[str]) -> list[str]:
    """The ``names`` that match any of the globs ``patterns``; an error names a glob that matches none."""
    for pattern in patterns:
        if not fnmatch.filter(names, pattern):
            raise SystemExit(f"--cases {pattern!r} matches none of the cases that can run here: {', '.join(names)}")
    return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]


def floor_bytes(name: str, B: int, T: int, D: int, passes: str) -> int:
    """Fewest bytes moved by the case's forward (and backward), float32."""
    if name.startswith("peer/"):  # x_t = a_t x_{t-1} + b_t: read a, b, write x; back: read a, x, g, write 2
        fwd, bwd, D = 3, 5, peer_width(name, D)
    else:
        s = STATE[name.split("/")[0]]
        fwd, bwd = 3 + s, 3 + 2 * s + 3  # u, h | u, h, ∂h, ∂u
    return 4 * B * T * D * (fwd + (bwd if passes == "fwd+bwd" else 0))


def build(name: str, B: int, T: int, D: int, device: torch.device, passes: str) -> tuple[Callable[[], None], object]:
    """The call to time and the module whose ``last_stats`` to report (or ``None``)."""
    torch.manual_seed(0)
    train = passes == "fwd+bwd"
    cell_name, variant = name.split("/")
    if cell_name == "peer":
        return _peer_call(variant, B, T, D, device, train), None
    if variant.startswith("nn."):
        rnn = getattr(torch.nn, variant[3:])(D, D, batch_first=True).to(device)
        x = torch.randn(B, T, D, device=device, requires_grad=train)
        return _call(lambda: rnn(x)[0], train, [x, *rnn.parameters()]), None
    mode, _, backend = variant.partition("-")
    backend, _, algorithm = backend.partition("-")
    _hold_triton(algorithm)
    cell = CELLS[cell_name](D, D, num_heads=4, mode=mode, fused_backend=backend or "auto").to(device)
    with torch.no_grad():
        u = cell.project(torch.randn(B, T, D, device=device))
    u.requires_grad_(train)
    h0 = torch.zeros(B, *cell.state_shape, device=device, requires_grad=train)
    return _call(lambda: cell.solve(u, h0), train, [u, h0, *cell.parameters()]), cell


def _hold_triton(variant: str) -> None:
    """Set Triton's ops for the next case: ``""`` their own choice by size, ``"newton"`` held to Newton,
    ``"fast"`` their own choice with ``fast_math``."""
    if importlib.util.find_spec("triton") is not None:
        from pararnn_ts.ops import triton_fused

        triton_fused.default_algorithm = "newton" if variant == "newton" else "auto"
        triton_fused.fast_math = variant == "fast"


def _call(forward: Callable[[], torch.Tensor], train: bool, leaves: list[torch.Tensor]) -> Callable[[], None]:
    if not train:

        def run() -> None:
            with torch.no_grad():
                forward()

        return run
    grad = []

    def run_train() -> None:
        out = forward()
        if not grad:
            grad.append(torch.randn_like(out))
        out.backward(grad[0])
        for leaf in leaves:
            leaf.grad = None

    return run_train


def peer_width(peer: str, D: int) -> int:
    """Channels the peer ``peer`` scans for a case of hidden size ``D``: ``D``, or ``WIDE · D`` for a ``-wide`` one."""
    return round(WIDE * D) if peer.endswith("-wide") else D


def _peer_call(peer: str, B: int, T: int, D: int, device: torch.device, train: bool) -> Callable[[], None]:
    D = peer_width(peer, D)
    a = torch.rand(B, T, D, device=device).mul_(0.5).add_(0.45)
    b = torch.randn(B, T, D, device=device)
    forward, leaves = peer_scan(peer, a, b, train)
    return _call(forward, train, leaves)


def peer_scan(
    peer: str, a: torch.Tensor, b: torch.Tensor, train: bool = False
) -> tuple[Callable[[], torch.Tensor], list[torch.Tensor]]:
    """The peer's scan ``x_t = a_t x_{t-1} + b_t`` of ``a, b`` ``(B, T, D)`` as a call, its inputs laid out
    as the peer takes them (outside the call, so it is not timed), and those inputs (the leaves). The call
    returns ``x`` in the peer's layout: ``(B, D, T)`` for accelerated-scan, ``(B, T, D)`` for fla."""
    if peer.startswith("accelerated-scan"):
        module = "warp" if peer.endswith("warp") else "scalar"  # warp: CUDA C++ built at import
        scan = importlib.import_module(f"accelerated_scan.{module}").scan
        gates, tokens = (t.transpose(1, 2).contiguous().requires_grad_(train) for t in (a, b))
        return lambda: scan(gates, tokens), [gates, tokens]
    from fla.ops.hgrn import chunk_hgrn, fused_recurrent_hgrn

    fn = chunk_hgrn if peer == "fla-hgrn-chunk" else fused_recurrent_hgrn
    x, g = b.requires_grad_(train), a.log().requires_grad_(train)
    return lambda: fn(x, g)[0], [x, g]


def measure(name: str, B: int, T: int, D: int, passes: str, device: torch.device, warmup: int, repeats: int) -> dict:
    """One case in this process: median time (s), first call (s), peak memory (MiB), solver stats."""
    row = {"case": name, "T": T, "passes": passes, "floor_bytes": floor_bytes(name, B, T, D, passes)}
    try:
        call, cell = build(name, B, T, D, device, passes)
        base = peak_memory.start(device)
        first = _timed(call, device)
        peak = peak_memory.peak_mib(device, base)
        if first > 2.0:  # slow cases: fewer calls, the spread is small relative to the time
            warmup, repeats = 1, min(repeats, 2)
        # Warm up for at least `warmup` calls and WARMUP_S seconds: on CPU the first calls of a process
        # fault in fresh pages for every new large buffer and run several times slower than later ones.
        spent, calls = first, 1
        while calls < warmup or (spent < WARMUP_S and calls < 50):
            spent += _timed(call, device)
            calls += 1
        times = [_timed(call, device) for _ in range(repeats)]
        latency = statistics.median(times)
        if device.type == "cuda":  # steady state: back-to-back calls, as a training loop issues them
            times = [_timed(call, device, _burst_length(latency)) for _ in range(repeats)]
    except (RuntimeError, MemoryError) as error:  # OOM, or e.g. cuDNN refusing a size
        return peak_memory.failed_row(row, error)
    stats = getattr(cell, "last_stats", None)
    row.update(time_s=statistics.median(times), latency_s=latency, first_call_s=first, peak_mib=peak)
    if stats is not None:
        row.update(mode=stats.mode, backend=stats.backend, iterations=stats.iterations, residual=stats.residual)
        row.update(algorithm=stats.algorithm)
        row.update(fell_back=stats.fell_back)
    return row


def _timed(call: Callable[[], None], device: torch.device, calls: int = 1) -> float:
    """Seconds per call of ``calls`` back-to-back calls (CUDA: between two events, so the host may run
    ahead of the GPU as in a training loop; a single call also counts its launch overhead)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            call()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / calls
    start = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - start) / calls


def _burst_length(latency: float) -> int:
    """Back-to-back calls (1 to 200) that last about ``BURST_S`` when one call takes ``latency`` seconds."""
    return max(1, min(200, round(BURST_S / latency)))


def bandwidth(device: torch.device, mib: int) -> float:
    """Copy bandwidth in bytes/s (bytes read + written) of a ``mib`` MiB array, median of 5 after a warm-up; on
    CUDA each repeat is a burst of back-to-back copies, timed as the cases are."""
    src = torch.randn(mib * 2**18, device=device)
    dst = torch.empty_like(src)

    def copy() -> None:
        dst.copy_(src)

    single = min(_timed(copy, device) for _ in range(3))
    burst = _burst_length(single) if device.type == "cuda" else 1
    times = [_timed(copy, device, burst) for _ in range(5)]
    return 2 * src.numel() * 4 / statistics.median(times)


def run_case(args: argparse.Namespace, name: str, T: int, passes: str) -> dict:
    if args.device == "cuda":  # in-process: CUDA peak memory is per case already
        return measure(name, args.batch, T, args.hidden, passes, torch.device("cuda"), args.warmup, args.repeats)
    cmd = [sys.executable, __file__, "--worker", name, str(T), passes, "--batch", str(args.batch)]
    cmd += ["--hidden", str(args.hidden), "--warmup", str(args.warmup), "--repeats", str(args.repeats)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def table(rows: list[dict], bw: float) -> str:
    lines = [
        "| case | T | fwd (ms) | fwd+bwd (ms) | fwd 1 call (ms) | fwd GB/s | fwd+bwd GB/s | fwd+bwd / floor "
        "| peak fwd+bwd (MiB) | Newton its | mode/backend/algorithm |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    index = {(r["case"], r["T"], r["passes"]): r for r in rows}
    for name, T in dict.fromkeys((r["case"], r["T"]) for r in rows):
        f, fb = index.get((name, T, "fwd"), {}), index.get((name, T, "fwd+bwd"), {})
        cells = []
        for r in (f, fb):
            cells.append(f"{1e3 * r['time_s']:.2f}" if "time_s" in r else r.get("error", "-")[:30])
        cells.append(f"{1e3 * f['latency_s']:.2f}" if "latency_s" in f else "-")
        for r in (f, fb):
            cells.append(f"{r['floor_bytes'] / r['time_s'] / 1e9:.1f}" if "time_s" in r else "-")
        cells.append(f"{fb['time_s'] * bw / fb['floor_bytes']:.2f}" if "time_s" in fb else "-")
        cells.append(f"{fb['peak_mib']:.0f}" if "peak_mib" in fb else "-")
        cells.append(str(f.get("iterations", "-")))
        cells.append(f"{f.get('mode', '-')}/{f.get('backend', '-')}/{f.get('algorithm', '-')}")
        lines.append(f"| {name} | {T} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def speedups(rows: list[dict], reference_T: int) -> list[str]:
    """Ratios the issue sets targets on, from this run: fused vs the others at ``reference_T``."""
    t = {(r["case"], r["T"], r["passes"]): r.get("time_s") for r in rows}
    out = []
    for cell in CELLS:
        for fused in sorted({r["case"] for r in rows if r["case"].startswith(f"{cell}/fused-")}):
            for passes in ("fwd", "fwd+bwd"):
                mine = t.get((fused, reference_T, passes))
                if mine is None:
                    continue
                others = [
                    c
                    for c in dict.fromkeys(r["case"] for r in rows)
                    if c != fused and (c.startswith(f"{cell}/") or (cell == "gru" and c.startswith("peer/")))
                ]
                ratios = [
                    f"{t[(c, reference_T, passes)] / mine:.2f}× {c}" for c in others if t.get((c, reference_T, passes))
                ]
                out.append(f"{fused} {passes} at T={reference_T} is faster than: " + ", ".join(ratios))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", nargs="+", default=list(CELLS), choices=list(CELLS))
    p.add_argument("--modes", nargs="*", default=["sequential", "parallel", "fused"])
    p.add_argument("--T", nargs="+", type=int, default=[256, 1024, 4096, 16384])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--peers", nargs="*", default=list(PEERS), help="GPU peer kernels to include")
    p.add_argument("--cases", nargs="+", default=["*"], help="only the cases matching these globs, e.g. 'peer/*'")
    p.add_argument("--max-sequential-T", type=int, default=None, help="skip the sequential loop above this T")
    p.add_argument("--reference-T", type=int, default=None, help="T of the speed-up lines (default 4096)")
    p.add_argument("--out", type=Path, default=None, help="results file (default results/kernels_<device>.json)")
    p.add_argument("--worker", nargs=3, metavar=("CASE", "T", "PASSES"), help=argparse.SUPPRESS)
    args = p.parse_args()
    device = torch.device(args.device)
    if args.worker:
        name, T, passes = args.worker
        print(json.dumps(measure(name, args.batch, int(T), args.hidden, passes, device, args.warmup, args.repeats)))
        return
    out = args.out or RESULTS / f"kernels_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    names = [name for cell in args.cells for name in case_names(cell, device, args.modes, args.peers)]
    for name in select_cases(names, args.cases):
        for T in args.T:
            if name.endswith("/sequential") and args.max_sequential_T and T > args.max_sequential_T:
                continue
            for passes in ("fwd", "fwd+bwd"):
                rows.append(run_case(args, name, T, passes))
                r = rows[-1]
                shown = f"{1e3 * r['time_s']:.2f} ms" if "time_s" in r else r["error"]
                print(f"  {name} T={T} {passes}: {shown}", file=sys.stderr, flush=True)
                out.write_text(json.dumps({"machine": None, "rows": rows}, indent=2) + "\n")  # partial
    # After the cases: a child process inherits its parent's peak RSS at fork.
    bw = bandwidth(device, 1024 if device.type == "cuda" else 256)
    cpu = f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    machine = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else cpu,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "hidden": args.hidden,
        "copy_bandwidth_GBps": bw / 1e9,
    }
    with contextlib.suppress(ImportError):
        import triton

        machine["triton"] = triton.__version__
    out.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
    reference_T = args.reference_T or (4096 if 4096 in args.T else min(args.T))
    print(f"\nB={args.batch}, D={args.hidden}, float32, {machine}\n")
    print(table(rows, bw))
    print()
    for line in speedups(rows, reference_T):
        print(line)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
