"""Sequence mixers of the LM backbone, all with one interface.

Every mixer maps ``x`` ``(B, T, dim)`` to ``y`` ``(B, T, dim)`` and carries a state between calls::

    y, state = mixer(x, state=None)          # a whole chunk of the sequence, time-parallel
    y_t, state = mixer.step(x_t, state)      # one step, x_t (B, dim) → y_t (B, dim)
    state = mixer.init_state(batch, device, dtype)

Running ``forward`` over consecutive chunks with the carried state, or ``step`` over every time
step, gives the same outputs as one ``forward`` over the whole sequence.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..cells.factory import BUILTIN_CELLS, CellSpec, build_cell, refuse_builtin_settings, resolve_cell, solver_settings
from ..cells.headwise import check_head_sizes
from .conv import CausalConv1d
from .norms import GatedRMSNorm
from .ssd import ssd_chunked, ssd_step

#: the built-in cells by name (a ``cell`` may also be a user cell: :mod:`pararnn_ts.cells.factory`)
RNN_CELLS = BUILTIN_CELLS
#: the default ``max_norm`` of :class:`ParaRNNMixer` (paper: 0.5 for LMs)
MAX_NORM = 0.5
#: the arguments of :class:`ParaRNNMixer` besides ``dim`` that are its own, not its cell's
MIXER_ARGUMENTS = ("hidden", "conv_kernel")


def _wide(dtype: torch.dtype) -> torch.dtype:
    """float32, or ``dtype`` when it is wider: the dtype recurrent states are kept in."""
    return torch.promote_types(dtype, torch.float32)


def _check_positive(owner: str, **values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{owner}: {name} must be a positive int, got {value!r}")


def builtin_cell_settings(
    num_heads: int = 1, max_norm: float | None = MAX_NORM, **solver_kwargs: Any
) -> dict[str, tuple[Any, Any]]:
    """The arguments of :class:`ParaRNNMixer` that configure its built-in cell, each as ``name=(value, default)``
    (for :func:`~pararnn_ts.cells.factory.refuse_builtin_settings`)."""
    return {"num_heads": (num_heads, 1), "max_norm": (max_norm, MAX_NORM), **solver_settings(solver_kwargs)}


class ParaRNNMixer(nn.Module):
    """The paper's ParaRNN block (Fig. 9)::

        u = silu(conv(W_in x))           short causal depthwise convolution
        h = cell(u)                      ParaGRU / ParaLSTM (head-wise input projection inside), or a user cell
        y = W_out GatedRMSNorm(h, gate=W_gate x)

    Args:
        dim: features of ``x`` and ``y``.
        cell: ``"gru"`` (ParaGRU), ``"lstm"`` (ParaLSTM), or a user cell: a callable ``cell(input_size,
            hidden_size) → ParaCell`` such as a :class:`~pararnn_ts.core.cell.ParaCell` subclass, called as
            ``cell(hidden, hidden)``, whose output (``output_size``) must be ``hidden`` wide (see
            :mod:`pararnn_ts.cells.factory`).
        num_heads: heads of the cell's block-diagonal input projection; must divide ``hidden``.
        hidden: the cell's hidden size (default ``dim``).
        conv_kernel: taps of the causal convolution.
        max_norm: norm clip of the cell's recurrent diagonals (paper: 0.5 for LMs).
        solver_kwargs: ``mode``, ``fused_backend``, ``tol``, ... for :class:`~pararnn_ts.core.cell.ParaCell`.

    ``num_heads``, ``max_norm`` and ``solver_kwargs`` configure the built-in cells only: with a user cell, which takes
    its own settings through its arguments, they must keep their defaults (a ``ValueError`` names those that do not).

    State: ``(conv_state (B, conv_kernel-1, hidden), cell_state)`` with the cell's own state form
    (ParaGRU: ``(B, hidden)``; ParaLSTM: the pair ``(c, h)``).
    """

    def __init__(
        self,
        dim: int,
        cell: CellSpec = "gru",
        num_heads: int = 1,
        hidden: int | None = None,
        conv_kernel: int = 4,
        max_norm: float | None = MAX_NORM,
        **solver_kwargs: Any,
    ) -> None:
        super().__init__()
        cell = resolve_cell(cell, "ParaRNNMixer")
        _check_positive("ParaRNNMixer", dim=dim)
        check_head_sizes("ParaRNNMixer", num_heads, **({"dim": dim} if hidden is None else {"hidden": hidden}))
        refuse_builtin_settings("ParaRNNMixer", cell, **builtin_cell_settings(num_heads, max_norm, **solver_kwargs))
        size_name = "dim" if hidden is None else "hidden"
        hidden = dim if hidden is None else hidden
        self.dim, self.hidden = dim, hidden
        self.in_proj = nn.Linear(dim, hidden, bias=False)
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.conv = CausalConv1d(hidden, conv_kernel)
        self.cell = build_cell(
            cell, hidden, hidden, "ParaRNNMixer", size_name, num_heads=num_heads, max_norm=max_norm, **solver_kwargs
        )
        self.norm = GatedRMSNorm(hidden)
        self.out_proj = nn.Linear(hidden, dim, bias=False)

    def init_state(self, batch: int, device: torch.device | None = None, dtype: torch.dtype | None = None) -> tuple:
        dtype = dtype or torch.get_default_dtype()
        cell_state = torch.zeros(batch, *self.cell.state_shape, device=device, dtype=_wide(dtype))
        return self.conv.init_state(batch, device, dtype), self.cell.tensor_to_state(cell_state)

    def forward(self, x: Tensor, state: tuple | None = None) -> tuple[Tensor, tuple]:
        """``x`` ``(B, T, dim)`` → ``y`` ``(B, T, dim)`` and the state after the last step."""
        conv_state, cell_state = (None, None) if state is None else state
        u, conv_state = self.conv(self.in_proj(x), conv_state)
        h, cell_state = self.cell(F.silu(u), cell_state)
        return self.out_proj(self.norm(h.to(x.dtype), self.gate_proj(x))), (conv_state, cell_state)

    def step(self, x_t: Tensor, state: tuple | None = None) -> tuple[Tensor, tuple]:
        """``x_t`` ``(B, dim)`` → ``y_t`` ``(B, dim)`` and the next state."""
        conv_state, cell_state = self.init_state(x_t.shape[0], x_t.device, x_t.dtype) if state is None else state
        u_t, conv_state = self.conv.step(self.in_proj(x_t), conv_state)
        cell_state = self.cell.step(F.silu(u_t), cell_state)
        h_t = self.cell.output(self.cell.state_to_tensor(cell_state))
        return self.out_proj(self.norm(h_t.to(x_t.dtype), self.gate_proj(x_t))), (conv_state, cell_state)


class AttentionMixer(nn.Module):
    """Causal multi-head self-attention with rotary position embeddings (half-split convention).

    State: the key/value cache ``(k (B, H, S, dim/H), v (B, H, S, dim/H), position)`` with keys
    already rotated and ``position = S`` the number of steps seen. Memory grows with ``S``.
    """

    def __init__(self, dim: int, num_heads: int = 1, rope_base: float = 10000.0) -> None:
        super().__init__()
        check_head_sizes("AttentionMixer", num_heads, dim=dim)
        if (dim // num_heads) % 2:
            head = dim // num_heads
            raise ValueError(f"AttentionMixer: dim // num_heads = {head} must be even for rotary embeddings")
        if not rope_base > 0:
            raise ValueError(f"AttentionMixer: rope_base must be > 0, got {rope_base}")
        self.dim, self.num_heads, self.rope_base = dim, num_heads, rope_base
        self.qkv_proj = nn.Linear(dim, 3 * dim, bias=False)
        self.out_proj = nn.Linear(dim, dim, bias=False)

    def init_state(self, batch: int, device: torch.device | None = None, dtype: torch.dtype | None = None) -> tuple:
        empty = torch.zeros(batch, self.num_heads, 0, self.dim // self.num_heads, device=device, dtype=dtype)
        return empty, empty, 0

    def forward(self, x: Tensor, state: tuple | None = None) -> tuple[Tensor, tuple]:
        """``x`` ``(B, T, dim)`` → ``y`` ``(B, T, dim)`` and the cache extended by these ``T`` steps."""
        batch, steps, _ = x.shape
        head = self.dim // self.num_heads  # not -1: an empty batch has no size to infer it from
        q, k, v = self.qkv_proj(x).view(batch, steps, 3, self.num_heads, head).permute(2, 0, 3, 1, 4)
        past = 0 if state is None else state[2]
        q, k = self._rotate(q, past), self._rotate(k, past)
        if state is not None:
            k = torch.cat([state[0].to(k.dtype), k], dim=2)
            v = torch.cat([state[1].to(v.dtype), v], dim=2)
        if past == 0:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # query i sits at position past + i and sees keys 0 .. past + i
            positions = torch.arange(past + steps, device=x.device)
            visible = positions[past:, None] >= positions
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=visible)
        return self.out_proj(y.transpose(1, 2).flatten(2)), (k, v, past + steps)

    def step(self, x_t: Tensor, state: tuple | None = None) -> tuple[Tensor, tuple]:
        """``x_t`` ``(B, dim)`` → ``y_t`` ``(B, dim)`` and the cache extended by one step."""
        y, state = self.forward(x_t.unsqueeze(1), state)
        return y[:, 0], state

    def _rotate(self, x: Tensor, offset: int) -> Tensor:
        """Rotary embedding of ``x`` ``(B, H, T, head)`` at positions ``offset .. offset + T - 1``."""
        head, steps, dtype = x.shape[-1], x.shape[-2], _wide(x.dtype)
        inv_freq = self.rope_base ** (-torch.arange(0, head, 2, device=x.device, dtype=dtype) / head)
        angles = torch.arange(offset, offset + steps, device=x.device, dtype=dtype)[:, None] * inv_freq
        cos, sin = angles.cos(), angles.sin()
        x1, x2 = x.to(dtype).chunk(2, dim=-1)
        return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).to(x.dtype)


class Mamba2Mixer(nn.Module):
    """A Mamba2-style selective state-space mixer (one group of ``B``/``C`` shared by the heads)::

        z, xBC, dt = W_in x
        x, B, C    = silu(conv(xBC))
        dt         = softplus(dt + dt_bias),  A = −exp(A_log)     (one decay per head)
        y          = SSD(x, dt, A, B, C) + D ⊙ x
        out        = W_out GatedRMSNorm(y, gate=z)

    ``forward`` runs the plain-PyTorch chunked SSD (:func:`~pararnn_ts.nn.ssd.ssd_chunked`),
    ``step`` the recurrence. Inner size ``expand · dim`` is split into ``num_heads`` heads.

    State: ``(conv_state (B, conv_kernel-1, expand·dim + 2·state_size), ssm_state (B, H, head, state_size))``,
    the SSM state in float32 or wider.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 1,
        state_size: int = 64,
        expand: int = 2,
        conv_kernel: int = 4,
        chunk_size: int = 64,
    ) -> None:
        super().__init__()
        _check_positive("Mamba2Mixer", dim=dim, state_size=state_size, expand=expand, chunk_size=chunk_size)
        check_head_sizes("Mamba2Mixer", num_heads, inner_size=expand * dim)
        self.dim, self.num_heads, self.state_size, self.chunk_size = dim, num_heads, state_size, chunk_size
        self.inner = inner = expand * dim
        self.in_proj = nn.Linear(dim, 2 * inner + 2 * state_size + num_heads, bias=False)
        self.conv = CausalConv1d(inner + 2 * state_size, conv_kernel)
        self.A_log = nn.Parameter(torch.empty(num_heads))
        self.dt_bias = nn.Parameter(torch.empty(num_heads))
        self.D = nn.Parameter(torch.empty(num_heads))
        self.norm = GatedRMSNorm(inner)
        self.out_proj = nn.Linear(inner, dim, bias=False)
        self.reset_parameters()

    def reset_parameters(self, dt_min: float = 1e-3, dt_max: float = 0.1) -> None:
        """Mamba2's initialisation: ``A`` uniform in [1, 16], ``dt`` log-uniform in [dt_min, dt_max], ``D = 1``."""
        with torch.no_grad():
            self.A_log.copy_(torch.empty_like(self.A_log).uniform_(1, 16).log())
            dt = torch.empty_like(self.dt_bias).uniform_(math.log(dt_min), math.log(dt_max)).exp()
            self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus⁻¹(dt)
            self.D.fill_(1.0)

    def init_state(self, batch: int, device: torch.device | None = None, dtype: torch.dtype | None = None) -> tuple:
        dtype = dtype or torch.get_default_dtype()
        head = self.inner // self.num_heads
        ssm_state = torch.zeros(batch, self.num_heads, head, self.state_size, device=device, dtype=_wide(dtype))
        return self.conv.init_state(batch, device, dtype), ssm_state

    def forward(self, x: Tensor, state: tuple | None = None) -> tuple[Tensor, tuple]:
        """``x`` ``(B, T, dim)`` → ``y`` ``(B, T, dim)`` and the state after the last step."""
        conv_state, ssm_state = (None, None) if state is None else state
        z, xbc, dt = self.in_proj(x).split([self.inner, self.inner + 2 * self.state_size, self.num_heads], dim=-1)
        xbc, conv_state = self.conv(xbc, conv_state)
        xs, B, C, dt, A = self._ssm_inputs(xbc, dt)
        y, ssm_state = ssd_chunked(xs, dt, A, B, C, self.chunk_size, ssm_state)
        return self._output(y, xs, z), (conv_state, ssm_state)

    def step(self, x_t: Tensor, state: tuple | None = None) -> tuple[Tensor, tuple]:
        """``x_t`` ``(B, dim)`` → ``y_t`` ``(B, dim)`` and the next state."""
        conv_state, ssm_state = self.init_state(x_t.shape[0], x_t.device, x_t.dtype) if state is None else state
        z, xbc, dt = self.in_proj(x_t).split([self.inner, self.inner + 2 * self.state_size, self.num_heads], dim=-1)
        xbc, conv_state = self.conv.step(xbc, conv_state)
        xs, B, C, dt, A = self._ssm_inputs(xbc, dt)
        y, ssm_state = ssd_step(xs, dt, A, B, C, ssm_state)
        return self._output(y, xs, z), (conv_state, ssm_state)

    def _ssm_inputs(self, xbc: Tensor, dt: Tensor) -> tuple[Tensor, ...]:
        """Split the convolved features into heads ``x (..., H, head)``, ``B``, ``C`` ``(..., N)``; positive ``dt``."""
        wide = _wide(xbc.dtype)
        xs, B, C = F.silu(xbc).to(wide).split([self.inner, self.state_size, self.state_size], dim=-1)
        dt = F.softplus(dt.to(wide) + self.dt_bias.to(wide))
        return xs.unflatten(-1, (self.num_heads, -1)), B, C, dt, -self.A_log.to(wide).exp()

    def _output(self, y: Tensor, xs: Tensor, z: Tensor) -> Tensor:
        y = (y + self.D.to(y.dtype)[:, None] * xs).flatten(-2).to(z.dtype)
        return self.out_proj(self.norm(y, z))
