"""What bounds the Triton sequential ParaGRU forward on a GPU: memory, or the latency of its maths?

Variants of the same loop (one lane per chain, 3 gate loads and 1 store per step) at B=16, D=1024,
T=8192 and 65536, timed with ``triton.testing.do_bench`` (median):

* ``lib``: the library kernel through ``triton_fused.gru_forward(algorithm="sequential")``, at its
  default tile and at other tiles, stages and unroll factors;
* ``copy``: the same loads and store around a one-FMA step ``h <- h/2 + uz + ur + uc`` (the memory and
  loop bound);
* ``exact2``: the ParaGRU step with the exact tanh written as ``2 σ(2x) - 1`` (one exp, one division);
* ``approx``: the ParaGRU step with every σ and tanh by ``tanh.approx.f32`` (what ``fast_math`` runs).

Prints ms, GB/s (``u`` read once, ``h`` written once), the ratio to a 2 GiB copy's bandwidth and the
largest ``|h - h_lib|``; writes ``runs/bench/triton_sequential_bound_cuda.json`` (git-ignored; or ``--out``) and
refuses, before timing anything, when that file exists (``--overwrite`` replaces it), and without a CUDA GPU.

    python experiments/bench/triton_sequential_bound.py

The committed ``experiments/bench/results/triton_sequential_bound_cuda.json`` (its ``note`` added by hand) came from

    python experiments/bench/triton_sequential_bound.py \\
        --out experiments/bench/results/triton_sequential_bound_cuda.json --overwrite
"""

import argparse
import json
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from results_file import add_overwrite, results_path  # noqa: E402  (this script's folder)

from pararnn_ts.ops import _triton_kernels as k  # noqa: E402
from pararnn_ts.ops import triton_fused as tf  # noqa: E402


@triton.jit
def _tanh_exact2(x):
    return 2.0 / (1.0 + tl.exp(-2.0 * x)) - 1.0


@triton.jit
def _step(h, uz, ur, uc, az, ar, ac, MATH: tl.constexpr):
    if MATH == 1:
        return 0.5 * h + uz + ur + uc
    elif MATH == 2:
        z = 1.0 / (1.0 + tl.exp(-(az * h + uz)))
        r = 1.0 / (1.0 + tl.exp(-(ar * h + ur)))
        c = _tanh_exact2(ac * (h * r) + uc)
        return h + z * (c - h)
    else:
        z, r, c = k._gru_gates(h, uz, ur, uc, az, ar, ac, True)
        return h + z * (c - h)


@triton.jit
def variant_kernel(
    u_ptr,
    a_ptr,
    h0_ptr,
    h_ptr,
    T,
    D,
    BLOCK_D: tl.constexpr,
    STAGES: tl.constexpr,
    UNROLL: tl.constexpr,
    MATH: tl.constexpr,
):
    pid_b, d, dmask = k._lane_channels(D, BLOCK_D)
    az, ar, ac = k._vector_rows3(a_ptr, D, d, dmask, BLOCK_D)
    h = tl.load(h0_ptr + pid_b * D + d, mask=dmask, other=0.0)
    base = (pid_b * T).to(tl.int64)
    for t in tl.range(0, T, num_stages=STAGES, loop_unroll_factor=UNROLL):
        bt = base + t
        uz, ur, uc = k._load_gates(u_ptr, 3 * bt * D + d, D, dmask)
        h = _step(h, uz, ur, uc, az, ar, ac, MATH)
        tl.store(h_ptr + bt * D + d, h, mask=dmask)


B, D = 16, 1024
LIB_TUNINGS = (
    {},
    {"stages": 16},
    {"block_d": 32, "num_warps": 1},
    {"block_d": 128, "num_warps": 4},
    {"unroll": 1},
    {"unroll": 4, "stages": 16},
)
VARIANTS = {1: "copy", 2: "exact2", 3: "approx"}
#: (BLOCK_D, STAGES, num_warps, UNROLL) of the variant kernels: the library's default and two others
VARIANT_TILES = ((64, 8, 2, 2), (32, 16, 1, 2), (64, 16, 2, 4))


def ms(fn) -> float:
    return triton.testing.do_bench(fn, warmup=50, rep=300, return_mode="median")


def copy_bandwidth(device: torch.device) -> float:
    """GB/s (bytes read + written) of a 2 GiB copy."""
    src = torch.empty(2 * 1024**3 // 4, device=device)
    return 2 * src.numel() * 4 / ms(src.clone) / 1e6


def sweep(T: int, bw: float, device: torch.device) -> list[dict]:
    """Every variant at ``T``; ``bw``: the copy bandwidth in GB/s."""
    u = torch.randn(B, T, 3, D, device=device)
    A = torch.randn(3, D, device=device) * 0.5
    h0 = torch.randn(B, D, device=device) * 0.1
    nbytes = (u.numel() + B * T * D) * 4
    ref, _ = tf.gru_forward(u, A, h0, 1e-6, 10, None, algorithm="sequential")
    rows = []

    def log(name: str, run) -> None:
        t_ms = ms(run)
        err = (run() - ref).abs().max().item()
        gbps = nbytes / t_ms / 1e6
        rows.append(dict(T=T, variant=name, ms=t_ms, GBps=gbps, floor_ratio=bw / gbps, max_abs_diff=err))
        print(f"T={T:6d} {name:28s} {t_ms:8.3f} ms {gbps:6.0f} GB/s x{bw / gbps:.2f} floor  max|dh| {err:.2e}")

    for tuning in LIB_TUNINGS:

        def run_lib(tuning=tuning) -> torch.Tensor:
            return tf.gru_forward(u, A, h0, 1e-6, 10, None, algorithm="sequential", **tuning)[0]

        log("lib " + ",".join(f"{a}={b}" for a, b in tuning.items()), run_lib)
    for math_id, variant in VARIANTS.items():
        for bd, st, nw, ur in VARIANT_TILES:
            h = torch.full_like(ref, float("nan"))  # poisoned once: unwritten outputs show in max|dh|

            def run(bd=bd, st=st, nw=nw, ur=ur, math_id=math_id, h=h) -> torch.Tensor:
                grid = (B, D // bd)
                variant_kernel[grid](u, A, h0, h, T, D, BLOCK_D=bd, STAGES=st, UNROLL=ur, MATH=math_id, num_warps=nw)
                return h

            log(f"{variant} bd={bd},st={st},nw={nw},ur={ur}", run)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(
        allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--out", type=Path, default=None, help="results file (default runs/bench/triton_sequential_bound_cuda.json)"
    )
    add_overwrite(p)
    args = p.parse_args()
    args.out = results_path(args.out, "triton_sequential_bound_cuda.json", args.overwrite, parser=p)
    if not torch.cuda.is_available():
        p.error("this benchmark needs a CUDA GPU; torch.cuda.is_available() is False (run it on a GPU machine)")
    device = torch.device("cuda")
    torch.manual_seed(0)
    bw = copy_bandwidth(device)
    print(f"copy bandwidth {bw:.0f} GB/s")
    rows = []
    for T in (8192, 65536):
        rows += sweep(T, bw, device)
        torch.cuda.empty_cache()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"gpu": torch.cuda.get_device_name(), "copy_GBps": bw, "rows": rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
