"""A user-defined cell, written the way a user would: only the recurrence and its structure.

Each channel is a 2-D oscillator whose state is rotated by an input-gated angle, damped, and
driven by the input. Its Jacobian is 2×2 per channel; every mode and the backward come for free
(the Jacobian from forward-mode AD). As the contract asks (see ParaCell), ``recurrence`` reads only
``h``, ``u`` and the cell's parameters, mixes only the two entries of each channel (``Block(2)``), and
indexes from the end, so it is batched over any leading dims.
"""

import torch
from torch import nn

from ..core import Block, ParaCell


class RotationOscillator(ParaCell):
    structure = Block(2)

    def __init__(self, input_size: int, hidden_size: int, **solver_kwargs) -> None:
        super().__init__(**solver_kwargs)
        self.input_size, self.hidden_size = input_size, hidden_size
        self.proj = nn.Linear(input_size, hidden_size * 3)
        self.omega = nn.Parameter(torch.rand(hidden_size))  # max angle per step
        self.damping = nn.Parameter(torch.full((hidden_size,), 0.9))

    @property
    def state_shape(self):
        return (self.hidden_size, 2)

    def project(self, x):
        return self.proj(x).unflatten(-1, (self.hidden_size, 3))  # (..., D, [drive_x, drive_y, gate])

    def recurrence(self, h, u):
        angle = self.omega * torch.sigmoid(u[..., 2])
        cos, sin = angle.cos(), angle.sin()
        x, y = h.unbind(-1)
        rotated = torch.stack([cos * x - sin * y, sin * x + cos * y], dim=-1)
        return torch.tanh(self.damping.unsqueeze(-1) * rotated + u[..., :2])
