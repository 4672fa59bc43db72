"""The fused CPU kernels (``pararnn_ts.ops.cpu``) against their PyTorch twin, ``sequential_solve``.

The twin runs in float64 on the same data; float32 kernels are held to ~1e-4 relative, float64 to 1e-10.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import make_cell, rel_err

from pararnn_ts.core.autograd import sequential_solve
from pararnn_ts.ops import cpu
from pararnn_ts.ops import fused as fused_ops

TOL = {torch.float64: 1e-10, torch.float32: 1e-4}
# (T, D, batch, scale of u): D not a multiple of the vector width; 135 > one float64 block (128);
# the large scale saturates every gate (the exp clamps).
SIZES = [
    (1, 45, 3, 1.0),
    (17, 75, 1, 1.0),
    (17, 45, 3, 30.0),
    (1000, 135, 3, 1.0),
    (4097, 45, 1, 1.0),
    (4097, 75, 3, 1.0),
]


@pytest.fixture(scope="module")
def kernels():
    reason = cpu.unavailable_reason(torch.device("cpu"))
    if reason is not None:  # CI has a compiler: a build that fails there is a bug, not a skip
        pytest.fail(reason)
    return cpu


def problem(name: str, T: int, D: int, batch: int, scale: float):
    """A float64 cell and random ``u``, ``h0`` and output cotangent ``g``."""
    cell = make_cell(name, torch.float64, hidden=D)
    gen = torch.Generator().manual_seed(T * 1000 + D)
    u = scale * torch.randn(batch, T, 3, D, generator=gen, dtype=torch.float64)
    h0 = 0.5 * torch.randn(batch, *cell.state_shape, generator=gen, dtype=torch.float64)
    g = torch.randn(batch, T, *cell.state_shape, generator=gen, dtype=torch.float64)
    return cell, u, h0, g


def twin(cell, weights, u, h0, g):
    """``h`` and the gradients ``(u, *weights, h0)`` of ``<g, h>`` by autograd through the loop."""
    u, h0 = u.clone().requires_grad_(), h0.clone().requires_grad_()
    h = sequential_solve(cell, u, h0)
    return h.detach(), torch.autograd.grad(h, (u, *weights, h0), g)


def run_kernel(name, u, weights, h0, g):
    """The kernel's ``h`` and ``(grad_u, *grad_weights, grad_h0)``."""
    forward, backward = (
        (cpu.gru_forward, cpu.gru_backward) if name == "paragru" else (cpu.lstm_forward, cpu.lstm_backward)
    )
    h, stats = forward(u, *weights, h0, 0.0, 0)
    assert stats is None
    return h, backward(g, u, *weights, h0, h)


def kernel_weights(name, cell):
    """The cell's parameters in the kernel's argument order (``max_norm=None``: clipped(A) is A)."""
    return (cell.A,) if name == "paragru" else (cell.A, cell.C)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: "T{}-D{}-B{}-x{:g}".format(*s))
@pytest.mark.parametrize("name", ["paragru", "paralstm"])
def test_matches_twin(kernels, name, size, dtype):
    cell, u, h0, g = problem(name, *size)
    weights = kernel_weights(name, cell)
    ref_h, ref_grads = twin(cell, weights, u, h0, g)
    inputs = [x.detach().to(dtype) for x in (u, *weights, h0, g)]
    before = [x.clone() for x in inputs]
    u_k, *weights, h0_k, g_k = inputs
    h, grads = run_kernel(name, u_k, tuple(weights), h0_k, g_k)

    assert h.dtype == dtype and h.shape == ref_h.shape
    assert rel_err(ref_h, h.double()) <= TOL[dtype]
    assert rel_err(ref_h[:, -1], h[:, -1].double()) <= TOL[dtype]
    labels = ["u", "A", "C", "h0"] if name == "paralstm" else ["u", "A", "h0"]
    assert len(grads) == len(ref_grads)
    for label, ref, got in zip(labels, ref_grads, grads, strict=True):
        assert got.dtype == dtype and got.shape == ref.shape, label
        assert rel_err(ref, got.double()) <= TOL[dtype], label
    assert all(torch.equal(x, y) for x, y in zip(inputs, before, strict=True)), "an input was modified"


