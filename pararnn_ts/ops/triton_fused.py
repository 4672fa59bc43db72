"""Fused Triton backend: ParaGRU / ParaLSTM Newton solves and adjoint backwards, one kernel each.

Each program owns one batch row and ``BLOCK_D`` channels and walks time in chunks of ``CHUNK_T``
steps: ``u`` is read once, Newton runs on the chunk in registers (``tl.associative_scan`` over
time), ``h`` is written once and the exact last state is carried to the next chunk. The backward
walks the chunks from the end, recomputes the Jacobians from ``h`` and ``u`` and reads ``u``,
``h``, ``grad_h`` once. Kernels live in :mod:`pararnn_ts.ops._triton_kernels` (imported on first
use, so this module imports without Triton). Runs on CUDA devices, and on CPU tensors under
``TRITON_INTERPRET=1`` (slow; for tests).

Every op takes keyword-only tuning arguments ``block_d``, ``chunk_t``, ``num_warps`` (powers of
two) and ``tl_scan``; ``None`` uses the defaults of
:func:`pararnn_ts.ops._triton_kernels.launch_config`.
"""

from __future__ import annotations

import functools
import os

import torch
from torch import Tensor

NAME = "triton"


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


def _launch(name: str, B: int, D: int, device: torch.device, tuning: dict) -> tuple[object, tuple[int, int], dict]:
    k = _kernels()
    cfg = k.launch_config(name, device.type == "cuda", **tuning)
    return k, (B, -(-D // cfg["BLOCK_D"])), cfg


def gru_forward(u: Tensor, A: Tensor, h0: Tensor, tol: float, max_iters: int, **tuning) -> tuple[Tensor, Tensor | None]:
    """``u`` ``(B, T, 3, D)``, ``A`` ``(3, D)``, ``h0`` ``(B, D)`` → ``h`` ``(B, T, D)``, stats ``(2,)``.

    ``stats = [worst normalised residual, most Newton updates]`` over all tiles and chunks.
    """
    B, T, _, D = u.shape
    h = torch.empty(B, T, D, device=u.device, dtype=torch.float32)
    if T == 0 or B == 0 or D == 0:
        return h, torch.zeros(2, device=u.device, dtype=torch.float32)
    k, grid, cfg = _launch("gru_forward", B, D, u.device, tuning)
    stats = torch.empty(grid[0] * grid[1], 2, device=u.device, dtype=torch.float32)
    k.gru_forward_kernel[grid](u, A, h0, h, stats, T, D, float(tol), int(max_iters), **cfg)
    return h, stats.amax(0)


def gru_backward(
    grad_h: Tensor, u: Tensor, A: Tensor, h0: Tensor, h: Tensor, **tuning
) -> tuple[Tensor, Tensor, Tensor]:
    """``grad_h``, ``h`` ``(B, T, D)`` → ``grad_u`` ``(B, T, 3, D)``, ``grad_A`` ``(3, D)``, ``grad_h0`` ``(B, D)``."""
    B, T, _, D = u.shape
    grad_u = torch.empty(B, T, 3, D, device=u.device, dtype=torch.float32)
    if T == 0 or B == 0 or D == 0:
        return grad_u, torch.zeros(3, D, device=u.device), torch.zeros(B, D, device=u.device)
    k, grid, cfg = _launch("gru_backward", B, D, u.device, tuning)
    grad_A = torch.empty(B, 3, D, device=u.device, dtype=torch.float32)
    grad_h0 = torch.empty(B, D, device=u.device, dtype=torch.float32)
    k.gru_backward_kernel[grid](grad_h, u, A, h0, h, grad_u, grad_A, grad_h0, T, D, **cfg)
    return grad_u, grad_A.sum(0), grad_h0


def lstm_forward(
    u: Tensor, A: Tensor, C: Tensor, h0: Tensor, tol: float, max_iters: int, **tuning
) -> tuple[Tensor, Tensor | None]:
    """``u`` ``(B, T, 3, D)``, ``A`` ``(3, D)``, ``C`` ``(2, D)``, ``h0`` ``(B, D, 2)`` → ``h`` ``(B, T, D, 2)``, stats.

    ``h[..., 0]`` is ``c``, ``h[..., 1]`` is ``h``; stats as in :func:`gru_forward`.
    """
    B, T, _, D = u.shape
    h = torch.empty(B, T, D, 2, device=u.device, dtype=torch.float32)
    if T == 0 or B == 0 or D == 0:
        return h, torch.zeros(2, device=u.device, dtype=torch.float32)
    k, grid, cfg = _launch("lstm_forward", B, D, u.device, tuning)
    stats = torch.empty(grid[0] * grid[1], 2, device=u.device, dtype=torch.float32)
    k.lstm_forward_kernel[grid](u, A, C, h0, h, stats, T, D, float(tol), int(max_iters), **cfg)
    return h, stats.amax(0)


def lstm_backward(
    grad_h: Tensor, u: Tensor, A: Tensor, C: Tensor, h0: Tensor, h: Tensor, **tuning
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``grad_h``, ``h`` ``(B, T, D, 2)`` → ``grad_u`` ``(B, T, 3, D)``, ``grad_A`` ``(3, D)``, ``grad_C`` ``(2, D)``,
    ``grad_h0`` ``(B, D, 2)``."""
    B, T, _, D = u.shape
    grad_u = torch.empty(B, T, 3, D, device=u.device, dtype=torch.float32)
    if T == 0 or B == 0 or D == 0:
        zeros = functools.partial(torch.zeros, device=u.device, dtype=torch.float32)
        return grad_u, zeros(3, D), zeros(2, D), zeros(B, D, 2)
    k, grid, cfg = _launch("lstm_backward", B, D, u.device, tuning)
    grad_A = torch.empty(B, 3, D, device=u.device, dtype=torch.float32)
    grad_C = torch.empty(B, 2, D, device=u.device, dtype=torch.float32)
    grad_h0 = torch.empty(B, D, 2, device=u.device, dtype=torch.float32)
    k.lstm_backward_kernel[grid](grad_h, u, A, C, h0, h, grad_u, grad_A, grad_C, grad_h0, T, D, **cfg)
    return grad_u, grad_A.sum(0), grad_C.sum(0), grad_h0
