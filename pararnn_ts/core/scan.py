"""Work-efficient parallel solvers of linear recurrences ``x_t = J_t x_{t-1} + b_t``.

Time is dimension 1: ``J`` is ``(B, T, *jacobian_shape)`` and ``b`` is ``(B, T, *state_shape)``.
The solver is odd–even (cyclic) reduction: each level fuses neighbouring pairs of steps into one
step, recurses on half the length, then fills in the other half. Total work is O(T) (T + T/2 +
T/4 + ...) and depth O(log T), unlike Hillis–Steele doubling, which does O(T log T) work.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..ops.scans import native_scan
from .structure import Block, Diagonal, Structure


def linear_scan(J: Tensor, b: Tensor, structure: Structure, x0: Tensor | None = None) -> Tensor:
    """Solve ``x_t = J_t x_{t-1} + b_t`` for all ``t`` with ``x_{-1} = x0`` (zero if ``None``).

    Args:
        J: ``(B, T, *jacobian_shape)`` transition of each step.
        b: ``(B, T, *state_shape)`` forcing of each step.
        structure: the layout of ``J`` (:class:`~pararnn_ts.core.structure.Diagonal`, ...).
        x0: ``(B, *state_shape)`` state before the first step.

    Returns:
        ``x``: ``(B, T, *state_shape)``.
    """
    kind = _native_kind(J, b, structure)
    if kind is not None and (x := native_scan(kind, J, b, x0)) is not None:
        return x
    if x0 is not None:
        b = torch.cat([b[:, :1] + structure.apply(J[:, :1], x0.unsqueeze(1)), b[:, 1:]], dim=1)
    return _solve(J, b, structure)


def reverse_linear_scan(J: Tensor, g: Tensor, structure: Structure) -> Tensor:
    """Solve the adjoint recurrence ``λ_t = g_t + J_{t+1}ᵀ λ_{t+1}`` with ``λ_{T-1} = g_{T-1}``.

    ``J[:, t]`` is the forward Jacobian of step ``t`` (``∂h_t/∂h_{t-1}``), exactly as the forward
    scan takes it; ``J[:, 0]`` is not used.

    Returns:
        ``λ``: ``(B, T, *state_shape)``.
    """
    kind = _native_kind(J, g, structure)
    if kind is not None:
        J_next_T = torch.cat([structure.transpose(J[:, 1:]), torch.zeros_like(J[:, :1])], dim=1)
        if (adjoint := native_scan(kind, J_next_T, g, reverse=True)) is not None:
            return adjoint
    # Reversed time s = T-1-t: λ_s = g_s + Jᵀ_{T-s} λ_{s-1}; the transition at s is J_{t+1}ᵀ. One gather
    # builds it (order 0, T-1, ..., 1; step 0's transition meets λ_{-1} = 0, so it is zeroed, not read).
    order = torch.arange(g.shape[1], 0, -1, device=g.device) % g.shape[1]
    J_rev = structure.transpose(J).index_select(1, order)
    J_rev[:, :1] = 0
    return _solve(J_rev, g.flip(1), structure).flip(1)


def _native_kind(J: Tensor, b: Tensor, structure: Structure) -> str | None:
    """The native scan for these tensors (float32 CUDA, not empty, no autograd), if one exists: for the standard
    algebras only (a subclass of :class:`Diagonal` or :class:`Block` with its own keeps the PyTorch scan)."""
    if b.numel() == 0 or not (b.is_cuda and b.dtype == J.dtype == torch.float32) or J.requires_grad or b.requires_grad:
        return None
    if structure.multiplies_as(Diagonal):
        return "diagonal"
    return "block2" if structure.multiplies_as(Block) and structure.k == 2 else None


def _solve(J: Tensor, b: Tensor, structure: Structure) -> Tensor:
    """Odd–even reduction in the layout the structure computes fastest in (:meth:`Structure.scan_layout`)."""
    J, b, inner, back = structure.scan_layout(J, b)
    return back(_odd_even(J, b, inner))


def _odd_even(J: Tensor, b: Tensor, structure: Structure) -> Tensor:
    T = b.shape[1]
    if T <= 1:
        return b
    n = T // 2  # number of (even, odd) pairs
    J_even, J_odd = J[:, 0 : 2 * n : 2], J[:, 1 : 2 * n : 2]
    b_even, b_odd = b[:, 0 : 2 * n : 2], b[:, 1 : 2 * n : 2]
    # Fusing steps 2i and 2i+1: x_{2i+1} = (J_{2i+1} J_{2i}) x_{2i-1} + (J_{2i+1} b_{2i} + b_{2i+1}).
    x_odd = _odd_even(
        structure.compose(J_odd, J_even),
        structure.apply(J_odd, b_even) + b_odd,
        structure,
    )
    # Even steps from their odd predecessors: x_{2i} = J_{2i} x_{2i-1} + b_{2i}, x_{-1} = 0.
    n_even = T - n
    x_before_even = torch.cat([torch.zeros_like(x_odd[:, :1]), x_odd[:, : n_even - 1]], dim=1)
    x_even = structure.apply(J[:, 0::2], x_before_even) + b[:, 0::2]
    x = torch.empty_like(b)
    x[:, 0::2] = x_even
    x[:, 1::2] = x_odd
    return x
