"""The first-use checks of a cell's contract (pararnn_ts/core/contract.py): a user's cell that declares the wrong
Jacobian structure, hand-writes a wrong Jacobian, reads a tensor its parallel backward cannot differentiate, or
mismatches its structure and state fails at its first solve with an error naming the fix, not with wrong
gradients or a raw shape error in one mode only."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import make_cell
from torch import nn

from pararnn_ts.core import Block, Dense, Diagonal, ParaCell, Structure, contract


class MixingCell(ParaCell):
    """``h_t = tanh(W h_{t-1} + u_t)``: ``W`` mixes channels, so its Jacobian is dense."""

    structure = Diagonal()  # the audit's mistake: the recurrence mixes channels

    def __init__(self, mixing: float = 1.0, dtype: torch.dtype = torch.float64, **kwargs):
        super().__init__(**kwargs)
        g = torch.Generator().manual_seed(0)
        self.W = nn.Parameter(0.5 * torch.eye(4, dtype=dtype) + mixing * torch.randn(4, 4, generator=g, dtype=dtype))

    @property
    def state_shape(self):
        return (4,)

    def recurrence(self, h, u):
        return torch.tanh(h @ self.W.T + u)


class DenseMixingCell(MixingCell):
    structure = Dense()


class ElementwiseCell(ParaCell):
    """``h_t = tanh(a ⊙ h_{t-1} + u_t)``: a diagonal Jacobian."""

    structure = Diagonal()

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.a = nn.Parameter(torch.full((4,), 0.5, dtype=torch.float64))

    @property
    def state_shape(self):
        return (4,)

    def recurrence(self, h, u):
        return torch.tanh(self.a * h + u)


def inputs(T=30, batch=2, dtype=torch.float64, features=4):
    return torch.randn(batch, T, features, dtype=dtype, generator=torch.Generator().manual_seed(1))


def grads(cell, x):
    x = x.detach().clone().requires_grad_()
    y, _ = cell(x)
    return torch.autograd.grad(y.sin().sum(), (x, *cell.parameters()))


# ---- 1. the declared structure / hand-written Jacobian against the true derivative ----------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mixing", [1.0, 0.05])  # strong: Newton fails and falls back; weak: Newton "converges"
def test_a_structure_the_recurrence_does_not_have_is_refused_in_parallel_mode(mixing, dtype):
    x = inputs(dtype=dtype)
    grads(MixingCell(mixing, dtype, mode="sequential"), x)  # the sequential mode needs no Jacobian: it runs
    with pytest.raises(ValueError, match=r"MixingCell.*Diagonal\(\).*not the derivative.*Dense\(\).*sequential"):
        grads(MixingCell(mixing, dtype, mode="parallel"), x)


def test_a_block_state_that_mixes_channels_is_told_that_dense_takes_a_flat_state():
    with pytest.raises(ValueError, match=r"keeps apart.*Dense\(\) takes a flat state: state_shape \(4,\)"):
        ChannelMixingBlockCell(mode="parallel")(inputs())


def test_the_right_structure_passes_and_gives_the_sequential_gradients():
    x = inputs()
    ref = grads(DenseMixingCell(mode="sequential"), x)
    cell = DenseMixingCell(mode="parallel", max_iters=30)  # 12 Newton steps leave its float64 residual at 6e-12
    for a, b in zip(ref, grads(cell, x), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12)
    assert not cell._contract_pending


class WrongJacobianCell(ElementwiseCell):
    def jacobian(self, h, u):
        f = self.recurrence(h, u)
        return f, self.a * (1 - f)  # should be a·(1 − f²)


class RightJacobianCell(ElementwiseCell):
    def jacobian(self, h, u):
        f = self.recurrence(h, u)
        return f, self.a * (1 - f * f)


class WrongShapeJacobianCell(ElementwiseCell):
    def jacobian(self, h, u):
        f = self.recurrence(h, u)
        return f, torch.diag_embed(self.a * (1 - f * f))  # a dense layout for a Diagonal structure


class WrongValueJacobianCell(ElementwiseCell):
    def jacobian(self, h, u):
        f = self.recurrence(h, u)
        return f.clamp(max=0.1), self.a * (1 - f * f)  # f must be recurrence(h, u)


@pytest.mark.parametrize(
    "cls, match",
    [
        (WrongJacobianCell, r"WrongJacobianCell\.jacobian is not the derivative.*correct WrongJacobianCell"),
        (WrongShapeJacobianCell, r"J of shape \(2, 4, 4, 4\).*needs .* J of shape \(2, 4, 4\)"),
        (WrongValueJacobianCell, r"jacobian returns an f that differs from recurrence"),
    ],
)
def test_a_wrong_hand_written_jacobian_is_refused(cls, match):
    with pytest.raises(ValueError, match=match):
        cls(mode="parallel")(inputs())
    cls(mode="sequential")(inputs())


def test_a_right_hand_written_jacobian_passes():
    cell = RightJacobianCell(mode="parallel")
    cell(inputs())
    assert not cell._contract_pending


class LeadingDimCell(ElementwiseCell):
    """Indexes ``u`` from the front: right step by step ``(B, 4)``, wrong on ``(B, T, 4)``."""

    def recurrence(self, h, u):
        return torch.tanh(self.a * h + u[:, :1])


class DropoutCell(ElementwiseCell):
    def recurrence(self, h, u):
        return F.dropout(torch.tanh(self.a * h + u), 0.5)


@pytest.mark.parametrize("cls", [LeadingDimCell, DropoutCell])
def test_a_recurrence_that_is_not_batched_over_time_is_refused_in_parallel_mode(cls):
    cls(mode="sequential")(inputs())
    with pytest.raises(ValueError, match=r"other values on h_prev of shape \(2, 4, 4\).*u\[\.\.\., 0\]"):
        cls(mode="parallel")(inputs())


class BatchMeanCell(ElementwiseCell):
    """Reads the mean state over the batch: each row depends on the others."""

    def recurrence(self, h, u):
        return torch.tanh(self.a * h + u + 0.5 * h.mean(0, keepdim=True))


@pytest.mark.parametrize("batch", [1, 3])  # one sequence: the check pairs it with its steps in reverse order
def test_a_recurrence_that_mixes_batch_rows_is_refused_at_the_first_solve(batch):
    BatchMeanCell(mode="sequential")(inputs(batch=batch))
    with pytest.raises(ValueError, match=r"BatchMeanCell\.recurrence mixes batch rows.*dim 0.*mode=\"sequential\""):
        BatchMeanCell(mode="parallel")(inputs(batch=batch))


class EvalOffDropoutCell(ElementwiseCell):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.drop = nn.Dropout(0.5)

    def recurrence(self, h, u):
        return torch.tanh(self.a * self.drop(h) + u)


@pytest.mark.filterwarnings("ignore:.*Newton did not converge:RuntimeWarning")
def test_dropout_is_checked_again_at_the_first_solve_in_training_mode():
    """Lightning's sanity check validates (eval mode, no grad) before the first training step."""
    cell = EvalOffDropoutCell(mode="parallel")
    cell.eval()
    with torch.no_grad():
        cell(inputs())  # dropout is off: the recurrence is deterministic here
    assert cell._contract_pending == {"inputs", "train_mode"}
    cell.train()
    with pytest.raises(ValueError, match=r"other values on h_prev.*in training mode.*deterministic \(no dropout"):
        cell(inputs())
    right = ElementwiseCell(mode="parallel").eval()
    with torch.no_grad():
        right(inputs())
    right.train()(inputs())[0].sum().backward()
    assert not right._contract_pending


