"""Non-convergence policy and input validation."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from conftest import make_cell

from pararnn_ts import ParaGRU
from pararnn_ts.core import Dense, NewtonConvergenceError, ParaCell


class ChaoticCell(ParaCell):
    """``h_t = sin(3π h_{t-1} + u_t)``: chaotic, so Newton cannot converge in a few iterations."""

    input_size = 4

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.w = torch.nn.Parameter(torch.full((4,), 0.3, dtype=torch.float64))

    @property
    def state_shape(self):
        return (4,)

    def recurrence(self, h, u):
        return torch.sin(3 * math.pi * h + self.w * u)


def chaotic_input(T=48):
    return torch.randn(2, T, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


def test_newton_fails_on_the_chaotic_cell():
    cell = ChaoticCell(mode="parallel", max_iters=3, fallback="warn")
    with pytest.warns(RuntimeWarning, match="did not converge"):
        cell(chaotic_input())
    assert not cell.last_stats.converged and cell.last_stats.iterations == 3
    assert cell.last_stats.residual > cell.resolved_tol(torch.float64)


def test_fallback_raise():
    cell = ChaoticCell(mode="parallel", max_iters=3, fallback="raise")
    with pytest.raises(NewtonConvergenceError, match="max_iters"):
        cell(chaotic_input())


def test_fallback_sequential_returns_the_exact_trajectory_and_gradients():
    x = chaotic_input(24).requires_grad_()
    cell = ChaoticCell(mode="sequential")
    y_ref, _ = cell(x)
    (gx_ref, gw_ref) = torch.autograd.grad(y_ref.sum(), (x, cell.w))
    cell.mode, cell.max_iters = "parallel", 2
    y, _ = cell(x)
    assert cell.last_stats.fell_back and not cell.last_stats.converged
    (gx, gw) = torch.autograd.grad(y.sum(), (x, cell.w))
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(gw, gw_ref, rtol=1e-8, atol=1e-8)


def test_fallback_warn_returns_last_iterate_not_the_solution():
    cell = ChaoticCell(mode="parallel", max_iters=2, fallback="warn")
    x = chaotic_input()
    with pytest.warns(RuntimeWarning):
        y, _ = cell(x)
    cell.mode = "sequential"
    y_ref, _ = cell(x)
    assert not torch.allclose(y, y_ref)


def test_fallback_warn_refuses_an_iterate_that_overflowed_where_the_exact_trajectory_is_finite():
    """Over 800 steps the products of the chaotic cell's Jacobians (up to 3π each) overflow float64, so Newton's
    iterate turns NaN though ``sin`` keeps the exact trajectory bounded: ``"warn"`` would return NaN, and the
    non-finite check says so and names the default policy; ``"sequential"`` returns the exact trajectory."""
    x = chaotic_input(800)
    cell = ChaoticCell(mode="parallel", max_iters=3, fallback="warn", chunk_size=None)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        with pytest.raises(
            ValueError, match=r"last Newton iterate, returned by fallback='warn'.*fallback='sequential'"
        ):
            cell(x)
    assert math.isnan(cell.last_stats.residual)
    cell = ChaoticCell(mode="parallel", max_iters=3, chunk_size=None)
    with pytest.warns(RuntimeWarning, match="recomputed exactly"):
        y, _ = cell(x)
    assert cell.last_stats.fell_back and torch.isfinite(y).all()


class DenseTanhCell(ParaCell):
    """``h_t = tanh(W h_{t-1} + u_t)`` with a full ``W``: the Dense structure."""

    input_size = 5

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.W = torch.nn.Parameter(0.3 * torch.randn(5, 5, dtype=torch.float64))

    @property
    def state_shape(self):
        return (5,)

    structure = Dense()

    def recurrence(self, h, u):
        return torch.tanh(h @ self.W.T + u)


def test_dense_structure_cell_all_modes_agree():
    cell = DenseTanhCell()
    x = torch.randn(3, 200, 5, dtype=torch.float64, requires_grad=True)
    out = {}
    for mode in ("sequential", "parallel"):
        cell.mode = mode
        y, last = cell(x)
        out[mode] = (y, last, *torch.autograd.grad((y.sin().sum() + last.sum()), (x, cell.W)))
    assert cell.last_stats.converged
    for a, b in zip(out["sequential"], out["parallel"], strict=True):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "x, match",
    [
        (torch.randn(8, 6), r"x must be \(batch, time, input_size\)"),
        (torch.randn(2, 8, 5), "input_size=6"),
        (torch.randn(2, 0, 6), "no time steps"),
        (torch.full((2, 8, 6), float("nan")), "NaN or inf"),
    ],
)
def test_bad_inputs_give_clear_errors(x, match):
    with pytest.raises(ValueError, match=match):
        ParaGRU(6, 9, num_heads=3)(x)


def test_non_finite_input_from_trained_layers_is_reported_as_divergence():
    encoder = torch.nn.Linear(6, 6)
    with torch.no_grad():
        encoder.weight.fill_(float("inf"))  # what a diverged step leaves behind
    with pytest.raises(ValueError, match="comes from trainable layers .* training has likely diverged"):
        ParaGRU(6, 9, num_heads=3)(encoder(torch.randn(2, 8, 6)))


def test_bad_state_and_arguments():
    gru = ParaGRU(6, 9, num_heads=3)
    with pytest.raises(ValueError, match=r"expected \(2, 9\)"):
        gru(torch.randn(2, 4, 6), torch.zeros(3, 9))
    with pytest.raises(ValueError, match="state contains NaN"):
        gru(torch.randn(2, 4, 6), torch.full((2, 9), float("inf")))
    with pytest.raises(ValueError, match=r"x_t must be \(batch, input_size\)"):
        gru.step(torch.randn(2, 4, 6), torch.zeros(2, 9))
    with pytest.raises(ValueError, match="divisible by num_heads"):
        ParaGRU(6, 10, num_heads=3)
    with pytest.raises(ValueError, match="mode="):
        ParaGRU(6, 9, mode="fast")
    with pytest.raises(ValueError, match="fallback="):
        ParaGRU(6, 9, fallback="ignore")
    lstm = make_cell("paralstm")
    with pytest.raises(TypeError, match=r"pair \(c, h\)"):
        lstm(torch.randn(2, 4, 6, dtype=torch.float64), torch.zeros(2, 45, dtype=torch.float64))
    c, h = torch.zeros(2, 45, dtype=torch.float64), torch.zeros(2, 44, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"hidden_size=45\) tensors, got \[\(2, 45\), \(2, 44\)\]"):
        lstm(torch.randn(2, 4, 6, dtype=torch.float64), (c, h))
    with pytest.raises(
        ValueError, match=r"state has shape \(\(2, 45\), \(2, 45\)\), expected \(\(3, 45\), \(3, 45\)\)"
    ):
        lstm(torch.randn(3, 4, 6, dtype=torch.float64), (c, c))  # in the form it was given: the pair (c, h)
    gru, x = ParaGRU(6, 9), torch.randn(2, 4, 6)
    for state in [(torch.zeros(2, 9), torch.zeros(2, 9)), torch.zeros(2, 9).numpy()]:  # an LSTM's pair, NumPy
        with pytest.raises(TypeError, match=r"ParaGRU: state must be a Tensor \(batch, 9\), got (tuple|ndarray)"):
            gru(x, state)
        with pytest.raises(TypeError, match=r"ParaGRU: state must be a Tensor \(batch, 9\), got (tuple|ndarray)"):
            gru.step(x[:, 0], state)
    with pytest.raises(TypeError, match=r"ParaGRU: state is torch.int64; pass a floating-point state"):
        gru(x, torch.zeros(2, 9, dtype=torch.long))


@pytest.mark.parametrize("num_heads", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float64, torch.int64])
def test_x_of_another_dtype_than_the_parameters_names_both_and_the_fix(num_heads, dtype):
    gru = ParaGRU(6, 9, num_heads=num_heads)
    x = torch.ones(2, 4, 6, dtype=dtype)
    with pytest.raises(TypeError, match=rf"x is {dtype} but the parameters are torch.float32; convert x") as refused:
        gru(x)
    assert ("or the module" in str(refused.value)) == dtype.is_floating_point
    with pytest.raises(TypeError, match=rf"x is {dtype}"):
        gru.step(x[:, 0])
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast runs the projection in its own dtype
        assert gru(x.bfloat16())[0].shape == (2, 4, 9)


def test_fallback_applies_per_chunk():
    x = chaotic_input(48)
    cell = ChaoticCell(mode="sequential")
    y_ref, _ = cell(x)
    cell.mode, cell.max_iters, cell.chunk_size = "parallel", 3, 16
    y, _ = cell(x)
    assert cell.last_stats.chunks == 3 and cell.last_stats.fell_back
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)


def test_bad_chunk_size():
    with pytest.raises(ValueError, match="chunk_size"):
        ParaGRU(6, 9, chunk_size=0)


def test_solver_warnings_point_at_the_users_line():
    from pararnn_ts.cells.oscillator import RotationOscillator

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cell = RotationOscillator(3, 4, mode="fused")  # no fused kernel: warns, then runs what "auto" would
        cell(torch.randn(2, 5, 3))
        ChaoticCell(mode="parallel", max_iters=1, fallback="warn", chunk_size=None)(chaotic_input(16))
    raised = [w for w in caught if "cannot run here" in str(w.message) or "did not converge" in str(w.message)]
    assert len(raised) == 2 and {w.filename for w in raised} == {__file__}
