"""``mode="fused"`` / ``"auto"`` dispatch: which backend runs, fallbacks, the policy on fused Newton stats."""

from __future__ import annotations

import copy
import types
import warnings

import pytest
import torch
from conftest import make_cell, rel_err

from pararnn_ts import NewtonConvergenceError, ParaGRU, ParaLSTM
from pararnn_ts.core.autograd import sequential_solve
from pararnn_ts.ops import fused as fused_ops


def fake_backend(residual: float, iterations: int = 3) -> types.ModuleType:
    """A backend computing GRU with the PyTorch loop and reporting the given Newton stats."""
    module = types.ModuleType("fake")
    module.unavailable_reason = lambda device: None

    def gru_forward(u, A, h0, tol, max_iters):
        cell = ParaGRU(1, u.shape[-1], max_norm=None).to(u.dtype)
        with torch.no_grad():
            cell.A.copy_(A)
            h = sequential_solve(cell, u, h0)
        return h, torch.tensor([residual, iterations], dtype=torch.float32)

    module.gru_forward = gru_forward
    return module


@pytest.fixture
def fake(monkeypatch):
    modules = {}

    def install(residual: float) -> None:
        modules["fake"] = fake_backend(residual)

    real = fused_ops.backend_module
    monkeypatch.setattr(fused_ops, "backend_module", lambda name: modules.get(name) or real(name))
    monkeypatch.setitem(fused_ops._MODULES, "fake", "fake")
    monkeypatch.setattr(fused_ops, "BACKENDS", (*fused_ops.BACKENDS, "fake"))
    monkeypatch.setitem(fused_ops.AUTO_ORDER, "cpu", ("fake",))
    return install


def gru(**kwargs) -> ParaGRU:
    return make_cell("paragru", torch.float64, **kwargs)


def test_auto_reports_the_backend_that_ran(fake):
    fake(residual=0.0)
    cell = gru(mode="auto")
    x = torch.randn(2, 9, 6, dtype=torch.float64)
    y, _ = cell(x)
    assert (cell.last_stats.mode, cell.last_stats.backend) == ("fused", "fake")
    assert cell.last_stats.iterations == 3 and cell.last_stats.converged
    y_seq, _ = gru(mode="sequential")(x)
    assert rel_err(y_seq, y) < 1e-12


@pytest.mark.parametrize("fallback", ["sequential", "warn", "raise"])
def test_fused_newton_stats_follow_the_fallback_policy(fake, fallback):
    fake(residual=float("nan"))
    cell = gru(mode="fused", fallback=fallback)
    x = torch.randn(2, 9, 6, dtype=torch.float64)
    if fallback == "raise":
        with pytest.raises(NewtonConvergenceError, match="fused mode, fake"):
            cell(x)
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cell(x)
    assert not cell.last_stats.converged
    assert cell.last_stats.fell_back == (fallback == "sequential")
    assert any("did not converge" in str(w.message) for w in caught)  # the loop's fallback warns too (once a cell)


def test_exact_solve_needs_a_backend_with_exact_kernels(fake):
    fake(residual=0.0)
    u, A, h0 = torch.zeros(1, 4, 3, 5), torch.zeros(3, 5), torch.zeros(1, 5)
    with pytest.raises(ValueError, match="the fake backend has no exact kernels"):
        fused_ops.fused_solve("fake", "gru", u, h0, (A,), 1e-6, 12, exact=True)


def test_fused_without_a_kernel_warns_once_and_runs_the_pytorch_mode(monkeypatch):
    monkeypatch.setattr(fused_ops, "_warned", set())
    cell = make_cell("oscillator", torch.float64, mode="fused")
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="has no fused kernel"):
        cell(x)
    assert cell.last_stats.mode == "sequential" and cell.last_stats.backend == "pytorch"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cell(x)


def test_unavailable_backend_falls_back_with_the_reason(monkeypatch):
    monkeypatch.setitem(fused_ops.AUTO_ORDER, "cpu", ("cpu",))
    monkeypatch.setattr(fused_ops, "unavailable_reason", lambda name, device: "no compiler (test)")
    monkeypatch.setattr(fused_ops, "_warned", set())
    cell = gru(mode="fused")
    with pytest.warns(RuntimeWarning, match=r"no compiler \(test\)"):
        cell(torch.randn(1, 4, 6, dtype=torch.float64))
    assert cell.last_stats.mode == "sequential"
    auto = gru(mode="auto")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # auto falls back silently
        auto(torch.randn(1, 4, 6, dtype=torch.float64))
    assert auto.last_stats.mode == "sequential"
    monkeypatch.setattr(fused_ops, "_warned", set())
    named = gru(mode="auto", fused_backend="cpu")  # unless the backend was named
    with pytest.warns(RuntimeWarning, match=r'fused_backend="cpu" cannot run here \(cpu: no compiler \(test\)\)'):
        named(torch.randn(1, 4, 6, dtype=torch.float64))
    assert named.last_stats.mode == "sequential"


