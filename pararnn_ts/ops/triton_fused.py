"""Fused Triton backend: ParaGRU / ParaLSTM Newton solves and adjoint backwards, one kernel each.

Each program owns one batch row and ``BLOCK_D`` channels and walks time in chunks of ``CHUNK_T``
steps: ``u`` is read once, Newton runs on the chunk in registers (``tl.associative_scan`` over
time), ``h`` is written once and the exact last state is carried to the next chunk. The backward
walks the chunks from the end, recomputes the Jacobians from ``h`` and ``u`` and reads ``u``,
``h``, ``grad_h`` once. Kernels live in :mod:`pararnn_ts.ops._triton_kernels` (imported on first
use, so this module imports without Triton). Runs on CUDA devices, and on CPU tensors under
``TRITON_INTERPRET=1`` (slow; for tests).

Every op also has an exact *sequential* kernel: one lane per (batch row, channel), time stepped in a
loop, the next steps' loads kept in flight. When there are enough independent chains ``B·D`` to fill
the GPU, one evaluation of ``f`` per step beats Newton's 3-4 passes (forward) and the adjoint is one
multiply-add per step (backward). ``algorithm="auto"`` (the default) picks by :func:`choose_algorithm`.

Every op takes keyword-only tuning arguments ``block_d``, ``chunk_t``, ``num_warps`` (powers of
two) and ``tl_scan`` (Newton), ``block_d``, ``stages``, ``num_warps``, ``unroll`` (sequential), ``fast_math``
(sequential forward); ``None`` uses the defaults of :func:`pararnn_ts.ops._triton_kernels.launch_config`
and ``sequential_config``.

The exact sequential forward is bound by the latency of its chain of exact ``exp`` and divisions per
step, not by memory. ``fast_math = True`` (module switch, off by default) has the sequential forward
kernels compute every σ and tanh with the GPU's one-instruction approximate ``tanh``: on an H100 at
B=16, D=1024, T=65536 the forward runs 1.56x (ParaGRU) and 1.42x (ParaLSTM) faster, near the copy
floor, and ``h`` moves by about 2e-5. The adjoint backward stays exact (it linearises the exact cell
around the ``h`` it is given).
"""

from __future__ import annotations

import contextlib
import functools
import os

import torch
from torch import Tensor

NAME = "triton"
#: the ops norm-clip the weights' rows themselves (``max_norm``; the backwards return the raw weights' gradients),
#: saving the clip's own launches and autograd ops
CLIPS_WEIGHTS = True
ALGORITHMS = ("auto", "newton", "sequential")
#: fewest independent chains ``B·D`` for which ``algorithm="auto"`` runs the sequential kernels. On an H100
#: (T = 512 and 8192) Newton was faster up to 4096 chains (e.g. B=4, D=1024) and the loop from 16384 on
SEQUENTIAL_MIN_CHAINS = 8192
#: what an op's ``algorithm=None`` means (set ``"newton"`` or ``"sequential"`` to hold every call to one)
default_algorithm = "auto"
#: what a sequential forward's ``fast_math`` defaults to: ``True`` lets it use the GPU's approximate tanh
fast_math = False
#: what makes a forward exact: a Newton solve that did not converge is recomputed by the sequential kernels
#: (exact, fast_math aside), not by the PyTorch loop: on an H100 at B=16, D=1024, T=512 the loop took 122 ms
#: and the sequential kernels 0.09 ms (kernel benchmark, session 14)
EXACT_OPTIONS = {"algorithm": "sequential"}


@functools.cache
def _import_error() -> str | None:
    try:
        import triton
        import triton.language as tl
    except Exception as exc:  # ImportError, or a broken install
        return f"triton not installed ({type(exc).__name__}: {exc}); pip install 'pararnn-ts[triton]'"
    if not hasattr(tl, "gather"):
        return f"triton {triton.__version__} is too old: the kernels need tl.gather (triton >= 3.2)"
    return None


def unavailable_reason(device: torch.device) -> str | None:
    """``None`` if the kernels can run on ``device``, else why not (never raises)."""
    try:
        reason = _import_error()
        if reason is not None:
            return reason
        device = torch.device(device)
        if device.type == "cuda":
            return None if torch.cuda.is_available() else "CUDA is not available"
        if device.type == "cpu":
            if os.environ.get("TRITON_INTERPRET") == "1":
                return None
            return "triton runs on CUDA devices (on CPU only under TRITON_INTERPRET=1, for tests)"
        return f"triton: unsupported device type {device.type!r}"
    except Exception as exc:
        return f"triton: {type(exc).__name__}: {exc}"


def _kernels():
    from . import _triton_kernels

    return _triton_kernels


