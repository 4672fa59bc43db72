"""Checks cheap enough to run on every call: of the inputs, and of what autograd asks of a backward."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import Tensor

_Backward = TypeVar("_Backward", bound=Callable[..., Any])


def all_finite(x: Tensor) -> bool:
    """Whether every entry of ``x`` (any shape) is finite, in one reduction where it can.

    A NaN or an infinity anywhere makes the sum NaN or infinite, so a finite sum proves every entry finite;
    only a non-finite sum (a NaN, an inf, or finite values that overflow the sum) needs the entrywise test.
    The sum is one pass with no ``(x.shape)`` mask, about 20× cheaper than ``torch.isfinite(x).all()`` on CPU.
    ``True`` for a tensor being :func:`traced`, whose values cannot be read.
    """
    if not (x.is_floating_point() or x.is_complex()) or traced(x):
        return True
    x = x.detach()  # no graph for the sum of a tensor that requires grad
    total = x.sum(dtype=torch.float32) if x.dtype in (torch.float16, torch.bfloat16) else x.sum()
    return bool(torch.isfinite(total)) or bool(torch.isfinite(x).all())


def named_weights(module: torch.nn.Module) -> dict[str, Tensor]:
    """``module``'s parameters by name; on a ``torch.nn.DataParallel`` replica, whose parameters are plain attributes
    (differentiable copies of the original's, which ``parameters()`` leaves out), those copies."""
    if not getattr(module, "_is_replica", False):
        return dict(module.named_parameters())
    weights, seen = {}, set()
    for prefix, child in module.named_modules():
        for name, tensor in getattr(child, "_former_parameters", {}).items():
            if id(tensor) not in seen:  # a tied weight is one copy in every module that holds it: once, as there
                seen.add(id(tensor))
                weights[f"{prefix}.{name}" if prefix else name] = tensor
    return weights


def traced(x: Tensor) -> bool:
    """Whether ``x`` is being traced or captured (torch.compile/export, torch.jit.trace, CUDA graphs, functorch
    transforms, meta tensors), so that its values cannot be read back."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or x.device.type == "meta":
        return True
    return capturing(x) or functorch_wrapped(x)


def capturing(x: Tensor) -> bool:
    """Whether ``x`` is on a CUDA stream that is capturing a CUDA graph (no reads back to the host allowed). Not
    asked under torch.compile, which would trace the question (its own CUDA graphs capture compiled code only)."""
    return x.is_cuda and not torch.compiler.is_compiling() and torch.cuda.is_current_stream_capturing()


def functorch_wrapped(*tensors: Tensor) -> bool:
    """Whether any of ``tensors`` is wrapped by a ``torch.func`` transform (grad, vjp, jacrev, jacfwd, vmap)."""
    if torch.compiler.is_compiling():  # traced, the tensors are fakes; torch.compile reads the transforms' stack
        return torch._C._functorch.maybe_current_level() is not None
    wrapped = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)
    return wrapped is not None and any(wrapped(t) for t in tensors)


def autocast_enabled(device_type: str) -> bool:
    """``torch.is_autocast_enabled(device_type)``, ``False`` for device types with no autocast (``"meta"``)."""
    return torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type)


def check_state_device(owner: str, state: Any, x: Tensor, x_name: str = "x") -> None:
    """Raise a ``ValueError`` naming both devices unless every tensor of ``state`` is on ``x``'s device.

    ``state``: the user's form, a tensor ``(B, *S)`` or a tuple/list of tensors (ParaLSTM's ``(c, h)``);
    checked before it is converted or computed with. A device comparison: no sync, no data read.
    """
    if isinstance(state, Tensor):
        parts, fix = [("state", state)], f"h0.to({x_name}.device)"
    elif isinstance(state, (tuple, list)):
        parts = [(f"state[{i}]", s) for i, s in enumerate(state) if isinstance(s, Tensor)]
        fix = f"tuple(s.to({x_name}.device) for s in state)"
    else:
        return
    for what, t in parts:
        if t.device != x.device:
            raise ValueError(f"{owner}: {what} is on {t.device} but {x_name} is on {x.device}; pass {fix}")


def first_order_only(mode: str) -> Callable[[_Backward], _Backward]:
    """Decorate the ``backward`` of an autograd Function that cannot be differentiated again (the ``mode`` solve).

    A backward asked for a graph (``create_graph=True``: grad mode on inside it), or vectorized over a batch of
    output gradients (``is_grads_batched=True``), raises, at that call, a ``RuntimeError`` naming ``mode`` and the
    fix (``mode="sequential"``, autograd through the loop); a plain backward runs as it is (one grad-mode test, no
    sync). Not
    :func:`~torch.autograd.function.once_differentiable`: its error is generic and delayed, and it marks the
    gradients only when a grad output requires grad, so the second derivative of a loss linear in the
    solve's output silently lost the solve's part.
    """
    solve = f'the mode="{mode}" solve (also what mode="auto" may pick)'
    fix = 'pass mode="sequential" to the layer (e.g. ParaGRU(..., mode="sequential"))'
    message = (
        f"{solve} has a first-order backward only, and a graph of the gradients was asked for (create_graph=True: "
        f"a gradient penalty, MAML, Hessian-vector products); {fix} for second derivatives, by autograd through "
        "the loop"
    )
    batched = (
        f"{solve} has no vectorized backward, and one was asked for (torch.autograd.grad(..., is_grads_batched=True), "
        f"torch.autograd.functional.jacobian or hessian with vectorize=True); {fix}, or leave vectorize off"
    )

    def decorate(backward: _Backward) -> _Backward:
        @functools.wraps(backward)
        def wrapper(ctx: Any, *grad_outputs: Any) -> Any:
            if torch.is_grad_enabled():  # the engine turns grad mode on in a backward only for create_graph=True
                raise RuntimeError(message)
            compiled = torch.compiler.is_compiling()  # traced by torch.compile: fakes, never batched
            if not compiled and any(isinstance(g, Tensor) and batched_over(g) for g in grad_outputs):
                raise RuntimeError(batched)
            return backward(ctx, *grad_outputs)

        return wrapper  # type: ignore[return-value]

    return decorate


def batched_over(x: Tensor) -> bool:
    """Whether ``x`` is a batch of tensors under a vmap (``torch.func.vmap``, or the vmap behind
    ``is_grads_batched=True``)."""
    functorch = torch._C._functorch
    legacy = getattr(functorch, "is_legacy_batchedtensor", None)
    return functorch.is_batchedtensor(x) or (legacy is not None and legacy(x))
