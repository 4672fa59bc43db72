"""Native linear-recurrence scans for the ``parallel`` mode on GPU (CUDA C++ or Triton)."""

from __future__ import annotations

import importlib

from torch import Tensor

from .fused import AUTO_ORDER, unavailable_reason

_SCAN_MODULES = {"cuda": "cuda", "triton": "triton_scan"}
SCAN_KINDS = ("diagonal", "block2")


def native_scan(kind: str, J: Tensor, b: Tensor, x0: Tensor | None = None, reverse: bool = False) -> Tensor | None:
    """``x`` from the first GPU backend that can scan, or ``None`` (then use the PyTorch scan).

    ``kind="diagonal"``: ``J``, ``b`` ``(B, T, D)``; ``kind="block2"``: ``J`` ``(B, T, D, 2, 2)``,
    ``b`` ``(B, T, D, 2)``. Forward ``x_t = J_t x_{t-1} + b_t`` from ``x0``; ``reverse=True``:
    ``x_t = J_t x_{t+1} + b_t`` from ``x0`` after the last step. Float32 CUDA tensors, no autograd.
    """
    if kind not in SCAN_KINDS:
        raise ValueError(f"kind={kind!r} is not one of {SCAN_KINDS}")
    for name in AUTO_ORDER["cuda"]:
        if unavailable_reason(name, b.device) is None:
            module = importlib.import_module(f"{__package__}.{_SCAN_MODULES[name]}")
            return getattr(module, f"{kind}_scan")(J.contiguous(), b.contiguous(), x0=x0, reverse=reverse)
    return None
