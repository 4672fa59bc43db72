"""Every mode gives the same outputs, final state and gradients (DESIGN.md §4)."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import make_cell, random_state, rel_err, state_tensors
from test_core_policy import DenseTanhCell

from pararnn_ts import ParaGRU

EPS32 = torch.finfo(torch.float32).eps


def run(cell, x, state, mode):
    """Outputs, final state and the gradients of a generic loss w.r.t. x, state and parameters."""
    cell.mode = mode
    cell.zero_grad()
    x = x.detach().clone().requires_grad_()
    leaves = [s.detach().clone().requires_grad_() for s in state_tensors(state)]
    state = tuple(leaves) if isinstance(state, tuple) else leaves[0]
    y, last = cell(x, state)
    g = torch.Generator().manual_seed(7)
    loss = (y * torch.randn(y.shape, generator=g, dtype=y.dtype)).sum()
    loss = loss + sum((s * torch.randn(s.shape, generator=g, dtype=s.dtype)).sum() for s in state_tensors(last))
    loss.backward()
    return {
        "y": y.detach(),
        **{f"last{i}": s.detach() for i, s in enumerate(state_tensors(last))},
        "grad_x": x.grad,
        **{f"grad_state{i}": s.grad for i, s in enumerate(leaves)},
        **{f"grad_{n}": p.grad for n, p in cell.named_parameters()},
    }


def compare(cell, x, state, tol):
    ref = run(cell, x, state, "sequential")
    par = run(cell, x, state, "parallel")
    assert cell.last_stats.mode == "parallel" and cell.last_stats.converged and not cell.last_stats.fell_back
    errors = {k: rel_err(ref[k], par[k]) for k in ref}
    assert all(v is not None for v in par.values()), "a gradient is missing"
    assert max(errors.values()) <= tol, errors


@pytest.mark.parametrize("T", [1, 2, 63, 1000, 4097])
@pytest.mark.parametrize("batch", [1, 3])
def test_parallel_equals_sequential_float64(cell_name, T, batch):
    cell = make_cell(cell_name, torch.float64)
    x = torch.randn(batch, T, cell.input_size, dtype=torch.float64)
    compare(cell, x, random_state(cell, batch, torch.float64), tol=1e-9)


@pytest.mark.parametrize("T", [1, 2, 63, 1000, 4097])
@pytest.mark.parametrize("batch", [1, 3])
def test_parallel_equals_sequential_float32(cell_name, T, batch):
    cell = make_cell(cell_name, torch.float32)
    x = torch.randn(batch, T, cell.input_size)
    # Rounding errors grow like eps·T; sums over batch and time reorder, hence the floor of 16 steps.
    compare(cell, x, random_state(cell, batch, torch.float32), tol=4 * EPS32 * max(T, 16))


def test_gradcheck_parallel(cell_name):
    cell = make_cell(cell_name, torch.float64, hidden=3, mode="parallel")
    names = [n for n, _ in cell.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in cell.parameters()]
    x = torch.randn(2, 7, cell.input_size, dtype=torch.float64, requires_grad=True)
    h0 = (0.5 * torch.randn(2, *cell.state_shape, dtype=torch.float64)).requires_grad_()

    def fn(x, h0, *ps):
        y, last = torch.func.functional_call(cell, dict(zip(names, ps, strict=True)), (x, cell.tensor_to_state(h0)))
        return y, cell.state_to_tensor(last)

    assert torch.autograd.gradcheck(fn, (x, h0, *params))


@pytest.mark.parametrize("mode", ["sequential", "parallel"])
def test_bf16_autocast_solves_in_float32(cell_name, mode):
    cell = make_cell(cell_name, torch.float32, mode=mode)
    x = torch.randn(2, 50, cell.input_size, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, last = cell(x)
    assert y.dtype == torch.float32
    y.square().mean().backward()
    assert torch.isfinite(x.grad).all() and all(torch.isfinite(p.grad).all() for p in cell.parameters())
    ref, _ = cell(x)  # float32 end to end: only the bf16 input projection differs
    assert rel_err(ref, y) < 0.05


@pytest.mark.parametrize("mode", ["sequential", "parallel"])
def test_bf16_parameters_get_gradients_summed_in_the_solve_dtype(cell_name, mode):
    # Each weight's T per-step gradients must add up in float32: summed in bf16 they were 2-4% off at T=400.
    cell = make_cell(cell_name, torch.bfloat16, mode=mode)
    x = torch.randn(2, 400, cell.input_size, dtype=torch.bfloat16)
    exact = copy.deepcopy(cell).double()  # the same (bf16-rounded) weights, in float64
    grads = {}
    for model in (cell, exact):
        y, _ = model(x.to(next(model.parameters()).dtype))
        weights = torch.randn(y.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        (y.double() * weights).sum().backward()
        grads[model] = {n: p.grad.double() for n, p in model.named_parameters()}
    errors = {n: rel_err(grads[exact][n], g) for n, g in grads[cell].items()}
    assert max(errors.values()) <= torch.finfo(torch.bfloat16).eps, errors  # twice the rounding of the gradient


@pytest.mark.parametrize("mode", ["sequential", "parallel"])
def test_a_bf16_cell_that_multiplies_matrices_reads_its_weights_in_the_solve_dtype(mode):
    """A matmul takes operands of one dtype: the checks, Newton, the backward and step read bf16 weights widened to
    the float32 solve (they failed with 'expected m1 and m2 to have the same dtype'), gradients summed in it."""
    torch.manual_seed(0)
    cell = DenseTanhCell(mode=mode).to(torch.bfloat16)
    x = torch.randn(2, 400, 5, dtype=torch.bfloat16)
    exact = copy.deepcopy(cell).double()
    grads = {}
    for model in (cell, exact):
        y, _ = model(x.to(model.W.dtype))
        weights = torch.randn(y.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        (y.double() * weights).sum().backward()
        grads[model] = model.W.grad.double()
    assert cell.last_stats.mode == mode and not cell.last_stats.fell_back
    assert rel_err(grads[exact], grads[cell]) <= torch.finfo(torch.bfloat16).eps
    h = cell.step(x[:, 0])
    assert h.dtype == torch.bfloat16
    torch.testing.assert_close(h.double(), exact.step(x[:, 0].double()), rtol=0, atol=torch.finfo(torch.bfloat16).eps)


def test_the_final_state_owns_its_memory_apart_from_the_outputs(cell_name):
    """As nn.GRU's h_n: not a view of the trajectory (which it kept alive), nor changed by an in-place op on y."""
    for mode in ["sequential", "parallel"] + (["fused"] if make_cell(cell_name).fused_kernel else []):
        cell = make_cell(cell_name, torch.float64, mode=mode)
        with torch.no_grad():
            y, last = cell(torch.randn(2, 50, cell.input_size, dtype=torch.float64))
            before = [s.clone() for s in state_tensors(last)]
            y.mul_(0)
        for s, kept in zip(state_tensors(last), before, strict=True):
            assert s.untyped_storage().nbytes() <= 2 * s.numel() * s.element_size(), mode  # ParaLSTM: c and h
            torch.testing.assert_close(s, kept, rtol=0, atol=0, msg=mode)


