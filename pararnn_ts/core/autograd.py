"""The parallel solve as a ``torch.autograd.Function``.

Forward: Newton iterations (no graph). Backward (paper eq. 2.6): the adjoint
``λ_t = g_t + J_{t+1}ᵀ λ_{t+1}`` by one reverse linear scan, then one time-parallel
vector–Jacobian product of ``f`` at the solved trajectory gives the gradients of ``u``, ``h0``
and every parameter of the cell. Nothing is differentiated through the Newton iterations. That product's part in
``h_prev`` checks the adjoint, hence the declared Jacobian (:func:`~pararnn_ts.core.contract.check_adjoint`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..notices import warn
from .checks import all_finite, autocast_enabled, first_order_only, named_weights
from .contract import check_adjoint
from .newton import NewtonConvergenceError, SolverStats, newton_solve, shift_right
from .scan import reverse_linear_scan

if TYPE_CHECKING:
    from .cell import ParaCell


def sequential_solve(cell: ParaCell, u: Tensor, h0: Tensor) -> Tensor:
    """The plain loop ``h_t = f(h_{t-1}, u_t)``: ``(B, T, ...)``, ``(B, *S)`` → ``(B, T, *S)``, at the cell's
    parameters and buffers widened to ``u``'s dtype (:func:`widened`)."""
    return call_with_parameters(cell, widened(cell, u.dtype), _loop, u, h0)