@pytest.mark.parametrize("dtype, autocast", [(torch.float32, False), (torch.float64, False), (torch.float32, True)])
def test_the_shipped_cells_keep_the_contract(cell_name, dtype, autocast):
    cell = make_cell(cell_name, dtype, mode="parallel")
    x = 3 * torch.randn(2, 20, cell.input_size, dtype=dtype)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        y, _ = cell(x)
    y.float().square().sum().backward()
    assert not cell._contract_pending


def test_the_shipped_cells_keep_the_contract_without_grad(cell_name):
    cell = make_cell(cell_name, torch.float32, mode="parallel")
    x = torch.randn(2, 9, cell.input_size)
    with torch.inference_mode():
        cell(x)
    # A hand-written Jacobian waits for a call outside inference mode (only forward mode differentiates there)
    expected = {"inputs"} if cell_name == "oscillator" else {"jacobian", "inputs"}
    assert cell._contract_pending == expected
    with torch.no_grad():
        cell(x)
    assert cell._contract_pending == {"inputs"}
    cell(x)
    assert not cell._contract_pending


def test_the_checks_run_once_per_cell(monkeypatch):
    calls = []
    check = contract.check_contract
    monkeypatch.setattr("pararnn_ts.core.cell.check_contract", lambda *a: calls.append(1) or check(*a))
    cell = make_cell("paragru", torch.float64, mode="parallel")
    x = torch.randn(2, 9, cell.input_size, dtype=torch.float64)
    for _ in range(3):
        cell(x)[0].sum().backward()
    assert len(calls) == 1 and not cell._contract_pending
    make_cell("paragru", torch.float64, mode="parallel")(x)
    assert len(calls) == 2  # per instance


