"""Compile every Triton kernel for a CUDA GPU without one: what each launch costs in registers and memory.

The interpreter (``TRITON_INTERPRET=1``, the CI's Triton tests) runs the kernels' Python, never the GPU
compiler, so a kernel can pass every CPU test and still fail to compile for a GPU. This script compiles
each kernel the ops can launch on a GPU, at the launch configuration they use there (tiles, warps,
stages, FMA contraction), for every input dtype, ``max_norm`` clip and ``fast_math`` choice, down to a
cubin for ``--arch`` (default 90, the H100), with the ``ptxas`` Triton ships. It prints a table of the
registers, stack (local memory: spills) and shared memory per thread block that ``cuobjdump`` reports, and
whether the PTX uses the approximate ``tanh`` (only ``fast_math`` launches may), and writes it to
``--out``. Triton's cache makes a second run quick.

    python experiments/bench/triton_compile_check.py                 # every launch, sm_90
    python experiments/bench/triton_compile_check.py --only 'lstm_*' --arch 100

Writes ``runs/bench/triton_compile_sm<arch>.json`` (git-ignored; ``--out`` elsewhere) and refuses, before compiling
anything, when that file exists (``--overwrite`` replaces it). The committed
``experiments/bench/results/triton_compile_sm90.json`` (Triton 3.9) is regenerated, with Triton 3.9 installed, by

    python experiments/bench/triton_compile_check.py \\
        --out experiments/bench/results/triton_compile_sm90.json --overwrite

and ``triton_compile_sm90_triton3.6.json`` the same way with Triton 3.6 and that ``--out``.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from results_file import add_overwrite, results_path

OPS = ("gru_forward", "gru_backward", "lstm_forward", "lstm_backward")
SCANS = ("diagonal_scan", "block2_scan")
#: what the ops pass for ``u`` on a GPU: float32, or bf16/fp16 as they come under autocast
INPUT_DTYPES = ("fp32", "bf16", "fp16")
#: the scalars that are integers (the others are float32)
INTEGER_ARGS = frozenset({"T", "D", "NB", "R", "max_iters"})
#: pointers the ops pass in the input's dtype (the rest are float32)
INPUT_POINTERS = frozenset({"u_ptr", "j_ptr", "b_ptr"})


@dataclass(frozen=True)
class Launch:
    """One GPU launch variant: a kernel, its argument types and its meta-parameters."""

    label: str
    kernel: object
    dtype: str
    constexprs: dict
    options: dict

    def signature(self) -> dict[str, str]:
        """Triton's type of each argument of :attr:`kernel`: ``*<dtype>``, ``i32``, ``fp32`` or ``constexpr``."""
        types = {}
        for param in self.kernel.params:
            if param.is_constexpr:
                types[param.name] = "constexpr"
            elif param.name.endswith("_ptr"):
                types[param.name] = "*" + (self.dtype if param.name in INPUT_POINTERS else "fp32")
            else:
                types[param.name] = "i32" if param.name in INTEGER_ARGS else "fp32"
        return types


def launches() -> Iterator[Launch]:
    """Every launch the GPU ops can make: Newton and sequential kernels of each op, the scans, the clip's chain
    rule; each input dtype, clip on and off, and ``fast_math`` on and off for the sequential forwards."""
    from pararnn_ts.ops import _triton_kernels as k
    from pararnn_ts.ops import triton_fused

    for op in OPS:
        for algorithm in ("newton", "sequential"):
            fast_choices = (False, True) if algorithm == "sequential" and op.endswith("_forward") else (None,)
            for fast in fast_choices:
                tuning = () if fast is None else (("fast_math", fast),)
                kernel, cfg = triton_fused._kernel_config(op, algorithm, True, tuning)
                for dtype in INPUT_DTYPES:
                    for clip in (True, False):
                        label = f"{op}/{algorithm}{'/fast' if fast else ''}/{dtype}/{'clip' if clip else 'noclip'}"
                        yield _launch(label, kernel, dtype, {**cfg, "CLIP": clip})
    for scan in SCANS:
        cfg = k.launch_config(scan, True)
        for dtype in ("fp32", "bf16"):
            for reverse in (False, True):
                label = f"{scan}/{dtype}/{'reverse' if reverse else 'forward'}"
                yield _launch(label, getattr(k, f"{scan}_kernel"), dtype, {**cfg, "REVERSE": reverse})
    yield _launch("clip_rows_backward", k.clip_rows_backward_kernel, "fp32", dict(k.COMPILER_OPTIONS))


