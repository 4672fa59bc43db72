"""ParaLSTM (paper eq. 3.1b): a CIFG LSTM with peepholes and diagonal recurrent weights, so
``∂[c_t; h_t]/∂[c_{t-1}; h_{t-1}]`` is made of per-channel 2×2 blocks."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..core.structure import Block
from .headwise import HeadwiseGatedCell


class ParaLSTM(HeadwiseGatedCell):
    """``y, (c_last, h_last) = ParaLSTM(input_size, hidden_size, num_heads)(x, (c0, h0))``.

    With ``u = B x + b`` split into gates ``(f, z, o)``, ``A = (a_f, a_z, a_o)`` and peepholes
    ``C = (p_f, p_o)``::

        f_t = σ(a_f ⊙ h_{t-1} + u^f_t + p_f ⊙ c_{t-1})
        z_t = tanh(a_z ⊙ h_{t-1} + u^z_t)
        c_t = f_t ⊙ c_{t-1} + (1 − f_t) ⊙ z_t
        o_t = σ(a_o ⊙ h_{t-1} + u^o_t + p_o ⊙ c_t)
        h_t = o_t ⊙ tanh(c_t)

    The solver's state is ``(..., hidden_size, 2)`` holding ``[c, h]`` per channel; users see the
    pair ``(c, h)`` of ``(B, hidden_size)`` tensors and ``y = h`` ``(B, T, hidden_size)``.
    """

    structure = Block(2)
    gates = 3
    peepholes = 2
    fused_kernel = "lstm"

    @property
    def state_shape(self) -> tuple[int, ...]:
        return (self.hidden_size, 2)

    @property
    def output_size(self) -> int:
        return self.hidden_size

    def output(self, h: Tensor) -> Tensor:
        return h[..., 1]

    def state_to_tensor(self, state: Any) -> Tensor:
        if not (isinstance(state, (tuple, list)) and len(state) == 2):
            raise TypeError("ParaLSTM: state must be a pair (c, h) of (batch, hidden_size) tensors")
        c, h = state
        if not (isinstance(c, Tensor) and isinstance(h, Tensor)) or c.shape != h.shape:
            shapes = [tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__ for t in (c, h)]
            raise ValueError(
                f"ParaLSTM: state (c, h) must be two (batch, hidden_size={self.hidden_size}) tensors, got {shapes}"
            )
        return torch.stack((c, h), dim=-1)

    def tensor_to_state(self, h: Tensor) -> tuple[Tensor, Tensor]:
        return h[..., 0], h[..., 1]

    def _gates(self, s: Tensor, u: Tensor) -> tuple[Tensor, ...]:
        a_f, a_z, a_o = self.clipped(self.A)
        p_f, p_o = self.clipped(self.C)
        c, h = s.unbind(-1)
        u_f, u_z, u_o = u.unbind(-2)
        f = torch.sigmoid(a_f * h + u_f + p_f * c)
        z = torch.tanh(a_z * h + u_z)
        c_new = f * c + (1 - f) * z
        o = torch.sigmoid(a_o * h + u_o + p_o * c_new)
        return c, f, z, c_new, o, torch.tanh(c_new)

    def recurrence(self, h_prev: Tensor, u: Tensor) -> Tensor:
        _, _, _, c_new, o, tanh_c = self._gates(h_prev, u)
        return torch.stack([c_new, o * tanh_c], dim=-1)

    def jacobian(self, h_prev: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        a_f, a_z, a_o = self.clipped(self.A)
        p_f, p_o = self.clipped(self.C)
        c, f, z, c_new, o, tanh_c = self._gates(h_prev, u)
        df = f * (1 - f)
        dcc = f + df * p_f * (c - z)  # ∂c_t/∂c_{t-1}
        dch = df * a_f * (c - z) + (1 - f) * (1 - z * z) * a_z  # ∂c_t/∂h_{t-1}
        do = o * (1 - o)
        dh_dc_new = do * p_o * tanh_c + o * (1 - tanh_c * tanh_c)  # ∂h_t/∂c_t through o and tanh
        dhc = dh_dc_new * dcc
        dhh = do * a_o * tanh_c + dh_dc_new * dch
        J = _interleave(dcc, dch, dhc, dhh).unflatten(-1, (2, 2))  # [[dcc, dch], [dhc, dhh]] per channel
        return _interleave(c_new, o * tanh_c), J


def _interleave(*planes: Tensor) -> Tensor:
    """``torch.stack(planes, dim=-1)`` by one copy per plane into a new tensor: on CPU a stack along the last
    dimension is 1.5-5x slower (5x for nested stacks into 2×2 blocks), and Newton assembles a Jacobian per iteration.
    """
    out = planes[0].new_empty(*planes[0].shape, len(planes))
    for i, plane in enumerate(planes):
        out[..., i] = plane
    return out
