"""The SwiGLU feed-forward layer of the LM blocks."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class SwiGLU(nn.Module):
    """``y = W_out (silu(W_gate x) ⊙ W_up x)``, no biases.

    Shapes: ``x`` ``(..., dim)`` → ``y`` ``(..., dim)``; ``in_proj`` holds ``[W_gate; W_up]``
    ``(2·hidden, dim)``, ``out_proj`` is ``W_out`` ``(dim, hidden)``.
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        for name, value in (("dim", dim), ("hidden", hidden)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"SwiGLU: {name} must be a positive int, got {value!r}")
        self.in_proj = nn.Linear(dim, 2 * hidden, bias=False)
        self.out_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` ``(..., dim)`` → ``(..., dim)``."""
        gate, up = self.in_proj(x).chunk(2, dim=-1)
        return self.out_proj(F.silu(gate) * up)
