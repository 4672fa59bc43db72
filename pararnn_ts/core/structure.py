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
    """Base class: the algebra a linear scan needs for one Jacobian layout.

    A new structure implements :meth:`apply`, :meth:`compose`, :meth:`transpose`, :meth:`jacobian_shape` and
    :meth:`jacobian_from_jvp`, and sets :attr:`state_dims` (and :attr:`state_layout`) for the states it lays out.
    """

    #: number of trailing state dimensions (1 for diag/dense, 2 for block)
    state_dims: int = 1
    #: the state shape it is for, in words (error messages)
    state_layout: str = "(D,)"

    def apply(self, J: Tensor, x: Tensor) -> Tensor:
        """``J x`` for each leading index."""
        raise NotImplementedError(_abstract(self, "apply(J, x) → J x"))

    def compose(self, J2: Tensor, J1: Tensor) -> Tensor:
        """``J2 J1`` (apply ``J1`` first) for each leading index."""
        raise NotImplementedError(_abstract(self, "compose(J2, J1) → J2 J1"))

    def transpose(self, J: Tensor) -> Tensor:
        """``Jᵀ`` for each leading index."""
        raise NotImplementedError(_abstract(self, "transpose(J) → Jᵀ"))

    def jacobian_shape(self, state_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of one step's Jacobian for states of ``state_shape``."""
        raise NotImplementedError(_abstract(self, "jacobian_shape(state_shape) → the shape of one step's Jacobian"))

    def jacobian_from_jvp(self, fn: Callable[[Tensor], Tensor], h: Tensor) -> tuple[Tensor, Tensor]:
        """``(fn(h), ∂fn/∂h)`` by forward-mode AD, with as few tangents as the structure allows."""
        raise NotImplementedError(_abstract(self, "jacobian_from_jvp(fn, h) → (fn(h), ∂fn/∂h)"))

    def accepts_state(self, state_shape: tuple[int, ...]) -> bool:
        """Whether states of ``state_shape`` (without the batch dimension) have this structure's layout."""
        return len(state_shape) == self.state_dims

    def multiplies_as(self, base: type[Structure]) -> bool:
        """Whether this is a ``base`` whose :meth:`apply` and :meth:`compose` are ``base``'s own: what the native
        scans and the channels-last layout compute. A subclass with an algebra of its own must keep it."""
        kind = type(self)
        return isinstance(self, base) and kind.apply is base.apply and kind.compose is base.compose

    def scan_layout(self, J: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Structure, Callable[[Tensor], Tensor]]:
        """``(J, b, structure, back)``: the system in the layout the PyTorch scan computes in, the structure of
        that layout, and the map of its solution back to this structure's states.

        The default is this layout itself; :class:`Block` moves the channel dimension last.
        """
        return J, b, self, _same

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _same(x: Tensor) -> Tensor:
    return x


def _abstract(structure: Structure, signature: str) -> str:
    return f"{type(structure).__name__} must implement {signature} (see Structure and Diagonal in {__name__})"


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

    def scan_layout(self, J: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Structure, Callable[[Tensor], Tensor]]:
        # Channels last: (..., k, k, D) and (..., k, D), so that each combine is a few elementwise ops over D
        # contiguous channels instead of products broadcast over trailing dims of size k (7x slower on CPU).
        # A subclass with its own algebra keeps its layout: the channels-last one would bypass it.
        if not self.multiplies_as(Block):
            return J, b, self, _same
        return J.movedim(-3, -1).contiguous(), b.movedim(-2, -1).contiguous(), _ChannelsLastBlock(), _channels_back

    @property
    def state_layout(self) -> str:  # type: ignore[override]
        return f"(D, {self.k})"

    def accepts_state(self, state_shape: tuple[int, ...]) -> bool:
        return len(state_shape) == 2 and state_shape[-1] == self.k

    def __repr__(self) -> str:
        return f"Block({self.k})"


class _ChannelsLastBlock(Structure):
    """:class:`Block`'s algebra in the scan's layout: Jacobian ``(..., k, k, D)``, state ``(..., k, D)``."""

    def apply(self, J: Tensor, x: Tensor) -> Tensor:
        return (J * x.unsqueeze(-3)).sum(-2)

    def compose(self, J2: Tensor, J1: Tensor) -> Tensor:
        return (J2.unsqueeze(-2) * J1.unsqueeze(-4)).sum(-3)


def _channels_back(x: Tensor) -> Tensor:
    """A state ``(..., k, D)`` of :class:`_ChannelsLastBlock` → ``(..., D, k)``."""
    return x.movedim(-1, -2).contiguous()


class Dense(Structure):
    """Full ``N×N`` Jacobian: for prototyping only (each combine costs O(N³))."""

    state_layout = "(N,)"

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
