"""ParaGRU (paper eq. 3.1a): a GRU with diagonal recurrent weights, so ``∂h_t/∂h_{t-1}`` is diagonal."""

from __future__ import annotations

import torch
from torch import Tensor

from ..core.structure import Diagonal
from .headwise import HeadwiseGatedCell


class ParaGRU(HeadwiseGatedCell):
    """``y, h_last = ParaGRU(input_size, hidden_size, num_heads)(x, h0)``.

    With ``u = B x + b`` split into gates ``(z, r, c)`` and ``A = (a_z, a_r, a_c)``::

        z_t = σ(a_z ⊙ h_{t-1} + u^z_t)
        r_t = σ(a_r ⊙ h_{t-1} + u^r_t)
        c_t = tanh(a_c ⊙ (h_{t-1} ⊙ r_t) + u^c_t)
        h_t = (1 − z_t) ⊙ h_{t-1} + z_t ⊙ c_t

    Shapes: ``x`` ``(B, T, input_size)`` → ``y`` ``(B, T, hidden_size)``, state ``(B, hidden_size)``.
    See :class:`~pararnn_ts.cells.headwise.HeadwiseGatedCell` and
    :class:`~pararnn_ts.core.cell.ParaCell` for the arguments.
    """

    structure = Diagonal()
    gates = 3
    fused_kernel = "gru"

    def _gates(self, h: Tensor, u: Tensor) -> tuple[Tensor, ...]:
        a_z, a_r, a_c = self.clipped(self.A)
        u_z, u_r, u_c = u.unbind(-2)
        z = torch.sigmoid(a_z * h + u_z)
        r = torch.sigmoid(a_r * h + u_r)
        c = torch.tanh(a_c * (h * r) + u_c)
        return z, r, c

    def recurrence(self, h_prev: Tensor, u: Tensor) -> Tensor:
        z, _, c = self._gates(h_prev, u)
        return h_prev + z * (c - h_prev)

    def jacobian(self, h_prev: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        a_z, a_r, a_c = self.clipped(self.A)
        z, r, c = self._gates(h_prev, u)
        dz = z * (1 - z) * a_z
        dr = r * (1 - r) * a_r
        dc = (1 - c * c) * a_c * (r + h_prev * dr)
        return h_prev + z * (c - h_prev), (1 - z) + dz * (c - h_prev) + z * dc