@pytest.mark.parametrize("mode", ["auto", "fused"])
def test_a_named_backend_that_cannot_run_warns_under_torch_compile_fullgraph_too(monkeypatch, mode):
    """The warning is given as Dynamo traces: warning from inside the graph broke it (the caller's frame)."""
    monkeypatch.setattr(fused_ops, "_warned", set())
    cell = gru(mode=mode, fused_backend="cuda")
    with pytest.warns(RuntimeWarning, match=r"cannot run here \(cuda: "):
        y, _ = torch.compile(cell, backend="aot_eager", fullgraph=True)(torch.randn(1, 4, 6, dtype=torch.float64))
    assert cell.last_stats.mode == "sequential" and y.shape == (1, 4, cell.output_size)


def test_gpu_float64_is_not_sent_to_float32_kernels():
    cell = gru()
    assert cell._fused_backend_for(torch.device("cuda"), torch.float64)[0] is None


def test_bad_backend_names_are_rejected():
    with pytest.raises(ValueError, match="fused_backend='tpu'"):
        gru(fused_backend="tpu")
    with pytest.raises(ValueError, match="backend='tpu'"):
        fused_ops.backend_module("tpu")


@pytest.mark.parametrize("backend", ["cpu", "triton"])
@pytest.mark.parametrize("name", ["paragru", "paralstm"])
def test_fused_cell_matches_sequential_with_clipping_and_all_parameter_grads(name, backend):
    """End to end through the cell: projection, norm clipping of A and C, the fused kernel, every gradient."""
    dtype = torch.float64 if backend == "cpu" else torch.float32  # the Triton kernels compute in float32
    # Triton: on the GPU where there is one, else on CPU tensors in the interpreter (see conftest)
    device = "cuda" if backend == "triton" and torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    cls = ParaGRU if name == "paragru" else ParaLSTM
    fused = cls(6, 15, num_heads=3, max_norm=0.3, mode="fused", fused_backend=backend).to(device, dtype)
    with torch.no_grad():
        fused.A.uniform_(-0.9, 0.9)  # rows with norm above max_norm: the clipping is active
    reference = copy.deepcopy(fused)
    reference.mode = "sequential"
    x = torch.randn(2, 37, 6, dtype=dtype, device=device)
    outs = []
    for cell in (fused, reference):
        xi = x.clone().requires_grad_()
        y, _ = cell(xi)
        weights = torch.linspace(-1, 1, y.shape[-1], dtype=dtype, device=device)
        g = torch.autograd.grad((y * weights).sum(), [xi, *cell.parameters()])
        outs.append((y, *g))
    assert (fused.last_stats.mode, fused.last_stats.backend) == ("fused", backend)
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    for got, ref in zip(*outs, strict=True):
        assert rel_err(ref, got) < tol


@pytest.mark.parametrize("backend", ["cpu", "triton"])
@pytest.mark.parametrize("name", ["paragru", "paralstm"])
def test_fused_cell_without_a_graph_clips_like_the_sequential_mode(name, backend):
    """Under ``no_grad`` the fused solve gets the raw weights and ``max_norm`` (Triton clips in its kernel,
    the others before it): the same states as the sequential mode with its own clipping."""
    device = "cuda" if backend == "triton" and torch.cuda.is_available() else "cpu"
    torch.manual_seed(1)
    cls = ParaGRU if name == "paragru" else ParaLSTM
    fused = cls(6, 15, num_heads=3, max_norm=0.3, mode="fused", fused_backend=backend).to(device)
    with torch.no_grad():
        for p in fused.recurrent_parameters():
            p.uniform_(-0.9, 0.9)  # rows with norm above max_norm: the clipping is active
    reference = copy.deepcopy(fused)
    reference.mode = "sequential"
    x = torch.randn(2, 37, 6, device=device)
    with torch.no_grad():
        y, _ = fused(x)
        want, _ = reference(x)
    assert (fused.last_stats.mode, fused.last_stats.backend) == ("fused", backend)
    assert rel_err(want, y) < 1e-5


@pytest.mark.parametrize("kernel", ["gru", "lstm"])
def test_solve_without_a_graph_matches_the_autograd_path(kernel):
    """With nothing to differentiate, ``fused_solve`` calls the kernel directly: same ``h``, same stats."""
    torch.manual_seed(0)
    cell = (ParaGRU if kernel == "gru" else ParaLSTM)(4, 13, num_heads=1, max_norm=0.4).double()
    u = cell.project(torch.randn(3, 21, 4, dtype=torch.float64)).detach()
    h0 = 0.5 * torch.randn(3, *cell.state_shape, dtype=torch.float64)
    weights = tuple(w.detach() for w in cell.fused_weights())
    with torch.no_grad():
        h_plain, stats_plain = fused_ops.fused_solve("cpu", kernel, u, h0, weights, 1e-10, 12)
    h_graph, stats_graph = fused_ops.fused_solve("cpu", kernel, u.requires_grad_(), h0, weights, 1e-10, 12)
    assert h_graph.grad_fn is not None and h_plain.grad_fn is None
    torch.testing.assert_close(h_plain, h_graph.detach(), rtol=0, atol=0)
    assert (stats_plain is None) == (stats_graph is None)
