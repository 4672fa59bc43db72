"""Newton's method on the whole trajectory ``F(h)_t = h_t − f(h_{t-1}, u_t) = 0``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .scan import linear_scan

if TYPE_CHECKING:
    from .cell import ParaCell


class NewtonConvergenceError(RuntimeError):
    """Raised by ``fallback="raise"`` when Newton does not reach ``tol`` within ``max_iters``."""


@dataclass
class SolverStats:
    """What the last solve did; read it from ``cell.last_stats``.

    Attributes:
        mode: the path that ran (``"sequential"``, ``"parallel"`` or ``"fused"``).
        backend: what computed it: ``"pytorch"`` for the sequential and parallel modes, else the
            fused backend (``"cpu"``, ``"triton"`` or ``"cuda"``).
        algorithm: ``"newton"`` or ``"sequential"`` (the exact loop: the sequential mode, the fused CPU
            kernel, or the Triton sequential kernels, which Triton picks when ``B·D`` fills the GPU).
        iterations: Newton updates applied (0 for the sequential loop).
        residual: final ``max_t ‖h_t − f(h_{t-1}, u_t)‖_∞ / max(1, ‖h‖_∞)`` of the Newton iterate.
        converged: whether that residual reached ``tol``.
        fell_back: whether the returned trajectory was recomputed exactly after Newton did not converge (by
            the sequential loop, or in ``fused`` mode by the backend's sequential kernels where it has them).
        chunks: time chunks solved one after the other (``iterations`` and ``residual`` are then
            the worst over chunks, ``fell_back`` is true if any chunk fell back).
        total_iterations: Newton updates summed over chunks (the work done).
    """

    mode: str
    backend: str = "pytorch"
    algorithm: str = "newton"
    iterations: int = 0
    residual: float = 0.0
    converged: bool = True
    fell_back: bool = False
    chunks: int = 1
    total_iterations: int | None = None

    def __post_init__(self) -> None:
        if self.total_iterations is None:
            self.total_iterations = self.iterations

    @staticmethod
    def merge(parts: list[SolverStats]) -> SolverStats:
        """The statistics of a solve made of consecutive chunks."""
        return SolverStats(
            mode=parts[0].mode,
            backend=parts[0].backend,
            algorithm=parts[0].algorithm,
            iterations=max(p.iterations for p in parts),
            residual=max(p.residual for p in parts),
            converged=all(p.converged for p in parts),
            fell_back=any(p.fell_back for p in parts),
            chunks=len(parts),
            total_iterations=sum(p.total_iterations for p in parts),
        )


def default_tol(dtype: torch.dtype) -> float:
    """Residual tolerance a few rounding errors above the dtype's floor (32 ε)."""
    return 32 * torch.finfo(dtype).eps


def shift_right(h: Tensor, h0: Tensor) -> Tensor:
    """``h_prev``: the trajectory ``(B, T, *S)`` delayed by one step, starting at ``h0`` ``(B, *S)``."""
    return torch.cat([h0.unsqueeze(1), h[:, :-1]], dim=1)


def newton_solve(cell: ParaCell, u: Tensor, h0: Tensor, tol: float, max_iters: int) -> tuple[Tensor, SolverStats]:
    """Solve the recurrence for every step at once.

    Args:
        cell: provides ``recurrence``, ``jacobian`` and ``structure``.
        u: ``(B, T, ...)`` projected inputs.
        h0: ``(B, *S)`` initial state.

    Returns:
        ``h`` ``(B, T, *S)`` (the last iterate) and the solver statistics.
    """
    T = u.shape[1]
    h = cell.recurrence(h0.unsqueeze(1).expand(-1, T, *h0.shape[1:]), u)  # guess f(h_init, u_t)
    iterations = 0
    while True:
        f_h, J = cell.jacobian(shift_right(h, h0), u)
        r = f_h - h
        residual = (r.abs().amax() / h.abs().amax().clamp_min(1)).item()
        converged = residual <= tol  # False for NaN
        if converged or iterations == max_iters or residual != residual:
            return h, SolverStats("parallel", iterations=iterations, residual=residual, converged=converged)
        h = h + linear_scan(J, r, cell.structure)
        iterations += 1
