"""The LM backbone: pre-norm residual blocks of a sequence mixer and a SwiGLU MLP."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..cells.factory import CellFactory, describe_cell
from ..core import ParaCell
from .mixers import AttentionMixer, Mamba2Mixer, ParaRNNMixer
from .mlp import SwiGLU
from .norms import RMSNorm

MixerName = Literal["paragru", "paralstm", "transformer", "mamba2"]
#: each mixer's class and the arguments its name fixes
MIXER_SPECS: dict[str, tuple[type[nn.Module], dict[str, Any]]] = {
    "paragru": (ParaRNNMixer, {"cell": "gru"}),
    "paralstm": (ParaRNNMixer, {"cell": "lstm"}),
    "transformer": (AttentionMixer, {}),
    "mamba2": (Mamba2Mixer, {}),
}
MIXERS = tuple(MIXER_SPECS)
#: the mixers whose cell a user cell can replace
RNN_MIXERS = tuple(name for name, (_, fixed) in MIXER_SPECS.items() if "cell" in fixed)


def build_mixer(
    name: MixerName, dim: int, num_heads: int, cell: CellFactory | None = None, **mixer_kwargs: Any
) -> nn.Module:
    """The mixer called ``name`` (one of :data:`MIXERS`) with ``mixer_kwargs`` passed to its class; ``cell``: a user
    cell that replaces the ParaGRU/ParaLSTM of a ParaRNN mixer (``"paragru"``, ``"paralstm"``)."""
    if name not in MIXER_SPECS:
        raise ValueError(f"mixer={name!r} is not one of {MIXERS}")
    check_mixer_cell(name, cell)
    cls, fixed = MIXER_SPECS[name]
    if cell is not None:
        fixed = {**fixed, "cell": cell}
    return cls(dim, num_heads=num_heads, **fixed, **mixer_kwargs)


def check_mixer_cell(mixer: str, cell: Any, owner: str = "LanguageModel") -> None:
    """A ``ValueError`` unless ``cell`` is ``None`` or goes with ``mixer``: a user cell replaces the cell of a ParaRNN
    mixer, and a cell name is the mixer's name (``"paragru"``, ``"paralstm"``)."""
    if cell is None:
        return
    if isinstance(cell, str):
        raise ValueError(
            f"{owner}: cell={cell!r}: the mixer names the built-in cell (mixer='paragru' or 'paralstm'); cell is "
            "for a user cell (a ParaCell subclass, or in a config cell: {class_path: my_cells.MyCell})"
        )
    if mixer not in RNN_MIXERS:
        raise ValueError(
            f"{owner}: cell={describe_cell(cell)} replaces the cell of a ParaRNN mixer {RNN_MIXERS}, but "
            f"mixer={mixer!r} has none: use mixer='paragru' with it, or drop cell"
        )


