"""Jacobian structures of a recurrence ``h_t = f(h_{t-1}, u_t)``.

A structure says how the state is laid out and how the Jacobian ``J = ∂f/∂h_{t-1}`` is stored:

=============  ==================  ========================
structure      state (per step)    Jacobian (per step)
=============  ==================  ========================
``Diagonal``   ``(D,)``            ``(D,)``
``Block(k)``   ``(D, k)``          ``(D, k, k)``
``Dense``      ``(N,)``            ``(N, N)``
=============  ==================  ========================

Every method is batched over arbitrary leading dimensions (batch, time).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


class Structure:
    """Base class: the algebra a linear scan needs for one Jacobian layout."""

    #: number of trailing state dimensions (1 for diag/dense, 2 for block)
    state_dims: int = 1

    def apply(self, J: Tensor, x: Tensor) -> Tensor:
        """``J x`` for each leading index."""
        raise NotImplementedError

    def compose(self, J2: Tensor, J1: Tensor) -> Tensor:
        """``J2 J1`` (apply ``J1`` first) for each leading index."""
        raise NotImplementedError

    def transpose(self, J: Tensor) -> Tensor:
        """``Jᵀ`` for each leading index."""
        raise NotImplementedError

    def jacobian_shape(self, state_shape: tuple[int, ...]) -> tuple[int, ...]:
        raise NotImplementedError

    def jacobian_from_jvp(self, fn: Callable[[Tensor], Tensor], h: Tensor) -> tuple[Tensor, Tensor]:
        """``(fn(h), ∂fn/∂h)`` by forward-mode AD, with as few tangents as the structure allows."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Diagonal(Structure):
    """Elementwise recurrence: ``J`` is a vector of the state's shape (ParaGRU)."""

    def apply(self, J: Tensor, x: Tensor) -> Tensor:
        return J * x

    def compose(self, J2: Tensor, J1: Tensor) -> Tensor:
        return J2 * J1

    def transpose(self, J: Tensor) -> Tensor:
        return J

    def jacobian_shape(self, state_shape: tuple[int, ...]) -> tuple[int, ...]:
        return state_shape

    def jacobian_from_jvp(self, fn: Callable[[Tensor], Tensor], h: Tensor) -> tuple[Tensor, Tensor]:
        # A diagonal Jacobian times the all-ones tangent is its diagonal.
        return torch.func.jvp(fn, (h,), (torch.ones_like(h),))


class Block(Structure):
    """Per-channel ``k×k`` blocks: state ``(..., D, k)``, Jacobian ``(..., D, k, k)`` (ParaLSTM: k=2)."""

    state_dims = 2

    def __init__(self, k: int) -> None:
        if k < 1:
            raise ValueError(f"Block(k): k must be >= 1, got {k}")
        self.k = k

    def apply(self, J: Tensor, x: Tensor) -> Tensor:
        # Elementwise products and a reduction beat batched tiny matmuls on CPU and GPU alike.
        return (J * x.unsqueeze(-2)).sum(-1)

    def compose(self, J2: Tensor, J1: Tensor) -> Tensor:
        return (J2.unsqueeze(-1) * J1.unsqueeze(-3)).sum(-2)

    def transpose(self, J: Tensor) -> Tensor:
        return J.transpose(-1, -2)

    def jacobian_shape(self, state_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (*state_shape, self.k)

    def jacobian_from_jvp(self, fn: Callable[[Tensor], Tensor], h: Tensor) -> tuple[Tensor, Tensor]:
        # Tangent j is e_j in every channel; it returns column j of every block.
        columns = []
        out = None
        for j in range(self.k):
            tangent = torch.zeros_like(h)
            tangent[..., j] = 1
            out, col = torch.func.jvp(fn, (h,), (tangent,))
            columns.append(col)
        return out, torch.stack(columns, dim=-1)

    def __repr__(self) -> str:
        return f"Block({self.k})"


class Dense(Structure):
    """Full ``N×N`` Jacobian: for prototyping only (each combine costs O(N³))."""

    def apply(self, J: Tensor, x: Tensor) -> Tensor:
        return (J @ x.unsqueeze(-1)).squeeze(-1)

    def compose(self, J2: Tensor, J1: Tensor) -> Tensor:
        return J2 @ J1

    def transpose(self, J: Tensor) -> Tensor:
        return J.transpose(-1, -2)

    def jacobian_shape(self, state_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (*state_shape, state_shape[-1])

    def jacobian_from_jvp(self, fn: Callable[[Tensor], Tensor], h: Tensor) -> tuple[Tensor, Tensor]:
        n = h.shape[-1]
        eye = torch.eye(n, dtype=h.dtype, device=h.device)
        columns = []
        out = None
        for j in range(n):
            out, col = torch.func.jvp(fn, (h,), (eye[j].expand_as(h),))
            columns.append(col)
        return out, torch.stack(columns, dim=-1)
