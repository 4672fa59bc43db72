import re
import warnings

import pytest
import torch
from conftest import make_cell, random_state
from torch import nn

from pararnn_ts.core import Diagonal, ParaCell
from pararnn_ts.core import cell as cell_module
from pararnn_ts.core.checks import all_finite


def _cases():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(3, 17, 5, generator=g)
    big = torch.finfo(torch.float32).max
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        x = base.to(dtype)
        yield f"{dtype} finite", x
        for value in (float("nan"), float("inf"), float("-inf")):
            bad = x.clone()
            bad[2, 16, 4] = value
            yield f"{dtype} {value} at the end", bad
        both = x.clone()
        both[0, 0, 0], both[1, 3, 2] = float("inf"), float("-inf")  # the sum is NaN
        yield f"{dtype} +inf and -inf", both
        huge = torch.full((4, 7), torch.finfo(dtype).max, dtype=dtype)  # finite, but its sum overflows
        yield f"{dtype} finite sum overflow", huge
        yield f"{dtype} empty", x[:, :0]
    yield "float32 overflow with a NaN", torch.tensor([big, big, float("nan")])
    yield "int64", torch.arange(12).reshape(3, 4)
    yield "complex finite", torch.randn(5, dtype=torch.complex64, generator=g)
    yield "complex nan", torch.tensor([1 + 1j, complex(0, float("nan"))], dtype=torch.complex64)


@pytest.mark.parametrize("name, x", list(_cases()), ids=[name for name, _ in _cases()])
def test_all_finite_equals_the_entrywise_test(name, x):
    assert all_finite(x) == bool(torch.isfinite(x).all())
    if x.is_floating_point() and x.numel():
        assert all_finite(x.transpose(0, -1)) == bool(torch.isfinite(x).all())  # non-contiguous


def _no_compute(*args):
    raise AssertionError("computed with the state before its device was checked")


@pytest.mark.parametrize("check_inputs", [True, False])
def test_a_state_on_another_device_is_refused_before_any_compute(cell_name, check_inputs, monkeypatch):
    cell = make_cell(cell_name, torch.float32, check_inputs=check_inputs)
    x = torch.randn(2, 5, cell.input_size)
    state = random_state(cell, 2, torch.float32)
    if isinstance(state, tuple):  # ParaLSTM's (c, h)
        state, what, fix = tuple(s.to("meta") for s in state), "state[0]", "tuple(s.to({}.device) for s in state)"
    else:
        state, what, fix = state.to("meta"), "state", "h0.to({}.device)"
    monkeypatch.setattr(cell, "project", _no_compute)
    monkeypatch.setattr(cell, "state_to_tensor", _no_compute)
    for call, x_name in ((lambda: cell(x, state), "x"), (lambda: cell.step(x[:, 0], state), "x_t")):
        message = f"{type(cell).__name__}: {what} is on meta but {x_name} is on cpu; pass {fix.format(x_name)}"
        with pytest.raises(ValueError, match=re.escape(message)):
            call()


def test_lstm_state_pair_on_two_devices_names_the_one_off_device():
    cell = make_cell("paralstm", torch.float32)
    x = torch.randn(2, 5, cell.input_size)
    c, h = random_state(cell, 2, torch.float32)
    with pytest.raises(ValueError, match=re.escape("ParaLSTM: state[1] is on meta but x is on cpu")):
        cell(x, (c, h.to("meta")))
    cell(x, (c, h))  # the same state on x's device runs


class LogCell(ParaCell):
    """``tanh(a ⊙ h + u) + 0·log(u + 3)``: NaN where an input goes below −3, finite elsewhere."""

    structure = Diagonal()

    def __init__(self, gain: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        self.a = nn.Parameter(torch.full((4,), gain))

    @property
    def state_shape(self):
        return (4,)

    def recurrence(self, h, u):
        return torch.tanh(self.a * h + u) + 0 * torch.log(u + 3)


class GrowingCell(LogCell):
    def recurrence(self, h, u):
        return self.a * h + u  # |h| doubles each step with a = 2: float32 overflows after ~128 steps


@pytest.mark.parametrize("mode", ["sequential", "parallel"])
def test_nan_or_inf_from_the_recurrence_is_refused_naming_the_step_and_row(mode):
    """Whatever the non-convergence policy, with no warning that blames Newton first: the exact trajectory has the
    NaN too."""
    x = torch.randn(3, 30, 4, generator=torch.Generator().manual_seed(0)).clamp(-2, 2)
    x[1, 20, 2] = -10.0
    where = r"LogCell\.recurrence produced NaN or inf at step 20 \(of T=30\) in batch row 1"
    for fallback in ("sequential", "raise", "warn"):
        with warnings.catch_warnings(), pytest.raises(ValueError, match=where):
            warnings.simplefilter("error", RuntimeWarning)
            LogCell(mode=mode, fallback=fallback)(x)
    y, _ = LogCell(mode=mode, check_inputs=False)(x)  # the user's responsibility
    assert y[1, 20:, 2].isnan().all() and y[:, :20].isfinite().all()
    with pytest.raises(ValueError, match=r"at step 1[23]\d \(of T=200\) in batch row 0.*overflow \(\|h\| grows"):
        GrowingCell(2.0, mode=mode)(torch.ones(1, 200, 4))


@pytest.mark.parametrize("fallback", ["sequential", "raise"])
@pytest.mark.parametrize("mode", ["sequential", "parallel", "fused"])
def test_a_nan_parameter_is_named(mode, fallback):
    """Whatever the non-convergence policy, with no warning that blames Newton first."""
    cell = make_cell("paragru", torch.float32, mode=mode, fallback=fallback)
    with torch.no_grad():
        cell.A[1, 5] = float("nan")
    with warnings.catch_warnings(), pytest.raises(ValueError, match=r"ParaGRU\.recurrence produced NaN or inf at st"):
        warnings.simplefilter("error", RuntimeWarning)
        cell(torch.randn(2, 9, cell.input_size))
    assert cell.last_stats.mode == mode
    with pytest.raises(ValueError, match=r"at step 0 .*the parameters A have NaN or inf \(training diverged"):
        cell(torch.randn(2, 9, cell.input_size))


def test_a_finite_solve_checks_its_trajectory_in_one_reduction(monkeypatch):
    seen = []
    monkeypatch.setattr(cell_module, "all_finite", lambda t: seen.append(tuple(t.shape)) or all_finite(t))
    cell = LogCell(mode="parallel")
    cell(torch.randn(2, 9, 4))
    assert seen == [(2, 9, 4), (2, 9, 4)]  # x, then the trajectory