class Block(nn.Module):
    """``x ← x + scale ⊙ mixer(RMSNorm(x))``, then ``x ← x + SwiGLU(RMSNorm(x))``.

    ``scale`` ``(dim,)`` is the learnable scale of the mixer branch on the residual (ones at
    initialisation). ``mlp_hidden=0`` leaves the MLP out (Mamba2's own recipe). The state is the
    mixer's; shapes ``(B, T, dim)`` in ``forward``, ``(B, dim)`` in ``step``.
    """

    def __init__(self, dim: int, mixer: nn.Module, mlp_hidden: int, norm_eps: float = 1e-6) -> None:
        super().__init__()
        if not isinstance(mlp_hidden, int) or mlp_hidden < 0:
            raise ValueError(f"Block: mlp_hidden must be an int >= 0 (0: no MLP), got {mlp_hidden!r}")
        self.mixer_norm = RMSNorm(dim, norm_eps)
        self.mixer = mixer
        self.scale = nn.Parameter(torch.empty(dim))
        self.mlp_norm = RMSNorm(dim, norm_eps) if mlp_hidden else None
        self.mlp = SwiGLU(dim, mlp_hidden) if mlp_hidden else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Ones for the residual scale (the submodules initialise themselves)."""
        nn.init.ones_(self.scale)

    def init_state(self, batch: int, device: torch.device | None = None, dtype: torch.dtype | None = None) -> Any:
        return self.mixer.init_state(batch, device, dtype)

    def forward(self, x: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        """``x`` ``(B, T, dim)`` → ``(B, T, dim)`` and the mixer's next state."""
        y, state = self.mixer(self.mixer_norm(x), state)
        return self._mlp(x + self.scale * y), state

    def step(self, x_t: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        """``x_t`` ``(B, dim)`` → ``(B, dim)`` and the mixer's next state."""
        y_t, state = self.mixer.step(self.mixer_norm(x_t), state)
        return self._mlp(x_t + self.scale * y_t), state

    def _mlp(self, x: Tensor) -> Tensor:
        return x if self.mlp is None else x + self.mlp(self.mlp_norm(x))


class LanguageModel(nn.Module):
    """A causal LM: token embedding → ``num_layers`` :class:`Block` s → RMSNorm → logits.

    Args:
        vocab_size: number of tokens.
        dim: model width.
        num_layers: number of blocks.
        mixer: ``"paragru"``, ``"paralstm"`` (:class:`~pararnn_ts.nn.mixers.ParaRNNMixer`),
            ``"transformer"`` (:class:`~pararnn_ts.nn.mixers.AttentionMixer`) or ``"mamba2"``
            (:class:`~pararnn_ts.nn.mixers.Mamba2Mixer`).
        num_heads: heads of the mixer (with a user ``cell``: 1).
        mlp_ratio: SwiGLU hidden size over ``dim``, rounded up to a multiple of ``mlp_multiple_of``;
            0 leaves the MLPs out.
        tie_embeddings: the output projection reuses the embedding matrix.
        init_std: std of the normal init of embeddings and linear layers; the mixers' and MLPs'
            output projections (``out_proj``) get ``init_std / √(2·num_layers)``. Recurrent cells (a user cell's
            linear layers too), convolutions and the SSM's own parameters keep their initialisation.
        cell: a user cell for the ParaRNN mixers: a callable ``cell(input_size, hidden_size) → ParaCell`` (such as
            a :class:`~pararnn_ts.core.cell.ParaCell` subclass) that replaces ParaGRU/ParaLSTM in every block
            (``"paragru"`` and ``"paralstm"`` then build the same blocks), called as ``cell(hidden, hidden)``;
            ``None``: the mixer's own (see :class:`~pararnn_ts.nn.mixers.ParaRNNMixer`).
        mixer_kwargs: passed to the mixer's class (for ParaRNN: ``hidden``, ``conv_kernel``,
            ``max_norm``, ``mode``, ``fused_backend``, ...; with a user ``cell`` those of the cell keep their
            defaults).

    ``forward(tokens)`` gives logits ``(B, T, vocab_size)``; ``forward(tokens, state, return_state=True)``
    also the state after the last token, so a sequence can be processed in pieces; ``step(token, state)``
    decodes one token (constant memory per token for the RNN and SSM mixers). A state is a list
    with one entry per block.
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        num_layers: int,
        mixer: MixerName = "paragru",
        num_heads: int = 1,
        mlp_ratio: float = 8 / 3,
        mlp_multiple_of: int = 64,
        tie_embeddings: bool = True,
        init_std: float = 0.02,
        norm_eps: float = 1e-6,
        cell: CellFactory | None = None,
        **mixer_kwargs: Any,
    ) -> None:
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("dim", dim), ("num_layers", num_layers)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"LanguageModel: {name} must be a positive int, got {value!r}")
        if mixer not in MIXERS:
            raise ValueError(f"LanguageModel: mixer={mixer!r} is not one of {MIXERS}")
        check_mixer_cell(mixer, cell)
        if mlp_ratio < 0 or not isinstance(mlp_multiple_of, int) or mlp_multiple_of < 1:
            raise ValueError(
                f"LanguageModel: mlp_ratio must be >= 0 and mlp_multiple_of a positive int, "
                f"got {mlp_ratio!r} and {mlp_multiple_of!r}"
            )
        self.vocab_size, self.dim, self.num_layers, self.init_std = vocab_size, dim, num_layers, init_std
        self.mlp_hidden = mlp_multiple_of * math.ceil(mlp_ratio * dim / mlp_multiple_of)
        self.embedding = nn.Embedding(vocab_size, dim)
        self.blocks = nn.ModuleList(
            Block(dim, build_mixer(mixer, dim, num_heads, cell, **mixer_kwargs), self.mlp_hidden, norm_eps)
            for _ in range(num_layers)
        )
        self.norm = RMSNorm(dim, norm_eps)
        self.lm_head = None if tie_embeddings else nn.Linear(dim, vocab_size, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """DCLM-style init: normal ``init_std`` for embeddings and linear layers, scaled for ``out_proj``."""
        out_std = self.init_std / math.sqrt(2 * self.num_layers)
        cells = [name for name, module in self.named_modules() if isinstance(module, ParaCell)]
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear) and not any(name.startswith(f"{cell}.") for cell in cells):
                nn.init.normal_(module.weight, std=out_std if name.endswith("out_proj") else self.init_std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.normal_(self.embedding.weight, std=self.init_std)

    @property
    def output_weight(self) -> Tensor:
        """The ``(vocab_size, dim)`` matrix mapping features to logits."""
        return self.embedding.weight if self.lm_head is None else self.lm_head.weight

    def init_state(self, batch: int, device: torch.device | None = None, dtype: torch.dtype | None = None) -> list:
        """The state before the first token: one zero (or empty) mixer state per block."""
        device = device or self.embedding.weight.device
        dtype = dtype or self.embedding.weight.dtype
        return [block.init_state(batch, device, dtype) for block in self.blocks]

    def forward(
        self, tokens: Tensor, state: list | None = None, return_state: bool = False
    ) -> Tensor | tuple[Tensor, list]:
        """``tokens`` ``(B, T)`` → logits ``(B, T, vocab_size)`` (and the next state if ``return_state``)."""
        self._check_tokens(tokens, "tokens", ndim=2)
        x = self.embedding(tokens)
        states = self._layer_states(state)
        for i, block in enumerate(self.blocks):
            x, states[i] = block(x, states[i])
        logits = F.linear(self.norm(x), self.output_weight)
        return (logits, states) if return_state else logits

    def step(self, token: Tensor, state: list | None = None) -> tuple[Tensor, list]:
        """``token`` ``(B,)`` → logits ``(B, vocab_size)`` for the next token, and the next state."""
        self._check_tokens(token, "token", ndim=1)
        x = self.embedding(token)
        states = self._layer_states(state) if state is not None else self.init_state(token.shape[0])
        for i, block in enumerate(self.blocks):
            x, states[i] = block.step(x, states[i])
        return F.linear(self.norm(x), self.output_weight), states

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Number of parameters (tied matrices once); ``exclude_embeddings`` leaves out the embedding
        and an untied output projection."""
        total = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            total -= self.embedding.weight.numel() + (0 if self.lm_head is None else self.lm_head.weight.numel())
        return total

    def _layer_states(self, state: list | None) -> list:
        if state is None:
            return [None] * self.num_layers
        if len(state) != self.num_layers:
            raise ValueError(f"LanguageModel: state has {len(state)} entries, expected num_layers={self.num_layers}")
        return list(state)

    def _check_tokens(self, tokens: Tensor, name: str, ndim: int) -> None:
        layout = "(batch, time)" if ndim == 2 else "(batch,)"
        if not isinstance(tokens, Tensor) or tokens.dim() != ndim or tokens.is_floating_point():
            shape = tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
            raise ValueError(f"LanguageModel: {name} must be an integer tensor {layout}, got {shape}")