@pytest.mark.parametrize("name", ["paragru", "paralstm"])
def test_same_result_on_one_thread(kernels, name):
    cell, u, h0, g = problem(name, 50, 135, 3, 1.0)
    weights = [w.detach() for w in kernel_weights(name, cell)]
    many = run_kernel(name, u, weights, h0, g)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = run_kernel(name, u, weights, h0, g)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip([many[0], *many[1]], [one[0], *one[1]], strict=True):
        assert rel_err(a, b) <= 1e-14


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", ["paragru", "paralstm"])
def test_nan_propagates_forward_in_time(kernels, name, dtype):
    cell, u, h0, g = problem(name, 20, 45, 1, 1.0)
    u[0, 5, 1, 3] = float("nan")
    weights = [w.detach().to(dtype) for w in kernel_weights(name, cell)]
    h, grads = run_kernel(name, u.to(dtype), weights, h0.to(dtype), g.to(dtype))
    assert torch.isfinite(h[:, :5]).all() and h[0, 5:, 3].isnan().all()
    assert grads[0][0, :5].isnan().any()  # the adjoint carries the NaN back in time


@pytest.mark.parametrize("name", ["paragru", "paralstm"])
def test_empty_sequence(kernels, name):
    cell, u, h0, g = problem(name, 0, 45, 2, 1.0)
    h, grads = run_kernel(name, u, [w.detach() for w in kernel_weights(name, cell)], h0, g)
    assert h.shape == (2, 0, *cell.state_shape) and grads[0].shape == u.shape
    assert all((grad == 0).all() for grad in grads[1:])


def test_rejects_bad_inputs(kernels):
    cell, u, h0, g = problem("paragru", 5, 45, 2, 1.0)
    with pytest.raises(RuntimeError, match="float32 or float64"):
        cpu.gru_forward(u.half(), cell.A.half(), h0.half(), 0.0, 0)
    with pytest.raises(RuntimeError, match="A must be Float"):
        cpu.gru_forward(u.float(), cell.A.detach(), h0.float(), 0.0, 0)
    with pytest.raises(RuntimeError, match="h0 must have shape"):
        cpu.gru_forward(u, cell.A.detach(), h0[:1], 0.0, 0)
    with pytest.raises(RuntimeError, match="contiguous"):
        cpu.gru_forward(u, cell.A.detach().t().contiguous().t(), h0, 0.0, 0)


def test_unavailable_off_cpu():
    assert "CPU" in cpu.unavailable_reason(torch.device("meta"))


def test_failed_build_is_reported_once(monkeypatch):
    from torch.utils import cpp_extension

    def no_compiler(*args, **kwargs):
        raise RuntimeError(
            "Error building extension 'pararnn_ts_cpu': [1/4] c++ -c paragru.cpp -o paragru.o\n"
            "FAILED: [code=127] paragru.o\nc++ -c paragru.cpp -o paragru.o\n/bin/sh: 1: c++: not found\n"
        )

    monkeypatch.setattr(cpu, "_extension", None)
    monkeypatch.setattr(cpu, "_failure", None)
    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    with pytest.warns(RuntimeWarning, match="PyTorch solvers are used instead.*C\\+\\+ compiler.*CXX"):
        reason = cpu.unavailable_reason(torch.device("cpu"))
    assert reason.endswith("failed (Error building extension 'pararnn_ts_cpu': /bin/sh: 1: c++: not found)")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cpu.unavailable_reason(torch.device("cpu")) == reason
    with pytest.raises(RuntimeError, match="unavailable"):
        cpu.gru_forward(torch.zeros(1, 1, 3, 2), torch.zeros(3, 2), torch.zeros(1, 2), 0.0, 0)


def test_each_checkout_builds_its_own_extension(tmp_path):
    """Two installs side by side must not share (and rebuild over) one torch build folder."""
    from pararnn_ts.ops.sources import checkout_tag, kernel_source_dir

    here = kernel_source_dir("cpu")
    other = tmp_path / "other_checkout" / "kernels" / "cpu"
    other.mkdir(parents=True)
    assert checkout_tag(here) == checkout_tag(here / ".." / "cpu")  # the same folder, however it is written
    assert checkout_tag(other) != checkout_tag(here)
    assert cpu.extension_name().endswith(f"_{checkout_tag(here)}")


