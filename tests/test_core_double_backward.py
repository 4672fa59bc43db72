"""Second derivatives (``create_graph=True``): exact in ``mode="sequential"``, a clear error in the others.

The parallel and fused backwards are first-order only (the adjoint scan, the native kernels); a gradient
penalty, MAML or a Hessian-vector product through them must raise an error that names the mode and the
fix, never return a second derivative without the solve's part.
"""

from __future__ import annotations

import pytest
import torch
from conftest import make_cell

from pararnn_ts.ops import cpu

FIX = r'mode="{}" solve.*create_graph=True.*pass mode="sequential" to the layer'


def functional(cell):
    """``fn(x, h0, *params) -> (y, last state as a tensor)`` for gradcheck, and the parameters as leaves."""
    names = [n for n, _ in cell.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in cell.parameters()]

    def fn(x, h0, *ps):
        y, last = torch.func.functional_call(cell, dict(zip(names, ps, strict=True)), (x, cell.tensor_to_state(h0)))
        return y, cell.state_to_tensor(last)

    return fn, params


def test_sequential_mode_passes_gradgradcheck(cell_name):
    cell = make_cell(cell_name, torch.float64, hidden=3, mode="sequential")
    fn, params = functional(cell)
    x = torch.randn(2, 4, cell.input_size, dtype=torch.float64, requires_grad=True)
    h0 = (0.5 * torch.randn(2, *cell.state_shape, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradgradcheck(fn, (x, h0, *params))


def solver_cell(name: str, mode: str):
    """A small float64 cell whose solves run ``mode`` (the fused one: the CPU kernel, as in test_ops_cpu)."""
    if mode == "fused":
        reason = cpu.unavailable_reason(torch.device("cpu"))
        if reason is not None:  # CI has a compiler: a build that fails there is a bug, not a skip
            pytest.fail(reason)
    return make_cell(name, torch.float64, hidden=6, mode=mode)


@pytest.mark.parametrize("linear_loss", [False, True], ids=["square-loss", "linear-loss"])
@pytest.mark.parametrize("mode", ["parallel", "fused"])
@pytest.mark.parametrize("name", ["paragru", "paralstm"])
def test_gradient_penalty_names_the_mode_and_the_fix(name, mode, linear_loss):
    cell = solver_cell(name, mode)
    x = torch.randn(2, 5, cell.input_size, dtype=torch.float64, requires_grad=True)
    y, _ = cell(x)
    assert cell.last_stats.mode == mode
    # linear in y: the solve's grad output needs no grad, and torch's once_differentiable then returned
    # unmarked gradients: the penalty's backward ran and silently left out the solve's second derivative
    loss = y.sum() if linear_loss else y.square().sum()
    with pytest.raises(RuntimeError, match=FIX.format(mode)):
        (grad_x,) = torch.autograd.grad(loss, x, create_graph=True)
        grad_x.square().sum().backward()


@pytest.mark.parametrize("mode", ["parallel", "fused"])
def test_hessian_vector_product_names_the_mode_and_the_fix(mode):
    cell = solver_cell("paragru", mode)
    y, _ = cell(torch.randn(2, 5, cell.input_size, dtype=torch.float64))
    params = list(cell.parameters())
    with pytest.raises(RuntimeError, match=FIX.format(mode)):
        grads = torch.autograd.grad(y.sum(), params, create_graph=True)
        torch.autograd.grad(sum((g * torch.ones_like(g)).sum() for g in grads), params)


@pytest.mark.parametrize("mode", ["parallel", "fused"])
def test_a_vectorized_backward_names_the_mode_and_the_fix(mode):
    """``jacobian(vectorize=True)`` and ``is_grads_batched=True`` run the backward under vmap, which the scans and
    native kernels do not support; the loop does."""
    fix = f'mode="{mode}" solve.*no vectorized backward.*pass mode="sequential" to the layer'
    cell = solver_cell("paragru", mode)
    x = torch.randn(1, 4, cell.input_size, dtype=torch.float64)
    with pytest.raises(RuntimeError, match=fix):
        torch.autograd.functional.jacobian(lambda x: cell(x)[0], x, vectorize=True)
    y, _ = cell(x.requires_grad_())
    with pytest.raises(RuntimeError, match=fix):
        torch.autograd.grad(y, x, torch.eye(y.numel(), dtype=y.dtype).view(-1, *y.shape), is_grads_batched=True)
    cell.mode = "sequential"
    vectorized = torch.autograd.functional.jacobian(lambda x: cell(x)[0], x.detach(), vectorize=True)
    torch.testing.assert_close(vectorized, torch.autograd.functional.jacobian(lambda x: cell(x)[0], x.detach()))
