"""The selective state-space recurrence of Mamba2 ("SSD"): a chunked reference and a sequential twin.

With a scalar decay per head, for each head ``h``, channel ``p`` and state index ``n``::

    S_t = exp(dt_t · A) · S_{t-1} + dt_t · x_t ⊗ B_t        S_t: (P, N)
    y_t = S_t C_t

Shapes (``Bt`` batch, ``T`` time, ``H`` heads, ``P`` head size, ``N`` state size):
``x`` ``(Bt, T, H, P)``, ``dt`` ``(Bt, T, H)`` (positive), ``A`` ``(H,)`` (negative), ``B`` and ``C``
``(Bt, T, N)`` (shared by the heads), state ``(Bt, H, P, N)``; ``y`` ``(Bt, T, H, P)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def ssd_step(x_t: Tensor, dt_t: Tensor, A: Tensor, B_t: Tensor, C_t: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
    """One step: ``x_t`` ``(Bt, H, P)``, ``dt_t`` ``(Bt, H)``, ``B_t``, ``C_t`` ``(Bt, N)`` → ``y_t``, next state."""
    decay = torch.exp(dt_t * A)[..., None, None]
    state = decay * state + torch.einsum("bhp,bn->bhpn", x_t * dt_t.unsqueeze(-1), B_t)
    return torch.einsum("bhpn,bn->bhp", state, C_t), state


def ssd_sequential(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """The recurrence as a loop over time (the reference the chunked form is tested against)."""
    state = _zero_state(x, B) if state is None else state
    ys = []
    for t in range(x.shape[1]):
        y_t, state = ssd_step(x[:, t], dt[:, t], A, B[:, t], C[:, t], state)
        ys.append(y_t)
    return torch.stack(ys, dim=1), state


def ssd_chunked(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk_size: int, state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """The same recurrence, quadratic inside chunks of ``chunk_size`` steps and recurrent between them.

    The sequence is padded to whole chunks with ``dt = 0`` steps, which leave the state unchanged.
    """
    steps = x.shape[1]
    pad = -steps % chunk_size
    if pad:
        x, dt, B, C = (F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)) for t in (x, dt, B, C))
    chunks = x.shape[1] // chunk_size
    x = x.unflatten(1, (chunks, chunk_size))  # (Bt, c, L, H, P)
    dt, B, C = (t.unflatten(1, (chunks, chunk_size)) for t in (dt, B, C))
    log_decay = (dt * A).cumsum(dim=2)  # (Bt, c, L, H): log of the decay from the chunk start to step l
    x_dt = x * dt.unsqueeze(-1)

    # Inside a chunk: y_i = Σ_{j≤i} (C_i·B_j) exp(log_decay_i − log_decay_j) dt_j x_j.
    causal = torch.ones(chunk_size, chunk_size, dtype=torch.bool, device=x.device).tril()
    pair_log_decay = log_decay.unsqueeze(3) - log_decay.unsqueeze(2)  # (Bt, c, i, j, H)
    pair_decay = pair_log_decay.masked_fill(~causal[..., None], float("-inf")).exp()
    scores = torch.einsum("bcin,bcjn->bcij", C, B)
    y_within = torch.einsum("bcij,bcijh,bcjhp->bcihp", scores, pair_decay, x_dt)

    # Each chunk's own contribution to the state at its end, and its total decay.
    decay_to_end = (log_decay[:, :, -1:] - log_decay).exp()  # (Bt, c, L, H)
    chunk_states = torch.einsum("bclh,bclhp,bcln->bchpn", decay_to_end, x_dt, B)
    chunk_decay = log_decay[:, :, -1].exp()[..., None, None]  # (Bt, c, H, 1, 1)

    # Between chunks: carry the state, remembering the one each chunk starts from.
    state = _zero_state(x, B) if state is None else state
    entering = []
    for c in range(chunks):
        entering.append(state)
        state = chunk_decay[:, c] * state + chunk_states[:, c]
    y_carried = torch.einsum("bcln,bchpn,bclh->bclhp", C, torch.stack(entering, dim=1), log_decay.exp())

    y = (y_within + y_carried).flatten(1, 2)[:, :steps]
    return y, state


def _zero_state(x: Tensor, B: Tensor) -> Tensor:
    return x.new_zeros(x.shape[0], x.shape[-2], x.shape[-1], B.shape[-1])
