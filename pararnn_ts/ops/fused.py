"""One autograd Function for every fused backend, and the choice of backend per device.

A backend is a module of this package (``cpu``, ``triton_fused``, ``cuda``) with the functions
``<kernel>_forward(u, *weights, h0, tol, max_iters) -> (h, stats)`` and
``<kernel>_backward(grad_h, u, *weights, h0, h) -> (grad_u, *grad_weights, grad_h0)`` for each
kernel it implements (``"gru"``: weights ``(A,)``; ``"lstm"``: weights ``(A, C)``), plus
``unavailable_reason(device) -> str | None``. A module that sets ``CLIPS_WEIGHTS = True`` also takes
``max_norm=`` in its forwards and backwards: its kernels norm-clip the weights' rows themselves, and
its backwards return the gradients of the unclipped weights. A module with Newton kernels may set
``EXACT_OPTIONS``, the keywords that make its forwards exact (the sequential recurrence): a Newton solve
that did not converge is recomputed with them instead of the PyTorch loop. ``kernels/README.md`` states
the layouts.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Literal

import torch
from torch import Tensor

from ..core.checks import first_order_only
from ..notices import warn

Backend = Literal["auto", "cpu", "triton", "cuda"]
BACKENDS = ("auto", "cpu", "triton", "cuda")
KERNELS = ("gru", "lstm")
_MODULES = {"cpu": "cpu", "triton": "triton_fused", "cuda": "cuda"}

#: the order ``backend="auto"`` tries, per device type (CUDA: fastest first, from the kernel benchmark)
AUTO_ORDER = {"cpu": ("cpu",), "cuda": ("triton", "cuda")}

_warned: set[tuple[str, str]] = set()
_imported: dict[str, ModuleType] = {}


def backend_module(name: str) -> ModuleType:
    """The module implementing backend ``name`` (imported on first use)."""
    if name not in _MODULES:
        raise ValueError(f"backend={name!r} is not one of {BACKENDS}")
    # a plain dict, not functools.cache: ``import_module`` costs microseconds per call, twice per solve, and
    # torch.compile traces a dict lookup where it would break its graph at the import
    module = _imported.get(name)
    if module is None:
        module = _imported[name] = importlib.import_module(f"{__package__}.{_MODULES[name]}")
    return module


def unavailable_reason(name: str, device: torch.device) -> str | None:
    """Why backend ``name`` cannot run on ``device``, or ``None`` when it can."""
    try:
        return backend_module(name).unavailable_reason(device)
    except ImportError as error:  # an optional dependency of the backend module
        return f"{name} backend cannot be imported: {error}"


@torch.compiler.assume_constant_result  # torch.compile runs it as it traces: the first may import or build a backend
def select_backend(device: torch.device, preference: Backend = "auto") -> tuple[str | None, str]:
    """``(backend, why)``: the fused backend to run on ``device``, or ``(None, reasons)`` if none can.

    ``preference="auto"`` tries :data:`AUTO_ORDER` for the device type; a named backend is the only
    candidate.
    """
    if preference not in BACKENDS:
        raise ValueError(f"fused_backend={preference!r} is not one of {BACKENDS}")
    candidates = AUTO_ORDER.get(device.type, ()) if preference == "auto" else (preference,)
    reasons = []
    for name in candidates:
        reason = unavailable_reason(name, device)
        if reason is None:
            return name, ""
        reasons.append(f"{name}: {reason}")
    return None, "; ".join(reasons) or f"no fused backend for {device.type} devices"


@torch.compiler.assume_constant_result  # torch.compile warns as it traces: the caller's frame is not traceable
def warn_once(key: tuple[str, str], message: str) -> None:
    """Warn with ``message`` the first time ``key`` is seen in this process."""
    if key not in _warned:
        _warned.add(key)
        warn(message)


def fused_solve(
    backend: str,
    kernel: str,
    u: Tensor,
    h0: Tensor,
    weights: tuple[Tensor, ...],
    tol: float,
    max_iters: int,
    max_norm: float | None = None,
    exact: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Run ``kernel`` on ``backend``: ``(h, stats)``, differentiable in ``u``, ``h0`` and ``weights``.

    ``max_norm``: the rows of every weight are first norm-clipped to it (:func:`clip_rows`); ``None``: not.
    ``exact``: run the forward with the backend's ``EXACT_OPTIONS`` (see :func:`has_exact_kernels`).
    ``stats`` is ``None`` for exact (sequential) kernels, else ``[residual, iterations]`` (float32).
    """
    if kernel not in KERNELS:
        raise ValueError(f"kernel={kernel!r} is not one of {KERNELS}")
    module = backend_module(backend)
    forward = getattr(module, f"{kernel}_forward")
    # a backend that clips in its kernels takes the raw weights (and, recording, returns their gradients):
    # on a GPU the clip's own autograd ops cost more host time than a T=512 solve runs
    in_kernel = max_norm is not None and getattr(module, "CLIPS_WEIGHTS", False)
    clip = {"max_norm": max_norm} if in_kernel else {}
    if not in_kernel:
        weights = _clipped(weights, max_norm)
    if exact and not has_exact_kernels(backend):
        raise ValueError(f"exact=True: the {backend} backend has no exact kernels (no EXACT_OPTIONS)")
    options = module.EXACT_OPTIONS if exact else {}
    if not (torch.is_grad_enabled() and any(t.requires_grad for t in (u, h0, *weights))):
        return forward(*_contiguous(u, *weights, h0), tol, max_iters, **clip, **options)
    stats_out: list = []
    h = FusedSolve.apply(module, kernel, tol, max_iters, clip, options, stats_out, u, h0, *weights)
    return h, stats_out[0]