def widened(cell: ParaCell, dtype: torch.dtype, named: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
    """One copy in ``dtype`` of each of the cell's floating parameters and buffers narrower than it (bf16 weights in
    a float32 solve), to read them through (:func:`call_with_parameters`): the recurrence computes in the solve
    dtype (a matmul takes one dtype), and their per-step gradients add up in it, not in theirs. ``named``: the
    tensors to read instead of the cell's own (by name), widened too where narrower."""
    tensors = named_weights(cell) | dict(cell.named_buffers()) | (named or {})
    return (named or {}) | {n: t.to(dtype) for n, t in tensors.items() if narrower(t.dtype, dtype)}


def narrower(dtype: torch.dtype, than: torch.dtype) -> bool:
    """Whether floating ``dtype`` is narrower than ``than`` (bf16 than float32)."""
    return dtype.is_floating_point and dtype != than and torch.promote_types(dtype, than) == than


def call_with_parameters(cell: ParaCell, parameters: dict[str, Tensor], fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(cell, *args)`` with the cell's parameters named in ``parameters`` read as those tensors instead."""
    if not parameters:
        return fn(cell, *args)
    swapped = {f"cell.{name}": p for name, p in parameters.items()}
    return torch.func.functional_call(_Bound(cell, fn), swapped, args, strict=False)


class _Bound(torch.nn.Module):
    """``fn(cell, *args)`` as a module's ``forward``, so that ``functional_call`` can swap ``cell``'s parameters."""

    def __init__(self, cell: ParaCell, fn: Callable[..., Any]) -> None:
        super().__init__()
        self.cell, self.fn = cell, fn

    def forward(self, *args: Any) -> Any:
        return self.fn(self.cell, *args)


def _loop(cell: ParaCell, u: Tensor, h0: Tensor) -> Tensor:
    h = h0
    trajectory = []
    # unbind, not u[:, t]: one backward node for all steps instead of a full-size gradient per step.
    for u_t in u.unbind(1):
        h = cell.recurrence(h, u_t)
        trajectory.append(h)
    return torch.stack(trajectory, dim=1)


def solve_with_policy(cell: ParaCell, u: Tensor, h0: Tensor) -> tuple[Tensor, SolverStats]:
    """Newton, then the cell's non-convergence policy (``fallback``); runs without a graph."""
    tol = cell.resolved_tol(u.dtype)
    h, stats = call_with_parameters(cell, widened(cell, u.dtype), newton_solve, u, h0, tol, cell.max_iters)
    return settle(cell, stats, u, h, lambda: sequential_solve(cell, u, h0)), stats


def settle(cell: ParaCell, stats: SolverStats, u: Tensor, h: Tensor, exact: Callable[[], Tensor]) -> Tensor:
    """The trajectory to return for a Newton solve ``h`` ``(B, T, *S)`` of ``u`` ``(B, T, ...)``, by the cell's
    ``fallback`` policy when it did not converge: the exact one, ``exact()`` (``"sequential"``: ``stats.fell_back``
    set, and a warning the first time for this cell), the iterate (``"warn"``: a warning the first time), or a
    :class:`NewtonConvergenceError` (``"raise"``).

    A NaN or inf residual whose exact trajectory has NaN or inf too is not Newton's doing (a NaN parameter, a
    recurrence outside its domain): the exact trajectory is returned whatever the policy, without a warning, for the
    caller's check to say where and why.
    """
    if stats.converged:
        return h
    exact_h = None
    if not math.isfinite(stats.residual):
        exact_h = exact()
        if not all_finite(exact_h):
            stats.fell_back = True
            return exact_h
    tol = cell.resolved_tol(torch.promote_types(u.dtype, torch.float32))
    message = (
        f"{type(cell).__name__}: Newton did not converge in {stats.iterations} iterations (residual "
        f"{stats.residual:.3g} > tol {tol:.3g} in a solve of {u.shape[1]} steps, {stats.mode} mode, {stats.backend})"
    )
    if cell.fallback == "raise":
        raise NewtonConvergenceError(message + "; raise max_iters or tol, or use fallback='sequential'")
    once = "Warned once per cell; cell.last_stats tells each solve (a chunk's, where chunk_size splits the sequence)"
    if cell.fallback == "warn":
        warn_once_per_cell(cell, f"{message}; returning the last Newton iterate. {once}")
        return h
    stats.fell_back = True
    warn_once_per_cell(
        cell,
        message + "; the trajectory was recomputed exactly by a sequential solve (fallback='sequential'), "
        "without the parallel speed-up. Likely causes: a Jacobian that does not match the declared structure, "
        "a non-deterministic recurrence (dropout or sampling inside it), or a genuinely hard (chaotic or "
        "near-bistable) recurrence: raise max_iters, or use mode='sequential'; fallback='warn' returns the "
        f"Newton iterate instead, fallback='raise' raises. {once}",
    )
    return exact() if exact_h is None else exact_h


def warn_once_per_cell(cell: ParaCell, message: str) -> None:
    """Warn ``message`` unless a solve of ``cell`` has warned already."""
    if not cell._fallback_warned:
        cell._fallback_warned = True
        warn(message)


def parallel_solve(cell: ParaCell, u: Tensor, h0: Tensor, chunk_size: int | None) -> tuple[Tensor, SolverStats]:
    """Newton over consecutive time chunks of ``chunk_size`` steps (all at once if ``None``).

    Each chunk starts from the exact final state of the previous one, so the result is the same
    trajectory; chunks that fit in cache avoid streaming every Newton pass through main memory,
    and autograd runs the adjoint backward chunk by chunk in reverse.
    """
    chunks = [u] if chunk_size is None or chunk_size >= u.shape[1] else u.split(chunk_size, dim=1)
    params = tuple(named_weights(cell).values())  # a DataParallel replica's too
    trajectory, stats = [], []
    for u_chunk in chunks:
        h = NewtonSolve.apply(cell, stats, u_chunk, h0, *params)
        trajectory.append(h)
        h0 = h[:, -1]
    return (trajectory[0] if len(trajectory) == 1 else torch.cat(trajectory, dim=1)), SolverStats.merge(stats)


class NewtonSolve(torch.autograd.Function):
    """``h = NewtonSolve.apply(cell, stats_out, u, h0, *params)`` with ``h`` ``(B, T, *S)``.

    ``params`` are the cell's parameters, passed only so that autograd routes their gradients;
    ``stats_out`` is a list to which the forward appends its :class:`SolverStats`.
    """

    @staticmethod
    def forward(ctx, cell: ParaCell, stats_out: list, u: Tensor, h0: Tensor, *params: Tensor) -> Tensor:
        h, stats = solve_with_policy(cell, u, h0)
        stats_out.append(stats)
        ctx.cell, ctx.parameter_names = cell, list(named_weights(cell))
        # the buffers as the forward read them (functional_call's): references, not saved tensors, since those of
        # submodules (a BatchNorm's statistics in project, spectral_norm's vectors) may change before the backward;
        # the cell's own are refused if they did (check_buffer_versions)
        ctx.buffers = dict(cell.named_buffers())
        ctx.buffer_versions = {name: b._version for name, b in ctx.buffers.items() if "." not in name}
        ctx.save_for_backward(u, h0, h, *params)  # autograd refuses a backward after they change in place
        return h

    @staticmethod
    @first_order_only("parallel")
    def backward(ctx, grad_h: Tensor):
        cell: ParaCell = ctx.cell
        check_buffer_versions(cell, ctx.buffers, ctx.buffer_versions)
        u, h0, h, *params = ctx.saved_tensors
        needs_u, needs_h0 = ctx.needs_input_grad[2:4]
        needs_params = ctx.needs_input_grad[4:]
        # Differentiate at the parameters and buffers the forward ran with: under functional_call they are not the
        # cell's own.
        live, live_buffers = named_weights(cell), dict(cell.named_buffers())
        swapped = {
            name: p.detach().requires_grad_(needed)
            for name, p, needed in zip(ctx.parameter_names, params, needs_params, strict=True)
            if live.get(name) is not p
        }
        swapped |= {name: b for name, b in ctx.buffers.items() if live_buffers.get(name) is not b}
        params = [swapped.get(name, p) for name, p in zip(ctx.parameter_names, params, strict=True)]
        h_prev = shift_right(h, h0)
        check = cell.check_contract  # the part in h_prev of the product below checks the adjoint
        device = h.device.type  # as the forward: autocast off (a backward called inside an autocast region)
        with torch.autocast(device, enabled=False) if autocast_enabled(device) else nullcontext():
            with torch.enable_grad():  # the narrow ones widened as the forward read them, in the graph of theirs
                reads = widened(cell, u.dtype, swapped)
            with torch.no_grad():
                _, J = call_with_parameters(cell, reads, _jacobian, h_prev, u)
                adjoint = reverse_linear_scan(J, grad_h, cell.structure)
            params = [p for p, needed in zip(params, needs_params, strict=True) if needed]
            with torch.enable_grad():
                h_prev = h_prev.detach().requires_grad_(needs_h0 or check)
                u = u.detach().requires_grad_(needs_u)
                inputs = [x for x, needed in ((h_prev, h_prev.requires_grad), (u, needs_u)) if needed] + params
                out = call_with_parameters(cell, reads, apply_recurrence, h_prev, u)
                grads = list(torch.autograd.grad(out, inputs, adjoint, allow_unused=True)) if inputs else []
        grad_h_prev = grads.pop(0) if h_prev.requires_grad else None
        if check:
            check_adjoint(cell, grad_h_prev, adjoint, grad_h)
        grad_h0 = grad_h_prev[:, 0] if needs_h0 and grad_h_prev is not None else None
        grad_u = grads.pop(0) if needs_u else None
        grad_params = [grads.pop(0) if needed else None for needed in needs_params]
        return (None, None, grad_u, grad_h0, *grad_params)


def check_buffer_versions(cell: ParaCell, buffers: dict[str, Tensor], versions: dict[str, int]) -> None:
    """Raise ``RuntimeError``, as autograd does for a saved tensor, if one of the cell's own ``buffers`` changed in
    place since the forward recorded its ``versions``: the backward would differentiate at other values."""
    changed = [name for name, version in versions.items() if buffers[name]._version != version]
    if changed:
        raise RuntimeError(
            f"{type(cell).__name__}: the buffer(s) {changed}, needed for gradient computation, have been modified by "
            "an inplace operation since the forward; change them after the backward (or compute the loss again)"
        )


def _jacobian(cell: ParaCell, h_prev: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    return cell.jacobian(h_prev, u)


def apply_recurrence(cell: ParaCell, h_prev: Tensor, u: Tensor) -> Tensor:
    return cell.recurrence(h_prev, u)