def test_step_reads_the_weights_dtypes_however_they_changed():
    """A matmul of bf16 weights needs them widened to the float32 solve, whichever way they became bf16 after a
    first step: .to(), assignment, load_state_dict(assign=True)."""
    x = torch.randn(2, 5, dtype=torch.float64)
    changes = {
        "to": lambda cell: cell.to(torch.bfloat16),
        "assignment": lambda cell: setattr(cell, "W", torch.nn.Parameter(cell.W.detach().bfloat16())),
        "assign": lambda cell: cell.load_state_dict({"W": cell.W.detach().bfloat16()}, assign=True),
    }
    for how, change in changes.items():
        cell = DenseTanhCell()
        cell.step(x)
        change(cell)
        assert cell.step(x.float()).dtype == torch.float32, how


def test_parameters_swapped_in_by_functional_call_get_the_gradients(cell_name):
    """Hypernetworks and meta-learning run a cell on other weights: each mode differentiates at those, not its own."""
    cell = make_cell(cell_name, torch.float64)
    given = make_cell(cell_name, torch.float64, seed=1, mode="sequential")  # its own parameters are the others
    x = torch.randn(3, 17, cell.input_size, dtype=torch.float64)
    y_ref, _ = given(x)
    y_ref.square().sum().backward()
    modes = ["sequential", "parallel"] + (["fused"] if cell.fused_kernel else [])
    for mode in modes:
        cell.mode = mode
        swapped = {n: p.detach().clone().requires_grad_() for n, p in given.named_parameters()}
        y, _ = torch.func.functional_call(cell, swapped, (x,))
        y.square().sum().backward()
        torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
        for name, p in given.named_parameters():
            torch.testing.assert_close(swapped[name].grad, p.grad, rtol=1e-9, atol=1e-12, msg=f"{mode}: {name}")
        assert all(p.grad is None for p in cell.parameters()), mode


