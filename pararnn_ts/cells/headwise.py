"""What ParaGRU and ParaLSTM share: the head-wise input projection ``u = B x + b`` and the
diagonal recurrent weights ``A`` (and peepholes ``C``) with the paper's initialisation and norm
clipping."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.cell import ParaCell
from ..core.checks import autocast_enabled
from ..ops.fused import clip_rows

RecurrentInit = Literal["paper", "normal", "zeros"]
RECURRENT_INITS = ("paper", "normal", "zeros")


class HeadwiseGatedCell(ParaCell):
    """Base of cells with ``gates`` input gates, block-diagonal ``B`` and diagonal ``A``.

    Parameters:
        B: ``(num_heads, gates, hidden_size // num_heads, input_size // num_heads)``: head ``n``
            maps its slice of ``x`` to its slice of every gate.
        b: ``(gates, hidden_size)`` bias (absent with ``bias=False``).
        A: ``(gates, hidden_size)``: the diagonals ``a_*`` of the recurrent matrices.
        C: ``(peepholes, hidden_size)``: diagonal peephole weights, when the cell has any.

    Args:
        max_norm: the norm of each row of ``A`` (and ``C``) is clipped to this in every forward
            (the paper: 0.5 for LMs, 0.9 for synthetic tasks); ``None`` leaves them free.
        recurrent_init: ``"paper"`` (Gaussian with std ``1/√hidden``, then each row's norm clipped
            to 0.5), ``"normal"`` (the same Gaussian, unclipped) or ``"zeros"``.
    """

    gates: int = 3
    peepholes: int = 0
    kernel_replicates = ("recurrence", "_gates", "clipped")

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_heads: int = 1,
        *,
        bias: bool = True,
        max_norm: float | None = 0.5,
        recurrent_init: RecurrentInit = "paper",
        **solver_kwargs,
    ) -> None:
        super().__init__(**solver_kwargs)
        check_head_sizes(type(self).__name__, num_heads, input_size=input_size, hidden_size=hidden_size)
        if recurrent_init not in RECURRENT_INITS:
            raise ValueError(f"recurrent_init={recurrent_init!r} is not one of {RECURRENT_INITS}")
        if max_norm is not None and not max_norm > 0:
            raise ValueError(f"max_norm must be > 0 or None, got {max_norm}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.max_norm = max_norm
        self.recurrent_init = recurrent_init
        h, g = num_heads, self.gates
        self.B = nn.Parameter(torch.empty(h, g, hidden_size // h, input_size // h))
        self.b = nn.Parameter(torch.empty(g, hidden_size)) if bias else None
        self.A = nn.Parameter(torch.empty(g, hidden_size))
        self.C = nn.Parameter(torch.empty(self.peepholes, hidden_size)) if self.peepholes else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Kaiming-uniform per head, as nn.Linear: U(-1/√fan_in, 1/√fan_in).
        bound = 1 / math.sqrt(self.B.shape[-1])
        nn.init.uniform_(self.B, -bound, bound)
        if self.b is not None:
            nn.init.zeros_(self.b)
        for p in self.recurrent_parameters():
            self._init_recurrent_(p)

    def recurrent_parameters(self) -> list[nn.Parameter]:
        """The diagonals the paper initialises small and clips: ``A`` (and ``C``)."""
        return [self.A] if self.C is None else [self.A, self.C]

    def _init_recurrent_(self, p: Tensor) -> None:
        with torch.no_grad():
            if self.recurrent_init == "zeros":
                p.zero_()
                return
            p.normal_(0, 1 / math.sqrt(self.hidden_size))
            if self.recurrent_init == "paper":
                p.copy_(clip_rows(p, 0.5))

    def fused_weights(self, clip: bool = True) -> tuple[Tensor, ...]:
        """:meth:`recurrent_parameters`, clipped unless ``clip=False``."""
        return tuple(self.clipped(p) if clip else p for p in self.recurrent_parameters())

    def clipped(self, p: Tensor) -> Tensor:
        """``p`` with each row's norm clipped to ``max_norm`` (differentiable)."""
        return p if self.max_norm is None else clip_rows(p, self.max_norm)

    @property
    def state_shape(self) -> tuple[int, ...]:
        return (self.hidden_size,)

    def project(self, x: Tensor) -> Tensor:
        """``x`` ``(..., input_size)`` → ``u`` ``(..., gates, hidden_size)``."""
        if x.dtype != self.B.dtype and not autocast_enabled(x.device.type):
            fix = f"the module (.to({x.dtype})), or run under torch.autocast" if x.is_floating_point() else "nothing"
            raise TypeError(
                f"{type(self).__name__}: x is {x.dtype} but the parameters are {self.B.dtype}; convert x "
                f"(x.to({self.B.dtype})) or {fix}".removesuffix(" or nothing")
            )
        h = self.num_heads
        if h == 1:  # one dense block: a single GEMM straight into the (gates, hidden) layout, no permute
            gates, out = self.B.shape[1:3]
            bias = None if self.b is None else self.b.flatten()
            return F.linear(x, self.B.reshape(gates * out, -1), bias).unflatten(-1, (gates, out))
        u = torch.einsum("...ni,ngoi->...gno", x.unflatten(-1, (h, -1)), self.B).flatten(-2)
        return u if self.b is None else u + self.b

    def extra_repr(self) -> str:
        bias = "" if self.b is not None else "bias=False, "
        init = "" if self.recurrent_init == "paper" else f"recurrent_init={self.recurrent_init!r}, "
        return (
            f"{self.input_size}, {self.hidden_size}, num_heads={self.num_heads}, max_norm={self.max_norm}, {bias}{init}"
            + super().extra_repr()
        )


def check_head_sizes(owner: str, num_heads: int, **sizes: int) -> None:
    """Raise a ``ValueError`` naming the argument unless all sizes are positive ints divisible by ``num_heads``."""
    for name, value in {**sizes, "num_heads": num_heads}.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{owner}: {name} must be a positive int, got {value!r}")
    if any(value % num_heads for value in sizes.values()):
        listed = " and ".join(f"{name}={value}" for name, value in sizes.items())
        raise ValueError(
            f"{owner}: {listed} must all be divisible by num_heads={num_heads}; change num_heads or the sizes"
        )