def test_check_contract_false_skips_the_checks():
    cell = MixingCell(mode="parallel", check_contract=False)
    with pytest.warns(RuntimeWarning, match="did not converge"):  # Newton with the wrong Jacobian falls back
        cell(inputs())  # the user's responsibility: no error
    assert cell._contract_pending == set(contract.CHECKS)


def test_the_checks_wait_for_an_eager_call_under_tracing(monkeypatch):
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    cell = MixingCell(mode="parallel")
    with pytest.warns(RuntimeWarning, match="did not converge"):
        cell(inputs())  # what torch.compile traces: no check, no host sync from it
    assert cell._contract_pending == set(contract.CHECKS)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="not the derivative"):
        cell(inputs())


def test_the_checks_leave_the_random_streams_alone():
    def after_first_call(check):
        torch.manual_seed(3)
        DropoutCell(mode="sequential", check_contract=check)(inputs())
        return torch.get_rng_state()

    torch.testing.assert_close(after_first_call(True), after_first_call(False))


# ---- 2. tensors the recurrence reads besides h, u and the cell's parameters ----------------------------------
class ConditionedCell(ElementwiseCell):
    """Reads ``self.cond``, set by an outer model before each call."""

    def recurrence(self, h, u):
        return torch.tanh(self.a * h + u * self.cond)


def test_a_tensor_read_outside_u_and_the_parameters_is_refused_in_parallel_mode():
    emb = torch.randn(4, dtype=torch.float64, requires_grad=True)
    cell = ConditionedCell(mode="sequential")
    cell.cond = emb.sigmoid()
    cell(inputs())[0].sum().backward()
    assert emb.grad is not None and emb.grad.abs().sum() > 0  # the sequential mode differentiates it
    cell = ConditionedCell(mode="parallel")
    cell.cond = emb.sigmoid()
    with pytest.raises(ValueError, match=r"reads the attribute self\.cond, which requires grad.*through u.*Parameter"):
        cell(inputs())


def test_reading_a_tensor_without_grad_or_under_no_grad_passes():
    emb = torch.randn(4, dtype=torch.float64, requires_grad=True)
    cell = ConditionedCell(mode="parallel")
    cell.cond = emb.sigmoid()
    with torch.no_grad():
        cell(inputs())  # no gradient to lose
    assert "inputs" in cell._contract_pending
    cell.cond = emb.detach().sigmoid()  # a constant: nothing to lose either
    cell(inputs())[0].sum().backward()
    assert not cell._contract_pending


class GlobalReadingCell(ElementwiseCell):
    def recurrence(self, h, u):
        return torch.tanh(self.a * h + u * OUTER.weight[0])


OUTER = nn.Linear(4, 3, dtype=torch.float64)  # another module's parameter, read from a global


def test_an_outer_models_parameter_is_refused_in_parallel_mode():
    with pytest.raises(ValueError, match=r"reads a tensor of shape \(3, 4\), which requires grad"):
        GlobalReadingCell(mode="parallel")(inputs())


class BufferCell(ElementwiseCell):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.register_buffer("scale", torch.full((4,), 0.7, dtype=torch.float64))

    def recurrence(self, h, u):
        return torch.tanh(self.a * h + self.scale * u)


def test_parameters_and_buffers_pass():
    cell = BufferCell(mode="parallel")
    ref = grads(BufferCell(mode="sequential"), inputs())
    for a, b in zip(ref, grads(cell, inputs()), strict=True):
        torch.testing.assert_close(b, a)
    assert not cell._contract_pending