@torch.compiler.disable
def launch(kernel, grid: tuple[int, ...], device: torch.device, *args, **meta) -> None:
    """``kernel[grid](*args, **meta)`` on ``device``, the device of the tensors in ``args``.

    Triton compiles for and launches on the *current* CUDA device, which need not be the tensors' (a
    model on ``cuda:1`` while ``cuda:0`` is current): it would then read another GPU's addresses.
    torch.compile runs the launch as it is, outside its graph: Dynamo's capture of user Triton kernels passes
    compiler options such as ``enable_fp_fusion`` to the kernel as arguments, and under the interpreter it
    traces the interpreter itself.
    """
    with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
        kernel[grid](*args, **meta)


def choose_algorithm(B: int, D: int, algorithm: str | None = None) -> str:
    """``"newton"`` or ``"sequential"`` for ``B`` rows of ``D`` channels; ``None``/``"auto"``: by ``B·D``."""
    algorithm = algorithm or default_algorithm
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm={algorithm!r} is not one of {ALGORITHMS}")
    if algorithm != "auto":
        return algorithm
    return "sequential" if B * D >= SEQUENTIAL_MIN_CHAINS else "newton"


def _choose_kernel(name: str, B: int, D: int, device: torch.device, tuning: dict) -> tuple[object, tuple, dict]:
    algorithm = choose_algorithm(B, D, tuning.pop("algorithm", None))
    if algorithm == "newton" and tuning.pop("fast_math", False):
        raise ValueError("fast_math applies to the sequential kernels only: pass algorithm='sequential'")
    if algorithm == "sequential" and name.endswith("_forward"):
        tuning.setdefault("fast_math", fast_math and device.type == "cuda")
    kernel, cfg = _kernel_config(name, algorithm, device.type == "cuda", tuple(sorted(tuning.items())))
    return kernel, (B, -(-D // cfg["BLOCK_D"])), cfg


@functools.lru_cache(maxsize=256)
def _kernel_config(name: str, algorithm: str, on_gpu: bool, tuning: tuple) -> tuple[object, dict]:
    """The kernel and meta-parameters of op ``name`` (cached: a short GPU solve is host-bound)."""
    k = _kernels()
    if algorithm == "sequential":
        cfg = k.sequential_config(name, on_gpu, **dict(tuning))
        name = name.replace("_", "_sequential_", 1)
    else:
        cfg = k.launch_config(name, on_gpu, **dict(tuning))
    return getattr(k, f"{name}_kernel"), cfg


def gru_forward(
    u: Tensor, A: Tensor, h0: Tensor, tol: float, max_iters: int, max_norm: float | None = None, **tuning
) -> tuple[Tensor, Tensor | None]:
    """``u`` ``(B, T, 3, D)``, ``A`` ``(3, D)``, ``h0`` ``(B, D)`` → ``h`` ``(B, T, D)``, stats ``(2,)`` or ``None``.

    ``stats = [worst normalised residual, most Newton updates]`` over all tiles and chunks; ``None``
    when the exact sequential kernel ran. ``max_norm``: the kernel clips each row of ``A`` to this norm
    first (as ``torch.renorm``; forward only, the backward takes the clipped weights).
    """
    B, T, _, D = u.shape
    h = torch.empty(B, T, D, device=u.device, dtype=torch.float32)
    if T == 0 or B == 0 or D == 0:
        return h, torch.zeros(2, device=u.device, dtype=torch.float32)
    kernel, grid, cfg = _choose_kernel("gru_forward", B, D, u.device, tuning)
    max_norm, clip = _clip_args(max_norm)
    if "STAGES" in cfg:
        launch(kernel, grid, u.device, u, A, h0, h, T, D, max_norm, CLIP=clip, **cfg)
        return h, None
    stats = torch.empty(grid[0] * grid[1], 2, device=u.device, dtype=torch.float32)
    launch(kernel, grid, u.device, u, A, h0, h, stats, T, D, float(tol), int(max_iters), max_norm, CLIP=clip, **cfg)
    return h, stats.amax(0)


def _clip_args(max_norm: float | None) -> tuple[float, bool]:
    """The forward kernels' ``(max_norm, CLIP)``."""
    return (0.0, False) if max_norm is None else (float(max_norm), True)


def gru_backward(
    grad_h: Tensor, u: Tensor, A: Tensor, h0: Tensor, h: Tensor, max_norm: float | None = None, **tuning
) -> tuple[Tensor, Tensor, Tensor]:
    """``grad_h``, ``h`` ``(B, T, D)`` → ``grad_u`` ``(B, T, 3, D)``, ``grad_A`` ``(3, D)``, ``grad_h0`` ``(B, D)``.

    ``max_norm``: as in :func:`gru_forward` (the forward ran with the same), and ``grad_A`` is then the
    gradient of the unclipped ``A``.
    """
    B, T, _, D = u.shape
    grad_u = torch.empty(B, T, 3, D, device=u.device, dtype=torch.float32)
    if T == 0 or B == 0 or D == 0:
        return grad_u, torch.zeros(3, D, device=u.device), torch.zeros(B, D, device=u.device)
    kernel, grid, cfg = _choose_kernel("gru_backward", B, D, u.device, tuning)
    grad_A = torch.empty(B, 3, D, device=u.device, dtype=torch.float32)
    grad_h0 = torch.empty(B, D, device=u.device, dtype=torch.float32)
    max_norm, clip = _clip_args(max_norm)
    launch(kernel, grid, u.device, grad_h, u, A, h0, h, grad_u, grad_A, grad_h0, T, D, max_norm, CLIP=clip, **cfg)
    return grad_u, _weight_grad(A, grad_A, max_norm, clip), grad_h0


def _weight_grad(weight: Tensor, partials: Tensor, max_norm: float, clip: bool) -> Tensor:
    """The gradient of ``weight`` ``(R, D)`` from a backward kernel's per-batch ``partials`` ``(B, R, D)`` (of the
    clipped rows when ``clip``): their sum, or with ``clip`` its chain rule through the clip (one launch)."""
    if not clip:
        return partials.sum(0)
    out = torch.empty_like(weight, dtype=torch.float32)
    k = _kernels()
    grid = (weight.shape[0],)
    launch(
        k.clip_rows_backward_kernel,
        grid,
        weight.device,
        weight,
        partials,
        out,
        *partials.shape,
        max_norm,
        **k.COMPILER_OPTIONS,
    )
    return out


def lstm_forward(
    u: Tensor, A: Tensor, C: Tensor, h0: Tensor, tol: float, max_iters: int, max_norm: float | None = None, **tuning
) -> tuple[Tensor, Tensor | None]:
    """``u`` ``(B, T, 3, D)``, ``A`` ``(3, D)``, ``C`` ``(2, D)``, ``h0`` ``(B, D, 2)`` → ``h`` ``(B, T, D, 2)``, stats.

    ``h[..., 0]`` is ``c``, ``h[..., 1]`` is ``h``; stats and ``max_norm`` (rows of ``A`` and ``C``) as in
    :func:`gru_forward`.
    """
    B, T, _, D = u.shape
    h = torch.empty(B, T, D, 2, device=u.device, dtype=torch.float32)
    if T == 0 or B == 0 or D == 0:
        return h, torch.zeros(2, device=u.device, dtype=torch.float32)
    kernel, grid, cfg = _choose_kernel("lstm_forward", B, D, u.device, tuning)
    max_norm, clip = _clip_args(max_norm)
    if "STAGES" in cfg:
        launch(kernel, grid, u.device, u, A, C, h0, h, T, D, max_norm, CLIP=clip, **cfg)
        return h, None
    stats = torch.empty(grid[0] * grid[1], 2, device=u.device, dtype=torch.float32)
    launch(kernel, grid, u.device, u, A, C, h0, h, stats, T, D, float(tol), int(max_iters), max_norm, CLIP=clip, **cfg)
    return h, stats.amax(0)


def lstm_backward(
    grad_h: Tensor, u: Tensor, A: Tensor, C: Tensor, h0: Tensor, h: Tensor, max_norm: float | None = None, **tuning
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``grad_h``, ``h`` ``(B, T, D, 2)`` → ``grad_u`` ``(B, T, 3, D)``, ``grad_A`` ``(3, D)``, ``grad_C`` ``(2, D)``,
    ``grad_h0`` ``(B, D, 2)``; ``max_norm`` as in :func:`gru_backward`."""
    B, T, _, D = u.shape
    grad_u = torch.empty(B, T, 3, D, device=u.device, dtype=torch.float32)
    if T == 0 or B == 0 or D == 0:
        zeros = functools.partial(torch.zeros, device=u.device, dtype=torch.float32)
        return grad_u, zeros(3, D), zeros(2, D), zeros(B, D, 2)
    kernel, grid, cfg = _choose_kernel("lstm_backward", B, D, u.device, tuning)
    grad_A = torch.empty(B, 3, D, device=u.device, dtype=torch.float32)
    grad_C = torch.empty(B, 2, D, device=u.device, dtype=torch.float32)
    grad_h0 = torch.empty(B, D, 2, device=u.device, dtype=torch.float32)
    max_norm, clip = _clip_args(max_norm)
    launch(
        kernel,
        grid,
        u.device,
        grad_h,
        u,
        A,
        C,
        h0,
        h,
        grad_u,
        grad_A,
        grad_C,
        grad_h0,
        T,
        D,
        max_norm,
        CLIP=clip,
        **cfg,
    )
    return grad_u, _weight_grad(A, grad_A, max_norm, clip), _weight_grad(C, grad_C, max_norm, clip), grad_h0
