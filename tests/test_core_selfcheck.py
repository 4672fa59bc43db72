"""What the solves check after the first-use checks of the contract (pararnn_ts/core/contract.py): the parallel
backward's self-check of its adjoint (a cell that breaks its declared Jacobian structure later, e.g. a coupling that
was zero at the first solve and that training made nonzero, is refused instead of getting silently wrong gradients),
the warning when Newton falls back to the exact loop, and the finiteness of the returned trajectory."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from conftest import make_cell
from torch import nn

from pararnn_ts.core import Dense, Diagonal, ParaCell, contract

NOT_CONVERGED = "ignore:.*Newton did not converge:RuntimeWarning"
SELF_CHECK = r"{}: the parallel backward found that the derivative of recurrence in h_prev is not the Jacobian of {}"
FIX = r"Dense\(\).*Block\(k\).*deterministic.*batched over the leading dims.*mode=\"sequential\".*check_contract=False"


class CouplingCell(ParaCell):
    """``h_t = tanh(a ⊙ h_{t-1} + R h_{t-1} + u_t)`` declared ``Diagonal()``: right while ``R`` is zero (a common
    initialisation, so the first-use check passes), wrong once training makes it nonzero."""

    structure = Diagonal()

    def __init__(self, dtype: torch.dtype = torch.float64, **kwargs):
        super().__init__(**kwargs)
        self.a = nn.Parameter(torch.full((4,), 0.5, dtype=dtype))
        self.R = nn.Parameter(torch.zeros(4, 4, dtype=dtype))

    @property
    def state_shape(self):
        return (4,)

    def recurrence(self, h, u):
        return torch.tanh(self.a * h + h @ self.R.T + u)


class BatchMeanCell(CouplingCell):
    """Reads the batch mean of the state with a weight that is zero at the first solve."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.mix = 0.0

    def recurrence(self, h, u):
        return torch.tanh(self.a * h + self.mix * h.mean(0, keepdim=True) + u)