def data_parallel_replica(module: torch.nn.Module) -> torch.nn.Module:
    """What ``torch.nn.DataParallel`` runs on each device (``torch/nn/parallel/replicate.py``): a copy of every
    module whose parameters are plain attributes, differentiable copies of the original's (here ``view_as``, for
    its ``Broadcast``), also kept in ``_former_parameters``."""
    replicas = {m: m._replicate_for_data_parallel() for m in module.modules()}
    copies = {p: p.view_as(p) for p in module.parameters()}  # one per parameter, shared where it is tied
    for original, replica in replicas.items():
        replica._former_parameters = {}
        for name, child in original._modules.items():
            setattr(replica, name, replicas[child])
        for name, p in original._parameters.items():
            setattr(replica, name, copies[p])
            replica._former_parameters[name] = copies[p]
    return replicas[module]


def test_a_data_parallel_replica_passes_every_gradient_to_the_module(cell_name):
    """The parallel mode solved with ``cell.parameters()``, which a replica has none of: its recurrent weights got no
    gradient, silently (and the first-use check took them for foreign tensors)."""
    x = torch.randn(3, 17, make_cell(cell_name).input_size, dtype=torch.float64)
    grads = {}
    for mode in ["sequential", "parallel"] + (["fused"] if make_cell(cell_name).fused_kernel else []):
        cell = make_cell(cell_name, torch.float64, mode=mode)
        data_parallel_replica(cell)(x)[0].square().sum().backward()
        grads[mode] = {n: p.grad for n, p in cell.named_parameters()}
        assert all(g is not None for g in grads[mode].values()), mode
        for name, g in grads[mode].items():
            torch.testing.assert_close(g, grads["sequential"][name], rtol=1e-9, atol=1e-12, msg=f"{mode}: {name}")


class TiedGates(torch.nn.Module):
    def __init__(self, weight: torch.nn.Parameter) -> None:
        super().__init__()
        self.w = weight


class TiedWeightCell(DenseTanhCell):
    """Two submodules hold one weight, which the recurrence reads through both."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        shared = torch.nn.Parameter(torch.linspace(0.1, 0.5, 5, dtype=torch.float64))
        self.g1, self.g2 = TiedGates(shared), TiedGates(shared)

    def recurrence(self, h, u):
        return super().recurrence(h * self.g1.w, u * self.g2.w)


def test_a_weight_tied_between_submodules_gets_its_gradient_once_on_a_replica():
    grads = {}
    for mode in ("sequential", "parallel"):
        torch.manual_seed(0)
        cell = TiedWeightCell(mode=mode)
        data_parallel_replica(cell)(torch.randn(3, 17, 5, dtype=torch.float64))[0].square().sum().backward()
        grads[mode] = [p.grad for p in cell.parameters()]
    for a, b in zip(grads["sequential"], grads["parallel"], strict=True):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12)


def test_parameters_computed_from_others_get_the_gradients(cell_name):
    """A meta-learning inner step or a hypernetwork hands functional_call computed (non-leaf) weights: every mode
    takes them as the cell's parameters and passes their gradients on to what they were computed from."""
    cell = make_cell(cell_name, torch.float64)
    x = torch.randn(3, 17, cell.input_size, dtype=torch.float64)
    grads = {}
    for mode in ["sequential", "parallel"] + (["fused"] if cell.fused_kernel else []):
        cell.mode = mode
        scale = torch.tensor(0.9, dtype=torch.float64, requires_grad=True)
        bases = {n: p.detach().clone().requires_grad_() for n, p in cell.named_parameters()}
        y, _ = torch.func.functional_call(cell, {n: b * scale for n, b in bases.items()}, (x,))
        grads[mode] = torch.autograd.grad(y.square().sum(), [scale, *bases.values()])
        assert cell.last_stats.mode == mode
    for mode, got in grads.items():
        for g, expected in zip(got, grads["sequential"], strict=True):
            torch.testing.assert_close(g, expected, rtol=1e-9, atol=1e-12, msg=mode)


def test_a_parameter_changed_in_place_before_the_backward_is_refused(cell_name):
    """As torch.nn.GRU refuses: the gradient would be taken at weights the forward did not run with."""
    cell = make_cell(cell_name, torch.float64)
    for mode in ["sequential", "parallel"] + (["fused"] if cell.fused_kernel else []):
        cell.mode = mode
        y, _ = cell(torch.randn(2, 9, cell.input_size, dtype=torch.float64))
        with torch.no_grad():
            for p in cell.parameters():  # e.g. an optimizer step between forward and backward
                p.mul_(1.01)
        with pytest.raises(RuntimeError, match="inplace"):
            y.sum().backward()


