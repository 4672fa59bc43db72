"""Triton kernel tuning on a GPU, in one call: the sequential kernels' tiles, pipeline depth and loop
unrolling, the Newton-vs-sequential crossover in the number of chains ``B·D``, the cost of a whole ``cell.solve``
against its kernel, and (``host``) a no-grad ``cell.solve`` in back-to-back calls with the weights' norm clip in
the kernel or as a separate ``torch.renorm``, and (``newton-tiles``) the Newton kernels' tiles where ``auto`` runs
them. Prints one JSON line per measurement and writes them all to
``--out``/tune.json; refuses, before timing anything, when that file exists (``--overwrite`` replaces it).

    python experiments/bench/triton_tuning.py --out DIR [--sections sequential newton-tiles unroll crossover solve host]

The committed ``experiments/bench/results/triton_*_cuda.json`` hold these rows with a ``machine`` and ``note`` added by
hand: ``triton_tuning_cuda.json`` the sections ``sequential crossover solve``, ``triton_host_cuda.json`` ``host``,
``triton_unroll_cuda.json`` the calls of ``unroll`` (see each file's note).
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

import torch
from results_file import add_overwrite, refuse_existing
from triton.testing import do_bench

from pararnn_ts import ParaGRU, ParaLSTM
from pararnn_ts.ops import triton_fused as tf

CELLS = {"gru": ParaGRU, "lstm": ParaLSTM}
SECTIONS = ("sequential", "newton-tiles", "unroll", "crossover", "solve", "host")


def bench(fn) -> float:
    return do_bench(fn, warmup=25, rep=150, return_mode="median")


def burst_ms(fn, calls: int = 300) -> float:
    """Milliseconds per call over ``calls`` back-to-back calls (host-bound calls: the host's time per call)."""
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / calls * 1e3


def problem(name: str, B: int, T: int, D: int):
    """A cell's fused weights, ``u``, ``h0``, the forward's ``h`` and a random ``∂L/∂h``."""
    torch.manual_seed(0)
    cell = CELLS[name](D, D, num_heads=1).cuda()
    with torch.no_grad():
        u = cell.project(torch.randn(B, T, D, device="cuda")).contiguous()
    h0 = 0.5 * torch.randn(B, *cell.state_shape, device="cuda")
    w = tuple(x.detach().contiguous() for x in cell.fused_weights())
    h, _ = getattr(tf, f"{name}_forward")(u, *w, h0, 1e-6, 12, algorithm="newton")
    return cell, w, u, h0, h, torch.randn_like(h)


def timings(name: str, w, u, h0, h, g, **tuning) -> tuple[float, float]:
    fwd, bwd = getattr(tf, f"{name}_forward"), getattr(tf, f"{name}_backward")
    return bench(lambda: fwd(u, *w, h0, 1e-6, 12, **tuning)), bench(lambda: bwd(g, u, *w, h0, h, **tuning))


def main() -> None:
    p = argparse.ArgumentParser(
        allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, required=True, help="folder of tune.json")
    p.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    add_overwrite(p)
    args = p.parse_args()
    refuse_existing([args.out / "tune.json"], args.overwrite, parser=p)
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list = []

    def log(**row) -> None:
        rows.append(row)
        print(json.dumps(row), flush=True)
        (args.out / "tune.json").write_text(json.dumps(rows, indent=1))

    if "sequential" in args.sections:
        for name in CELLS:
            cell, w, u, h0, h, g = problem(name, 16, 8192, 1024)
            for bd, nw in ((32, 1), (64, 2), (128, 4), (64, 1)):
                for stages, unroll in ((4, 2), (8, 1), (8, 2), (12, 2), (16, 2)):
                    tune = dict(algorithm="sequential", block_d=bd, num_warps=nw, stages=stages, unroll=unroll)
                    try:
                        f, b = timings(name, w, u, h0, h, g, **tune)
                        log(section="sequential", cell=name, T=8192, tile=[bd, nw, stages, unroll], fwd_ms=f, bwd_ms=b)
                    except Exception as e:  # a config that does not compile or fit
                        log(section="sequential", cell=name, tile=[bd, nw, stages, unroll], error=str(e)[:200])
            del u, h, g
    if "newton-tiles" in args.sections:  # where algorithm="auto" runs Newton (B·D < 8192); defaults included
        for name in CELLS:
            cell, w, u, h0, h, g = problem(name, 4, 8192, 1024)
            for bd, ct, nw in ((8, 32, 2), (8, 64, 2), (8, 128, 2), (16, 64, 2), (16, 64, 4), (16, 128, 4)):
                tune = dict(algorithm="newton", block_d=bd, chunk_t=ct, num_warps=nw)
                try:
                    f, b = timings(name, w, u, h0, h, g, **tune)
                    log(section="newton-tiles", cell=name, B=4, T=8192, tile=[bd, ct, nw], fwd_ms=f, bwd_ms=b)
                except Exception as e:  # a config that does not compile or fit
                    log(section="newton-tiles", cell=name, tile=[bd, ct, nw], error=str(e)[:200])
            del u, h, g
    if "unroll" in args.sections:
        for T in (8192, 65536):
            for name in CELLS:
                cell, w, u, h0, h, g = problem(name, 16, T, 1024)
                for unroll in (1, 2):
                    f, b = timings(name, w, u, h0, h, g, algorithm="sequential", unroll=unroll)
                    log(section="unroll", cell=name, T=T, unroll=unroll, fwd_ms=f, bwd_ms=b)
                del u, h, g
    if "crossover" in args.sections:
        for name in CELLS:
            for B, D in ((1, 256), (1, 1024), (4, 1024), (16, 256), (16, 1024), (64, 1024)):
                for T in (512, 8192):
                    cell, w, u, h0, h, g = problem(name, B, T, D)
                    for algorithm in ("newton", "sequential"):
                        f, b = timings(name, w, u, h0, h, g, algorithm=algorithm)
                        log(section="crossover", cell=name, B=B, D=D, T=T, algorithm=algorithm, fwd_ms=f, bwd_ms=b)
    if "solve" in args.sections:
        for name in CELLS:
            for T in (512, 2048):
                cell, w, u, h0, h, g = problem(name, 16, T, 1024)
                cell.mode = "fused"
                with torch.no_grad():
                    solve = bench(functools.partial(cell.solve, u, h0))
                algo = cell.last_stats.algorithm
                kernel = bench(functools.partial(getattr(tf, f"{name}_forward"), u, *w, h0, 1e-6, 12))
                log(section="solve", cell=name, T=T, solve_ms=solve, kernel_ms=kernel, algorithm=algo)
    if "host" in args.sections:
        for name in CELLS:
            cell, w, u, h0, h, g = problem(name, 16, 512, 1024)
            cell.mode = "fused"
            kernel = bench(functools.partial(getattr(tf, f"{name}_forward"), u, *w, h0, 1e-6, 12))
            row = {}
            for in_kernel in (False, True, False, True):  # twice each, interleaved: the host's speed drifts
                tf.CLIPS_WEIGHTS = in_kernel
                with torch.no_grad():
                    row.setdefault(in_kernel, []).append(burst_ms(functools.partial(cell.solve, u, h0)))
            tf.CLIPS_WEIGHTS = True
            log(
                section="host",
                cell=name,
                T=512,
                kernel_ms=kernel,
                solve_clip_renorm_ms=row[False],
                solve_clip_in_kernel_ms=row[True],
            )


if __name__ == "__main__":
    main()