def has_exact_kernels(backend: str) -> bool:
    """Whether ``backend``'s forwards can be made exact (``EXACT_OPTIONS``): Triton's sequential kernels."""
    return hasattr(backend_module(backend), "EXACT_OPTIONS")


def clip_rows(p: Tensor, max_norm: float) -> Tensor:
    """``p`` ``(..., n)`` with each length-``n`` row scaled to norm ``max_norm`` if longer (differentiable).

    One ``torch.renorm`` (rows above ``max_norm`` times ``max_norm / (norm + 1e-7)``): on GPU the 4-op form
    cost more host time per call than a T=512 fused kernel runs.
    """
    return torch.renorm(p.reshape(-1, p.shape[-1]), 2, 0, max_norm).view_as(p)


def _clipped(weights: tuple[Tensor, ...], max_norm: float | None) -> tuple[Tensor, ...]:
    return weights if max_norm is None else tuple(clip_rows(w, max_norm) for w in weights)


def _contiguous(*tensors: Tensor) -> tuple[Tensor, ...]:
    # a contiguous tensor as itself, not as the alias .contiguous() makes: torch.compile refuses a Function that saves
    # an alias of its input made inside it
    return tuple(t if t.is_contiguous() else t.contiguous() for t in tensors)


class FusedSolve(torch.autograd.Function):
    """``h = FusedSolve.apply(module, kernel, tol, max_iters, clip, options, stats_out, u, h0, *weights)``;
    ``clip``: ``{"max_norm": m}`` to clip the weights in the kernels, ``{}`` to use them as given;
    ``options``: further keywords of the forward (``EXACT_OPTIONS`` or ``{}``)."""

    @staticmethod
    def forward(ctx, module, kernel, tol, max_iters, clip, options, stats_out, u, h0, *weights):
        u, h0, *weights = _contiguous(u, h0, *weights)
        ctx.clip = clip
        h, stats = getattr(module, f"{kernel}_forward")(u, *weights, h0, tol, max_iters, **ctx.clip, **options)
        stats_out.append(stats)
        ctx.module, ctx.kernel = module, kernel
        ctx.save_for_backward(u, h0, h, *weights)
        return h

    @staticmethod
    @first_order_only("fused")
    def backward(ctx, grad_h):
        u, h0, h, *weights = ctx.saved_tensors
        backward = getattr(ctx.module, f"{ctx.kernel}_backward")
        grad_u, *grad_weights, grad_h0 = backward(grad_h.contiguous().to(h.dtype), u, *weights, h0, h, **ctx.clip)
        grad_weights = (g.to(w.dtype) for g, w in zip(grad_weights, weights, strict=True))
        return (None,) * 7 + (grad_u.to(u.dtype), grad_h0.to(h0.dtype), *grad_weights)
