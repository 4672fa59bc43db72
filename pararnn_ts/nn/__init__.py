"""Blocks built on cells: layers, heads and baselines."""

from .headwise_linear import HeadwiseLinear
from .linear_rnn import GatedLinearRNN

__all__ = ["GatedLinearRNN", "HeadwiseLinear"]