def _launch(label: str, kernel: object, dtype: str, cfg: dict) -> Launch:
    """Split a launch's keyword arguments into the kernel's constexprs and the compiler's options."""
    from pararnn_ts.ops._triton_kernels import COMPILER_OPTIONS

    options = {key: cfg[key] for key in ("num_warps", *COMPILER_OPTIONS) if key in cfg}
    constexprs = {key: value for key, value in cfg.items() if key not in options}
    return Launch(label, kernel, dtype, constexprs, options)


def compile_launch(launch: Launch, arch: int) -> dict:
    """Compile ``launch`` to a cubin for ``sm_<arch>``; its resources, whether its PTX uses ``tanh.approx``."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    source = ASTSource(fn=launch.kernel, signature=launch.signature(), constexprs=launch.constexprs)
    compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options=launch.options)
    row = {"launch": launch.label, "kernel": launch.kernel.__name__, **launch.options}
    row.update(resources(compiled.asm["cubin"]))
    row["tanh_approx"] = "tanh.approx.f32" in compiled.asm["ptx"]
    row["fma"] = len(re.findall(r"\bfma\.rn\.f32\b", compiled.asm["ptx"]))
    return row


def resources(cubin: bytes) -> dict:
    """``{"registers", "stack_bytes", "shared_bytes"}`` of a one-kernel cubin, from ``cuobjdump``."""
    from triton import knobs

    with tempfile.NamedTemporaryFile(suffix=".cubin") as file:
        file.write(cubin)
        file.flush()
        command = [knobs.nvidia.cuobjdump.path, "--dump-resource-usage", file.name]
        text = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    found = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+)", text)
    if found is None:
        raise RuntimeError(f"cuobjdump printed no resource usage:\n{text}")
    registers, stack, shared = map(int, found.groups())
    return {"registers": registers, "stack_bytes": stack, "shared_bytes": shared}


def table(rows: list[dict]) -> str:
    lines = [
        "| launch | warps | registers | stack (B) | shared (B) | fma | tanh.approx |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [r["launch"], r.get("num_warps", "-"), r["registers"], r["stack_bytes"], r["shared_bytes"], r["fma"]]
        cells.append("yes" if r["tanh_approx"] else "no")
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(
        allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--arch", type=int, default=90, help="compute capability × 10 (90: H100, 100: B200)")
    p.add_argument("--only", nargs="+", default=["*"], help="launches matching these globs, e.g. 'gru_*/fp32/*'")
    p.add_argument(
        "--out", type=Path, default=None, help="results file (default runs/bench/triton_compile_sm<arch>.json)"
    )
    add_overwrite(p)
    args = p.parse_args()
    out = results_path(args.out, f"triton_compile_sm{args.arch}.json", args.overwrite, parser=p)
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise SystemExit("TRITON_INTERPRET=1 is set: the kernels would not be compiled; unset it to run this check")
    import triton

    chosen = [launch for launch in launches() if any(fnmatch.fnmatchcase(launch.label, g) for g in args.only)]
    if not chosen:
        raise SystemExit(f"--only {args.only} matches no launch; labels look like 'gru_forward/newton/fp32/clip'")
    rows = []
    for launch in chosen:
        rows.append(compile_launch(launch, args.arch))
        print(f"  {launch.label}: {rows[-1]['registers']} registers", file=sys.stderr, flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    machine = {"arch": args.arch, "triton": triton.__version__}
    out.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
    print(f"\nsm_{args.arch}, triton {triton.__version__}\n")
    print(table(rows))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
