"""Triton linear-recurrence scans for the ``parallel`` mode on GPU (CPU only under ``TRITON_INTERPRET=1``).

``x_t = J_t x_{t-1} + b_t`` (or ``x_t = J_t x_{t+1} + b_t`` with ``reverse=True``) for any ``T``:
one program per ``(batch, BLOCK_D channels)`` scans time chunks of ``CHUNK_T`` steps in
registers and carries the exact state between chunks. Inputs of any float dtype, accumulation
and output in float32. Tuning keywords as in :mod:`pararnn_ts.ops.triton_fused`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .triton_fused import launch


def _scan(name: str, J: Tensor, b: Tensor, x0: Tensor | None, reverse: bool, tuning: dict) -> Tensor:
    from . import _triton_kernels as k

    B, T, D = b.shape[:3]
    x = torch.empty(b.shape, device=b.device, dtype=torch.float32)
    if T == 0 or B == 0 or D == 0:
        return x
    x0 = torch.zeros((B, *b.shape[2:]), device=b.device, dtype=torch.float32) if x0 is None else x0.contiguous()
    cfg = k.launch_config(name, b.device.type == "cuda", **tuning)
    grid = (B, -(-D // cfg["BLOCK_D"]))
    kernel = getattr(k, f"{name}_kernel")
    launch(kernel, grid, b.device, J.contiguous(), b.contiguous(), x0, x, T, D, REVERSE=bool(reverse), **cfg)
    return x


def diagonal_scan(J: Tensor, b: Tensor, x0: Tensor | None = None, reverse: bool = False, **tuning) -> Tensor:
    """``J``, ``b`` ``(B, T, D)``, ``x0`` ``(B, D)`` (zero if ``None``) → ``x`` ``(B, T, D)`` float32.

    Forward: ``x_t = J_t x_{t-1} + b_t``, ``x_{-1} = x0``; ``reverse``: ``x_t = J_t x_{t+1} + b_t``,
    ``x_T = x0``.
    """
    return _scan("diagonal_scan", J, b, x0, reverse, tuning)


def block2_scan(J: Tensor, b: Tensor, x0: Tensor | None = None, reverse: bool = False, **tuning) -> Tensor:
    """``J`` ``(B, T, D, 2, 2)``, ``b`` ``(B, T, D, 2)``, ``x0`` ``(B, D, 2)`` → ``x`` ``(B, T, D, 2)`` float32.

    Same recurrences as :func:`diagonal_scan` with per-channel 2×2 blocks ``J_t`` (``x_t = J_t x + b_t``).
    """
    return _scan("block2_scan", J, b, x0, reverse, tuning)
