"""A gated *linear* diagonal RNN: the baseline that cannot flip signs (it stays at chance on Parity)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..cells.headwise import check_head_sizes
from ..core import Diagonal, ParaCell
from .headwise_linear import HeadwiseLinear


class GatedLinearRNN(ParaCell):
    """``y, h_last = GatedLinearRNN(input_size, hidden_size, num_heads)(x, h0)``::

        g_t = σ(W_g x_t + b_g)
        v_t = W_v x_t + b_v
        h_t = g_t ⊙ h_{t-1} + (1 − g_t) ⊙ v_t

    The gates do not read ``h``, so the recurrence is linear in ``h`` with Jacobian
    ``∂h_t/∂h_{t-1} = diag(g_t)``: Newton converges in one step. ``W_g`` and ``W_v`` are
    block-diagonal over ``num_heads`` heads.

    Shapes: ``x`` ``(B, T, input_size)`` → ``y`` ``(B, T, hidden_size)``, state ``(B, hidden_size)``;
    the projected input ``u`` is ``(B, T, hidden_size, 2)`` holding ``[g_t, v_t]`` per channel.
    ``solver_kwargs`` (``mode``, ``tol``, ...) go to :class:`~pararnn_ts.core.cell.ParaCell`.
    """

    structure = Diagonal()

    def __init__(self, input_size: int, hidden_size: int, num_heads: int = 1, **solver_kwargs) -> None:
        super().__init__(**solver_kwargs)
        check_head_sizes("GatedLinearRNN", num_heads, input_size=input_size, hidden_size=hidden_size)
        self.input_size = input_size
        self.hidden_size = hidden_size
        # Head n computes [g, v] for its hidden_size // num_heads channels from its slice of x.
        self.proj = HeadwiseLinear(input_size, 2 * hidden_size, num_heads)

    @property
    def state_shape(self) -> tuple[int, ...]:
        return (self.hidden_size,)

    def project(self, x: Tensor) -> Tensor:
        """``x`` ``(..., input_size)`` → ``u`` ``(..., hidden_size, 2)`` = ``[g, v]`` per channel."""
        u = self.proj(x).unflatten(-1, (self.hidden_size, 2))
        return torch.stack([torch.sigmoid(u[..., 0]), u[..., 1]], dim=-1)

    def recurrence(self, h_prev: Tensor, u: Tensor) -> Tensor:
        g, v = u.unbind(-1)
        return v + g * (h_prev - v)

    def jacobian(self, h_prev: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        g, v = u.unbind(-1)
        return v + g * (h_prev - v), g

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, num_heads={self.proj.num_heads}, " + super().extra_repr()