def test_buffers_swapped_in_are_those_the_backward_uses():
    """As parameters are: the backward differentiates at the buffers the forward ran with (functional_call), and
    refuses to run after one of the cell's own changed in place."""
    other = {"scale": torch.full((4,), 0.3, dtype=torch.float64)}
    expected = None
    for mode in ("sequential", "parallel"):
        cell = BufferCell(mode=mode)
        x = inputs().requires_grad_()
        y, _ = torch.func.functional_call(cell, other, (x,))
        got = torch.autograd.grad(y.sin().sum(), (x, *cell.parameters()))
        expected = expected or got
        for a, b in zip(expected, got, strict=True):
            torch.testing.assert_close(b, a, msg=mode)
        y, _ = cell(inputs().requires_grad_())  # a buffer of the cell's own changed before the backward: refused
        with torch.no_grad():
            cell.scale.mul_(0.5)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            y.sum().backward()
    # vmap over a buffer: the solves' autograd Functions have no vmap rule, so the loop runs (Newton failed on .item())
    scales, x = torch.stack([torch.full((4,), v, dtype=torch.float64) for v in (0.3, 0.6)]), inputs()
    with pytest.warns(RuntimeWarning, match="torch.func transform"):
        y = torch.func.vmap(lambda b: torch.func.functional_call(cell, {"scale": b}, (x,))[0])(scales)
    for b, y_b in zip(scales, y, strict=True):
        torch.testing.assert_close(y_b, torch.func.functional_call(cell, {"scale": b}, (x,))[0])


class BatchNormProjectionCell(ElementwiseCell):
    """``project`` normalises ``x`` with BatchNorm, whose running statistics are buffers the recurrence never reads."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.norm = nn.BatchNorm1d(4, dtype=torch.float64)

    def project(self, x):
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


def test_buffers_the_recurrence_does_not_read_may_change_before_the_backward():
    """Two calls before one backward update a BatchNorm's running statistics in between: every mode runs it."""
    grads = []
    for mode in ("sequential", "parallel"):
        torch.manual_seed(0)
        cell = BatchNormProjectionCell(mode=mode)
        (cell(inputs())[0].sum() + cell(inputs(T=20))[0].sum()).backward()
        grads.append(cell.a.grad)
    torch.testing.assert_close(grads[1], grads[0])


# ---- 3. what a subclass must implement -------------------------------------------------------------------------
class NoRecurrence(ParaCell):
    state_shape = (4,)


class NoStateShape(ParaCell):
    def recurrence(self, h, u):
        return h


class HalfStructure(Structure):
    pass


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: NoRecurrence()(inputs()), r"NoRecurrence must implement recurrence\(h_prev, u\).*oscillator\.py"),
        (lambda: NoStateShape()(inputs()), r"NoStateShape must implement the property state_shape.*oscillator\.py"),
        (lambda: HalfStructure().apply(None, None), r"HalfStructure must implement apply\(J, x\)"),
    ],
)
def test_a_missing_member_is_named(call, match):
    with pytest.raises(NotImplementedError, match=match):
        call()


# ---- 4. structure, state and the recurrence's output, in every mode ------------------------------------------
class BlockOnFlatState(ElementwiseCell):
    structure = Block(2)


class StructureClass(ElementwiseCell):
    structure = Diagonal


class StructureString(ElementwiseCell):
    structure = "diagonal"


class DenseOnBlockState(ElementwiseCell):
    structure = Dense()

    @property
    def state_shape(self):
        return (2, 2)

    def project(self, x):
        return x.unflatten(-1, (2, 2))

    def recurrence(self, h, u):
        return torch.tanh(0.5 * h + u)


class ChannelMixingBlockCell(DenseOnBlockState):
    """A ``(2, 2)`` state declared ``Block(2)`` whose recurrence also mixes the channels (``roll``)."""

    structure = Block(2)

    def recurrence(self, h, u):
        return torch.tanh(0.5 * h + 0.3 * h.roll(1, -2) + u)


class IntStateShape(ElementwiseCell):
    state_shape = 4  # not (4,)


class WrongOutputShape(ElementwiseCell):
    def recurrence(self, h, u):
        return super().recurrence(h, u)[..., :3]


class WrongOutputDtype(ElementwiseCell):
    def recurrence(self, h, u):
        return super().recurrence(h, u).float()


class StepOnly(ElementwiseCell):
    """Works on ``(B, 4)`` only: ``torch.mm`` takes matrices."""

    def recurrence(self, h, u):
        return torch.tanh(torch.mm(h, torch.diag(self.a)) + u)


@pytest.mark.parametrize("mode", ["sequential", "parallel"])
@pytest.mark.parametrize(
    "cls, match",
    [
        (BlockOnFlatState, r"structure Block\(2\) is for a state of shape \(D, 2\), but state_shape is \(4,\)"),
        (StructureClass, r"StructureClass\.structure is the class Diagonal; it must be an instance: .*Diagonal\(\)"),
        (StructureString, r"must be a Structure instance \(Diagonal\(\), Block\(k\) or Dense\(\).*'diagonal'"),
        (DenseOnBlockState, r"structure Dense\(\) is for a state of shape \(N,\).*\(2, 2\).*Block\(2\)"),
        (IntStateShape, r"IntStateShape\.state_shape must be a tuple of positive ints.*\(D,\).*got 4$"),
        (WrongOutputShape, r"recurrence returned \(2, 3\) for h_prev of shape \(2, 4\).*must return the next state"),
        (WrongOutputDtype, r"recurrence returned torch\.float32 for a torch\.float64 state"),
    ],
)
def test_a_mismatch_of_structure_state_and_output_is_named_in_every_mode(cls, match, mode):
    with pytest.raises(ValueError, match=match):
        cls(mode=mode)(inputs())


