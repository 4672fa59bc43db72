"""Fused GPU kernels (Triton and CUDA C++) at full size against float64 PyTorch twins; needs a GPU.

Forward: T up to 65536 against the float64 sequential loop, outputs poisoned (NaN) before each
run. Gradients: T = 8192 against the float64 parallel mode (adjoint scan + VJP), fresh inputs.
"""

from __future__ import annotations

import pytest
import torch

from pararnn_ts import ParaGRU, ParaLSTM
from pararnn_ts.ops import fused_solve, triton_fused, unavailable_reason

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

B, D = 16, 1024
CELLS = {"gru": ParaGRU, "lstm": ParaLSTM}


def make(kernel: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    cell = CELLS[kernel](8, D, num_heads=1, max_norm=None).cuda()
    with torch.no_grad():
        for w in cell.fused_weights():
            w.uniform_(-0.9, 0.9)
    return cell


def inputs(cell, T: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator(device="cuda").manual_seed(seed)
    u = torch.randn(B, T, 3, D, device="cuda", generator=g)
    h0 = 0.5 * torch.randn(B, *cell.state_shape, device="cuda", generator=g)
    return u, h0


def require_backend(name: str) -> None:
    reason = unavailable_reason(name, torch.device("cuda"))
    if reason is not None:
        pytest.fail(f"{name} backend cannot run on this GPU: {reason}")


def max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest ``|a - b|`` over largest ``|b|``, in float64 one batch row at a time (T=65536 fills the GPU)."""
    err = max((x.double() - y.double()).abs().max().item() for x, y in zip(a, b, strict=True))
    return err / max(y.abs().max().item() for y in b)


@pytest.mark.parametrize("T", [2048, 65536])
@pytest.mark.parametrize("kernel", ["gru", "lstm"])
@pytest.mark.parametrize("backend", ["triton", "triton-fast-math", "cuda"])
def test_forward_full_size_matches_float64_loop(backend, kernel, T, monkeypatch):
    backend, _, fast_math = backend.partition("-")
    require_backend(backend)
    if fast_math:  # the approximate tanh: h still within the float32 kernels' tolerance
        monkeypatch.setattr(triton_fused, "fast_math", True)
    cell = make(kernel, seed=T)
    u, h0 = inputs(cell, T, seed=T + 1)
    weights = cell.fused_weights()
    torch.cuda.empty_cache()
    with torch.no_grad():
        # Poison: an all-NaN allocation handed back to the caching allocator, so unwritten outputs show.
        torch.full((B, T, *cell.state_shape), float("nan"), device="cuda")
        h, stats = fused_solve(backend, kernel, u, h0, weights, tol=32 * torch.finfo(torch.float32).eps, max_iters=12)
        assert torch.isfinite(h).all(), "kernel left outputs unwritten or produced NaN"
        if stats is not None:  # None: the exact sequential kernel ran (Triton's choice at this size)
            residual, iterations = stats.tolist()
            assert residual <= 32 * torch.finfo(torch.float32).eps and iterations <= 12
        ref = torch.empty_like(h)
        cell64 = cell.double()
        state = h0.double()
        for t in range(T):
            state = cell64.recurrence(state, u[:, t].double())
            ref[:, t] = state
    assert max_rel(h, ref) < 1e-4


@pytest.mark.parametrize("kernel", ["gru", "lstm"])
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_gradients_full_size_match_float64_adjoint(backend, kernel):
    require_backend(backend)
    T = 8192
    cell = make(kernel, seed=7)
    u, h0 = inputs(cell, T, seed=8)
    weights = [w.detach().requires_grad_() for w in cell.fused_weights()]
    u.requires_grad_()
    h0.requires_grad_()
    h, _ = fused_solve(backend, kernel, u, h0, tuple(weights), tol=32 * torch.finfo(torch.float32).eps, max_iters=12)
    g = torch.randn_like(h)
    grads = torch.autograd.grad(h, [u, h0, *weights], g)

    cell64 = cell.double()
    cell64.mode = "parallel"
    u64, h064 = u.detach().double().requires_grad_(), h0.detach().double().requires_grad_()
    params = list(cell64.fused_weights())
    h64 = cell64.solve(u64, h064)
    refs = torch.autograd.grad(h64, [u64, h064, *params], g.double())
    assert max_rel(h, h64) < 1e-4
    for name, got, ref in zip(["u", "h0", "A", "C"], grads, refs, strict=False):
        assert torch.isfinite(got).all(), name
        assert max_rel(got, ref) < 1e-3, name