@pytest.mark.parametrize("name", ["paragru", "paralstm"])
def test_the_kernels_are_torch_operators_with_shape_functions(kernels, name):
    """``torch.ops.pararnn_ts.cpu_*``: what torch.compile traces. ``opcheck`` runs each on real and fake tensors
    (its shape function), through its schema and through AOT autograd's dispatch; the results are the kernels'."""
    cell, u, h0, g = problem(name, 17, 45, 3, 1.0)
    weights = tuple(w.detach() for w in kernel_weights(name, cell))
    kernel = "gru" if name == "paragru" else "lstm"
    forward, backward = (getattr(torch.ops.pararnn_ts, f"cpu_{kernel}_{part}") for part in ("forward", "backward"))
    h, grads = run_kernel(name, u, weights, h0, g)
    assert torch.equal(forward(u, *weights, h0), h)
    assert all(torch.equal(a, b) for a, b in zip(backward(g, u, *weights, h0, h), grads, strict=True))
    torch.library.opcheck(forward.default, (u, *weights, h0))
    torch.library.opcheck(backward.default, (g, u, *weights, h0, h))


@pytest.mark.parametrize("name", ["paragru", "paralstm"])
def test_torch_compile_traces_the_fused_solve_whole(kernels, name, monkeypatch):
    """``torch.compile(fullgraph=True)`` of a fused cell (any graph break would raise) runs the CPU kernels, and
    its outputs, final state and every gradient equal the eager module's; also compiled before any call (the
    backend's first import runs as Dynamo traces, not in the graph)."""
    monkeypatch.setattr(fused_ops, "_imported", {})  # as in a process where no layer has run yet
    cell = make_cell(name, torch.float64, hidden=45, mode="fused", fused_backend="cpu")
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(3, 37, cell.input_size, generator=gen, dtype=torch.float64)
    h0 = 0.5 * torch.randn(3, *cell.state_shape, generator=gen, dtype=torch.float64)
    leaves = [*cell.parameters()]

    def outputs_and_grads(module):
        x_leaf, h0_leaf = x.clone().requires_grad_(), h0.clone().requires_grad_()
        y, last = module(x_leaf, cell.tensor_to_state(h0_leaf))
        last = torch.stack(last, -1) if isinstance(last, tuple) else last
        loss = (y * torch.linspace(-1, 1, y.shape[-1], dtype=y.dtype)).sum() + last.square().sum()
        return y, last, torch.autograd.grad(loss, [x_leaf, h0_leaf, *leaves])

    got = outputs_and_grads(torch.compile(cell, backend="aot_eager", fullgraph=True))
    assert (cell.last_stats.mode, cell.last_stats.backend) == ("fused", "cpu")
    want = outputs_and_grads(cell)
    assert rel_err(want[0], got[0]) < 1e-12 and rel_err(want[1], got[1]) < 1e-12
    for a, b in zip(want[2], got[2], strict=True):
        assert rel_err(a, b) < 1e-12


def test_torch_compile_of_a_func_transform_still_runs_the_loop(kernels):
    """Under torch.compile the tensors a ``torch.func`` transform wraps are fakes: the transform is read from
    functorch's level instead, and the solve runs the loop, as in eager mode (the fused Function has no rules)."""
    cell = make_cell("paragru", torch.float64, hidden=45, mode="fused", fused_backend="cpu")
    x = torch.randn(2, 9, cell.input_size, dtype=torch.float64)
    params = dict(cell.named_parameters())

    def loss(p, x):
        return torch.func.functional_call(cell, p, (x,))[0].square().sum()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mode="fused" under a transform: warned once, about the loop
        want = torch.func.grad(loss)(params, x)
        got = torch.compile(torch.func.grad(loss), backend="aot_eager")(params, x)
    assert cell.last_stats.mode == "sequential"
    assert all(rel_err(want[key], got[key]) < 1e-12 for key in want)
