"""User cells for tests/test_custom_cells_in_models.py, importable by name (``custom_cells.TanhCell``): pytest puts
tests/ on ``sys.path``, and CLI runs in a subprocess get it through ``PYTHONPATH``."""

from __future__ import annotations

import torch
from torch import nn

from pararnn_ts import Block, Diagonal, ParaCell


class TanhCell(ParaCell):
    """``h_t = tanh(a ⊙ h_{t-1} · gain + W x_t)``: a diagonal Elman cell with a setting of its own (``gain``)."""

    structure = Diagonal()

    def __init__(self, input_size: int, hidden_size: int, gain: float = 1.0, **solver_kwargs) -> None:
        super().__init__(**solver_kwargs)
        self.input_size, self.hidden_size, self.gain = input_size, hidden_size, gain
        self.proj = nn.Linear(input_size, hidden_size)
        self.a = nn.Parameter(torch.rand(hidden_size) * 1.6 - 0.8)

    @property
    def state_shape(self) -> tuple[int, ...]:
        return (self.hidden_size,)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)

    def recurrence(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.gain * self.a * h + u)


class PairCell(ParaCell):
    """A ``(D, 2)`` state whose output is the whole state, ``2 D`` wide: too wide for a layer of ``D``."""

    structure = Block(2)

    def __init__(self, input_size: int, hidden_size: int, **solver_kwargs) -> None:
        super().__init__(**solver_kwargs)
        self.input_size, self.hidden_size = input_size, hidden_size
        self.proj = nn.Linear(input_size, 2 * hidden_size)

    @property
    def state_shape(self) -> tuple[int, ...]:
        return (self.hidden_size, 2)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).unflatten(-1, (self.hidden_size, 2))

    def recurrence(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return torch.tanh(0.5 * h + u)


def linear_layer(input_size: int, hidden_size: int) -> nn.Module:
    """A factory that builds no ParaCell."""
    return nn.Linear(input_size, hidden_size)