def test_step_matches_sequence(cell_name):
    cell = make_cell(cell_name, torch.float64, mode="parallel")
    x = torch.randn(3, 40, cell.input_size, dtype=torch.float64)
    state = random_state(cell, 3, torch.float64)
    y, last = cell(x, state)
    assert y.shape == (3, 40, cell.output_size)
    outputs = []
    for t in range(x.shape[1]):
        state = cell.step(x[:, t], state)
        h = cell.state_to_tensor(state)
        outputs.append(cell.output(h))
    torch.testing.assert_close(torch.stack(outputs, 1), y, rtol=1e-10, atol=1e-12)
    for a, b in zip(state_tensors(state), state_tensors(last), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("splits", [[1, 99], [37, 26, 37], [50, 50]])
def test_chunks_with_carried_state_equal_one_call(cell_name, splits):
    cell = make_cell(cell_name, torch.float64, mode="parallel")
    x = torch.randn(2, sum(splits), cell.input_size, dtype=torch.float64, requires_grad=True)
    y_full, last_full = cell(x)
    (g_full,) = torch.autograd.grad(y_full.sum(), x)
    state, ys = None, []
    for chunk in x.split(splits, dim=1):
        y, state = cell(chunk, state)
        ys.append(y)
    y_chunked = torch.cat(ys, 1)
    (g_chunked,) = torch.autograd.grad(y_chunked.sum(), x)
    torch.testing.assert_close(y_chunked, y_full, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g_chunked, g_full, rtol=1e-9, atol=1e-12)
    for a, b in zip(state_tensors(state), state_tensors(last_full), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_stats_report_iterations_and_residual(cell_name):
    cell = make_cell(cell_name, torch.float64, mode="parallel")
    cell(torch.randn(2, 300, cell.input_size, dtype=torch.float64))
    stats = cell.last_stats
    assert 1 <= stats.iterations <= cell.max_iters
    assert stats.residual <= cell.resolved_tol(torch.float64)
    cell.mode = "sequential"
    cell(torch.randn(2, 5, cell.input_size, dtype=torch.float64))
    assert cell.last_stats.mode == "sequential"


def test_auto_on_cpu_is_the_fused_kernel_or_sequential(cell_name):
    cell = make_cell(cell_name, torch.float32, mode="auto")
    cell(torch.randn(1, 4, cell.input_size))
    expected = ("fused", "cpu") if cell.fused_kernel else ("sequential", "pytorch")
    assert (cell.last_stats.mode, cell.last_stats.backend) == expected


@pytest.mark.parametrize("chunk_size", [1, 97, 999])
def test_chunked_parallel_equals_sequential(cell_name, chunk_size):
    cell = make_cell(cell_name, torch.float64, chunk_size=chunk_size)
    T = 200 if chunk_size == 1 else 1000  # one Newton solve per step: 1000 of them took 10 s for the oscillator
    x = torch.randn(2, T, cell.input_size, dtype=torch.float64)
    compare(cell, x, random_state(cell, 2, torch.float64), tol=1e-9)
    assert cell.last_stats.chunks == -(-T // chunk_size)


def test_auto_chunks_bound_the_working_set_on_cpu():
    cell = make_cell("paragru", torch.float32, chunk_size="auto")
    steps = cell.resolve_chunk_size(torch.empty(8, 100_000, 3, 256))
    assert steps * 8 * 45 <= 2 * cell.CPU_CHUNK_ELEMENTS
    assert make_cell("paragru", chunk_size=None).resolve_chunk_size(torch.empty(8, 10, 3, 45)) is None
    # by the Jacobian's values: a dense one has N² a step (here 25), a 2×2 block one 4·D
    dense = DenseTanhCell()
    assert dense.resolve_chunk_size(torch.empty(4, 100_000, 5)) * 4 * 25 <= 2 * dense.CPU_CHUNK_ELEMENTS
    lstm = make_cell("paralstm", torch.float32, hidden=258)
    assert lstm.resolve_chunk_size(torch.empty(8, 100_000, 4, 258)) * 8 * 258 * 4 <= 2 * lstm.CPU_CHUNK_ELEMENTS


def test_the_repr_names_every_setting_that_is_not_the_default():
    cell = ParaGRU(8, 16, num_heads=2, bias=False, tol=1e-3, chunk_size=32, check_inputs=False, fused_backend="cpu")
    shown = repr(cell) + repr(ParaGRU(8, 16, recurrent_init="zeros", check_contract=False))
    for setting in ("bias=False", "tol=0.001", "chunk_size=32", "check_inputs=False", "fused_backend='cpu'"):
        assert setting in shown
    for setting in ("recurrent_init='zeros'", "check_contract=False"):
        assert setting in shown
    assert repr(ParaGRU(8, 16)) == (
        "ParaGRU(8, 16, num_heads=1, max_norm=0.5, structure=Diagonal(), mode='auto', max_iters=12, "
        "fallback='sequential')"
    )