class ScheduledDropoutCell(CouplingCell):
    """Dropout inside the recurrence, with a probability scheduled up from 0 after the first solve."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.p = 0.0

    def recurrence(self, h, u):
        return torch.tanh(self.a * F.dropout(h, self.p, self.training) + u)


def inputs(T=30, batch=3, dtype=torch.float64):
    return torch.randn(batch, T, 4, dtype=dtype, generator=torch.Generator().manual_seed(1))


def grads(cell, x):
    x = x.detach().clone().requires_grad_()
    y, _ = cell(x)
    return torch.autograd.grad(y.sin().sum(), (x, *cell.parameters()), allow_unused=True)


def couple(cell):
    with torch.no_grad():  # what a few optimizer steps do
        cell.R.copy_(0.3 * torch.randn(4, 4, generator=torch.Generator().manual_seed(2), dtype=cell.R.dtype))


# ---- 1. the backward's self-check -------------------------------------------------------------------------------
@pytest.mark.filterwarnings(NOT_CONVERGED)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("chunk_size, max_iters", [(None, 12), (7, 12), (None, 1)])  # chunks; a fallback to the loop
def test_a_structure_broken_after_the_first_solve_is_refused_by_the_backward(dtype, chunk_size, max_iters):
    cell = CouplingCell(dtype, mode="parallel", chunk_size=chunk_size, max_iters=max_iters)
    x = inputs(dtype=dtype)
    grads(cell, x)  # R = 0: the declared structure is right, and the first-use checks pass
    assert not cell._contract_pending
    couple(cell)
    with pytest.raises(ValueError, match=SELF_CHECK.format("CouplingCell", r"the declared structure Diagonal\(\)")):
        grads(cell, x)
    assert cell.last_stats.fell_back or max_iters > 1  # Newton with the wrong Jacobian may fall back too
    with pytest.raises(ValueError, match=FIX):
        grads(cell, x)
    cell.mode = "sequential"
    grads(cell, x)  # the fix it names runs


@pytest.mark.filterwarnings(NOT_CONVERGED)
def test_the_self_check_differentiates_at_parameters_swapped_in_by_functional_call():
    cell = CouplingCell(mode="parallel")
    x = inputs()
    grads(cell, x)
    swapped = {name: p.detach().clone().requires_grad_() for name, p in cell.named_parameters()}
    couple(cell)
    coupled = cell.R.detach().clone().requires_grad_()
    with torch.no_grad():
        cell.R.zero_()  # the cell's own R is right: only the swapped-in one couples
    y, _ = torch.func.functional_call(cell, {**swapped, "R": coupled}, (x,))
    with pytest.raises(ValueError, match=SELF_CHECK.format("CouplingCell", "the declared structure")):
        y.sum().backward()
    y, _ = torch.func.functional_call(cell, swapped, (x,))
    y.sum().backward()  # the zero R swapped in passes


@pytest.mark.filterwarnings(NOT_CONVERGED)
def test_batch_mixing_and_dropout_switched_on_after_the_first_solve_are_refused_by_the_backward():
    x = inputs()
    for cell, switch_on in [(BatchMeanCell(mode="parallel"), "mix"), (ScheduledDropoutCell(mode="parallel"), "p")]:
        grads(cell, x)
        assert not cell._contract_pending
        setattr(cell, switch_on, 0.3)
        with pytest.raises(ValueError, match=SELF_CHECK.format(type(cell).__name__, "the declared structure")):
            grads(cell, x)


class HandJacobianCouplingCell(CouplingCell):
    def jacobian(self, h, u):
        f = self.recurrence(h, u)
        return f, (1 - f * f) * self.a  # the derivative while R is zero


@pytest.mark.filterwarnings(NOT_CONVERGED)
def test_a_hand_written_jacobian_that_goes_wrong_is_named():
    cell = HandJacobianCouplingCell(mode="parallel")
    grads(cell, inputs())
    couple(cell)
    with pytest.raises(ValueError, match=SELF_CHECK.format(*["HandJacobianCouplingCell"] * 2) + r"\.jacobian"):
        grads(cell, inputs())


@pytest.mark.filterwarnings(NOT_CONVERGED)
def test_check_contract_false_skips_the_self_check():
    cell = CouplingCell(mode="parallel", check_contract=False)
    couple(cell)
    grads(cell, inputs())  # the user's responsibility: wrong gradients, no error


@pytest.mark.filterwarnings(NOT_CONVERGED)
def test_the_self_check_reads_no_data_under_tracing(monkeypatch):
    cell = CouplingCell(mode="parallel")
    grads(cell, inputs())
    couple(cell)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)  # as in a compiled backward: no host sync
    grads(cell, inputs())


class ExpandingCell(ParaCell):
    """``tanh(g ⊙ h + u/20)`` with gains ``g`` up to 1.5: bistable channels, where Newton falls back to the loop (the
    backward checks that exact trajectory) and the Jacobian exceeds 1 between the two stable states."""

    structure = Diagonal()

    def __init__(self, dtype, **kwargs):
        super().__init__(**kwargs)
        self.g = nn.Parameter(torch.linspace(0.5, 1.5, 4, dtype=dtype))

    @property
    def state_shape(self):
        return (4,)

    def recurrence(self, h, u):
        return torch.tanh(self.g * h + 0.05 * u)


class LeakyDenseCell(ParaCell):
    """``0.9999 h + 0.01 tanh(W h + u)``: a long memory (the adjoint sums ~T gradients) through a dense Jacobian."""

    structure = Dense()

    def __init__(self, dtype, **kwargs):
        super().__init__(**kwargs)
        self.W = nn.Parameter(torch.randn(4, 4, generator=torch.Generator().manual_seed(0), dtype=dtype))

    @property
    def state_shape(self):
        return (4,)

    def recurrence(self, h, u):
        return (1 - 1e-4) * h + 1e-2 * torch.tanh(h @ self.W.T + u)


def awkward_gradient(kind, y):
    """``∂L/∂y`` ``(B, T, ...)``: ``"spike"`` (one entry 1e7 times the others), ``"alternating"`` (signs that cancel
    in the adjoint of a long memory) or ``"ones"`` (an adjoint that sums up to T gradients)."""
    if kind == "spike":
        w = 1e-3 * torch.randn(y.shape, generator=torch.Generator().manual_seed(3), dtype=y.dtype)
        w[0, y.shape[1] // 3, 0] = 1e4
        return w
    if kind == "alternating":
        return torch.ones_like(y) * (torch.arange(y.shape[1]) % 2 * 2 - 1).to(y.dtype).view(1, -1, 1)
    return torch.ones_like(y)


CORRECT = ["paragru", "paralstm", "oscillator", "expanding", "leaky_dense"]
PRECISIONS = [(torch.float32, False), (torch.float64, False), (torch.float32, True)]


@pytest.mark.filterwarnings(NOT_CONVERGED)  # the bistable expanding cell falls back: its backward checks the same
@pytest.mark.parametrize("dtype, autocast", PRECISIONS, ids=["float32", "float64", "bf16-autocast"])
@pytest.mark.parametrize("name", CORRECT)
@pytest.mark.parametrize("kind", ["spike", "alternating", "ones"])
def test_correct_cells_pass_the_self_check_with_a_margin(name, dtype, autocast, kind, monkeypatch):
    """Over 30× below the tolerance on awkward data (on such data the worst seen was about 10 ε: the margin is
    400×); the broken cells above are off by 1e-2 and more, 1e5 ε in float32."""
    monkeypatch.setattr(contract, "ADJOINT_EPS_FACTOR", contract.ADJOINT_EPS_FACTOR // 32)
    if name == "expanding":
        cell = ExpandingCell(dtype, mode="parallel")
    elif name == "leaky_dense":
        cell = LeakyDenseCell(dtype, mode="parallel")
    else:
        cell = make_cell(name, dtype, mode="parallel")
    size = cell.input_size or 4
    x = torch.randn(2, 1000, size, dtype=dtype, generator=torch.Generator().manual_seed(5))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):  # the backward too runs in the region
        y, _ = cell(x.requires_grad_())
        (y.double() * awkward_gradient(kind, y).double()).sum().backward()
    assert math.isfinite(x.grad.abs().max().item())


def test_the_double_backward_guard_still_refuses_a_graph_of_the_gradients():
    cell = CouplingCell(mode="parallel")
    x = inputs().requires_grad_()
    y, _ = cell(x)
    with pytest.raises(RuntimeError, match='mode="parallel" solve.*create_graph=True'):
        torch.autograd.grad(y.sum(), x, create_graph=True)


# ---- 2. the fallback to the exact loop warns, once per cell --------------------------------------------------
class ChaoticCell(ParaCell):
    """``h_t = sin(3π h_{t-1} + w u_t)``: chaotic, Newton fails in a few iterations."""

    structure = Diagonal()

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.w = nn.Parameter(torch.ones(4, dtype=torch.float64))

    @property
    def state_shape(self):
        return (4,)

    def recurrence(self, h, u):
        return torch.sin(3 * math.pi * h + self.w * u)


def fallback_warnings(cell, calls=2):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(calls):
            cell(inputs(T=24))
    return [str(w.message) for w in caught if "did not converge" in str(w.message)]


def test_the_fallback_to_the_loop_warns_once_per_cell():
    cell = ChaoticCell(mode="parallel", max_iters=2, chunk_size=8)
    (message,) = fallback_warnings(cell)
    assert cell.last_stats.fell_back
    for part in [
        "ChaoticCell: Newton did not converge in 2 iterations (residual",
        "in a solve of 8 steps, parallel mode",
        "a chunk's, where chunk_size splits the sequence",
        "recomputed exactly by a sequential solve",
        "does not match the declared structure",
        "non-deterministic recurrence",
        "raise max_iters, or use mode='sequential'",
        "fallback='warn'",
        "fallback='raise'",
    ]:
        assert part in message, part
    assert len(fallback_warnings(ChaoticCell(mode="parallel", max_iters=2))) == 1  # per instance
    assert len(fallback_warnings(ChaoticCell(mode="parallel", max_iters=2, fallback="warn"))) == 1  # its own policy
    assert not fallback_warnings(CouplingCell(mode="parallel"))  # Newton converges: nothing to say