@pytest.mark.parametrize("cls", [StepOnly, LeadingDimCell])
def test_a_recurrence_written_for_one_step_runs_sequentially_and_is_refused_in_parallel(cls):
    """The sequential mode calls it step by step, as a plain loop would; only the parallel mode needs the batched
    (batch, time, ...) layout."""
    cell, x = cls(mode="sequential"), inputs()
    y, last = cell(x)
    h, loop = torch.zeros(x.shape[0], 4, dtype=x.dtype), []
    for x_t in x.unbind(1):
        h = cell.recurrence(h, x_t)
        loop.append(h)
    torch.testing.assert_close(y, torch.stack(loop, 1), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"batched over any leading dims|index from the end"):
        cls(mode="parallel")(inputs())


@pytest.mark.parametrize("mode", ["sequential", "parallel"])
def test_a_cell_without_project_whose_input_is_not_its_state_names_project(mode):
    # ElementwiseCell reads u as a state-shaped (4,) input; x of 6 features reaches it unchanged
    with pytest.raises(ValueError, match=r"ElementwiseCell has no project\(x\), so u is x itself \(its last dim inp"):
        ElementwiseCell(mode=mode)(inputs(features=6))
    with pytest.raises(ValueError, match=r"recurrence failed on h_prev of shape \(2, 4, 4\).*batched over any"):
        StepOnly(mode="parallel")(inputs())  # u of the state's shape: its own error, not project's


@pytest.mark.parametrize(
    "cls, match",
    [
        (WrongOutputShape, r"recurrence returned \(2, 3\) for h_prev of shape \(2, 4\).*must return the next state"),
        (WrongOutputDtype, r"recurrence returned torch\.float32 for a torch\.float64 state"),
    ],
)
def test_step_checks_what_the_recurrence_returns_at_its_first_call(cls, match, monkeypatch):
    x_t = inputs()[:, 0]
    with pytest.raises(ValueError, match=match):
        cls().step(x_t)
    cls(check_contract=False).step(x_t)  # the user's responsibility
    cell = ElementwiseCell()
    cell.step(x_t)
    monkeypatch.setattr("pararnn_ts.core.cell.check_state", lambda *a: pytest.fail("checked again"))
    cell.step(x_t)  # once per cell


class CustomFunctionCell(ElementwiseCell):
    """Calls an autograd.Function with no setup_context or jvp: torch.func's forward mode cannot differentiate it."""

    def recurrence(self, h, u):
        return _Tanh.apply(self.a * h + u)


class _Tanh(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        y = torch.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * (1 - y * y)


@pytest.mark.parametrize("check", [True, False])
def test_a_recurrence_forward_mode_cannot_differentiate_is_named_with_the_fix(check):
    CustomFunctionCell(mode="sequential")(inputs())  # reverse mode, through the loop: runs
    cell = CustomFunctionCell(mode="parallel", check_contract=check)
    fix = r"CustomFunctionCell\.recurrence runs, but torch\.func forward-mode AD.*write a jacobian\(h_prev, u\)"
    with pytest.raises(ValueError, match=fix + r'.*mode="sequential"') as refused:
        cell(inputs())
    assert isinstance(refused.value.__cause__, RuntimeError) and "setup_context" in str(refused.value)


def test_an_error_of_the_recurrence_itself_is_not_blamed_on_forward_mode():
    class Failing(ElementwiseCell):
        def recurrence(self, h, u):
            raise RuntimeError("a bug of its own")

    with pytest.raises(RuntimeError, match="a bug of its own"):
        Failing().jacobian(torch.zeros(2, 4, dtype=torch.float64), torch.zeros(2, 4, dtype=torch.float64))


def test_a_cell_unpickled_from_before_the_checks_runs_without_them():
    cell = MixingCell(mode="parallel")
    del cell._contract_pending  # as a cell pickled before the attribute existed: the class default, nothing pending
    with pytest.warns(RuntimeWarning, match="did not converge"):
        cell(inputs())
