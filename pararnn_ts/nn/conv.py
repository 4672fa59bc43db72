"""A depthwise short causal convolution over time, with a state for chunked and step-wise use."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class CausalConv1d(nn.Module):
    """``y_t = Σ_{j<k} w_j ⊙ x_{t-k+1+j} + bias``, one filter of ``kernel_size`` taps per channel.

    The state is the last ``kernel_size - 1`` inputs ``(B, kernel_size - 1, channels)``; a missing
    state means zeros before the first step, so ``forward`` over two halves with the carried state
    equals ``forward`` over the whole sequence, and so does a loop of ``step``.

    Parameters:
        weight: ``(channels, kernel_size)``, PyTorch's default ``Conv1d`` initialisation.
        bias: ``(channels,)``.
    """

    def __init__(self, channels: int, kernel_size: int = 4) -> None:
        super().__init__()
        for name, value in (("channels", channels), ("kernel_size", kernel_size)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"CausalConv1d: {name} must be a positive int, got {value!r}")
        self.channels, self.kernel_size = channels, kernel_size
        self.weight = nn.Parameter(torch.empty(channels, kernel_size))
        self.bias = nn.Parameter(torch.empty(channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # As nn.Conv1d with groups=channels: U(-1/√k, 1/√k) for weight and bias.
        bound = self.kernel_size**-0.5
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def init_state(self, batch: int, device: torch.device | None = None, dtype: torch.dtype | None = None) -> Tensor:
        """Zeros ``(batch, kernel_size - 1, channels)``."""
        return torch.zeros(batch, self.kernel_size - 1, self.channels, device=device, dtype=dtype)

    def forward(self, x: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``x`` ``(B, T, C)``, state ``(B, k-1, C)`` or ``None`` → ``y`` ``(B, T, C)`` and the next state."""
        if state is None:
            state = self.init_state(x.shape[0], x.device, x.dtype)
        window = torch.cat([state.to(x.dtype), x], dim=1)  # (B, k-1+T, C)
        y = F.conv1d(window.transpose(1, 2), self.weight.unsqueeze(1), self.bias, groups=self.channels)
        return y.transpose(1, 2), window[:, window.shape[1] - (self.kernel_size - 1) :].clone()  # not the window

    def step(self, x_t: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``x_t`` ``(B, C)``, state ``(B, k-1, C)`` → ``y_t`` ``(B, C)`` and the next state."""
        if state is None:
            state = self.init_state(x_t.shape[0], x_t.device, x_t.dtype)
        window = torch.cat([state.to(x_t.dtype), x_t.unsqueeze(1)], dim=1)  # (B, k, C)
        y_t = torch.einsum("bkc,ck->bc", window, self.weight) + self.bias
        return y_t, window[:, 1:]

    def extra_repr(self) -> str:
        return f"{self.channels}, kernel_size={self.kernel_size}"
