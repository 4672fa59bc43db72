"""A block-diagonal linear map: ``num_heads`` independent linear maps over slices of the features."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..cells.headwise import check_head_sizes


class HeadwiseLinear(nn.Module):
    """``y = W x + b`` with ``W`` block-diagonal over ``num_heads`` heads.

    Head ``n`` maps input features ``[n·I/h, (n+1)·I/h)`` to output features
    ``[n·O/h, (n+1)·O/h)``. With ``num_heads=1`` it is :class:`torch.nn.Linear`.

    Parameters:
        weight: ``(num_heads, out_features // num_heads, in_features // num_heads)``.
        bias: ``(out_features,)``, zeros at initialisation.
    """

    def __init__(self, in_features: int, out_features: int, num_heads: int = 1) -> None:
        super().__init__()
        check_head_sizes("HeadwiseLinear", num_heads, in_features=in_features, out_features=out_features)
        self.in_features, self.out_features, self.num_heads = in_features, out_features, num_heads
        self.weight = nn.Parameter(torch.empty(num_heads, out_features // num_heads, in_features // num_heads))
        self.bias = nn.Parameter(torch.empty(out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Kaiming-uniform per head, as nn.Linear: U(-1/√fan_in, 1/√fan_in); zero bias.
        bound = 1 / math.sqrt(self.weight.shape[-1])
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` ``(..., in_features)`` → ``(..., out_features)``."""
        heads = x.unflatten(-1, (self.num_heads, -1))
        return torch.einsum("...ni,noi->...no", heads, self.weight).flatten(-2) + self.bias

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, num_heads={self.num_heads}"
