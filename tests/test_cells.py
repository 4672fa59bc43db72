"""ParaGRU / ParaLSTM specifics: hand-written Jacobians, parameters, initialisation, clipping."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from conftest import make_cell

from pararnn_ts import ParaGRU, ParaLSTM
from pararnn_ts.core import Block
from pararnn_ts.core.cell import ParaCell


@pytest.mark.parametrize("name", ["paragru", "paralstm"])
def test_hand_written_jacobian_equals_forward_mode_ad(name):
    cell = make_cell(name, torch.float64)
    u = cell.project(torch.randn(3, 11, cell.input_size, dtype=torch.float64))
    h = 0.7 * torch.randn(3, 11, *cell.state_shape, dtype=torch.float64)
    f_hand, J_hand = cell.jacobian(h, u)
    f_ad, J_ad = cell.structure.jacobian_from_jvp(lambda s: cell.recurrence(s, u), h)
    torch.testing.assert_close(f_hand, f_ad)
    torch.testing.assert_close(J_hand, J_ad, rtol=1e-12, atol=1e-12)


def test_gru_matches_the_paper_equations():
    gru = make_cell("paragru", torch.float64)
    x = torch.randn(2, 1, gru.input_size, dtype=torch.float64)
    h = torch.randn(2, gru.hidden_size, dtype=torch.float64)
    D, H = gru.hidden_size, gru.num_heads
    # Dense equivalent of the block-diagonal projection.
    B_full = torch.block_diag(*[gru.B[n].reshape(3 * D // H, -1) for n in range(H)])  # rows: head, gate, out
    u = (x[:, 0] @ B_full.T).view(2, H, 3, D // H).transpose(1, 2).reshape(2, 3, D) + gru.b
    a_z, a_r, a_c = gru.A
    z = torch.sigmoid(a_z * h + u[:, 0])
    r = torch.sigmoid(a_r * h + u[:, 1])
    c = torch.tanh(a_c * (h * r) + u[:, 2])
    torch.testing.assert_close(gru.step(x[:, 0], h), (1 - z) * h + z * c)


def test_lstm_matches_the_paper_equations():
    lstm = make_cell("paralstm", torch.float64)
    x = torch.randn(2, lstm.input_size, dtype=torch.float64)
    c, h = torch.randn(2, 2, lstm.hidden_size, dtype=torch.float64)
    u = lstm.project(x)
    (a_f, a_z, a_o), (p_f, p_o) = lstm.A, lstm.C
    f = torch.sigmoid(a_f * h + u[:, 0] + p_f * c)
    z = torch.tanh(a_z * h + u[:, 1])
    c_new = f * c + (1 - f) * z
    o = torch.sigmoid(a_o * h + u[:, 2] + p_o * c_new)
    c_step, h_step = lstm.step(x, (c, h))
    torch.testing.assert_close(c_step, c_new)
    torch.testing.assert_close(h_step, o * torch.tanh(c_new))


def test_heads_are_block_diagonal():
    gru = ParaGRU(6, 9, num_heads=3)
    x = torch.zeros(1, 6)
    x[0, 0] = 1.0  # only head 0's input slice
    u = gru.project(x) - gru.b
    assert u[0, :, :3].abs().sum() > 0 and u[0, :, 3:].abs().sum() == 0


@pytest.mark.parametrize("cls", [ParaGRU, ParaLSTM])
def test_paper_initialisation(cls):
    torch.manual_seed(0)
    cell = cls(64, 128, num_heads=4)
    names = dict(cell.named_parameters())
    assert set(names) == ({"A", "B", "b", "C"} if cls is ParaLSTM else {"A", "B", "b"})
    assert torch.all(cell.b == 0)
    bound = 1 / math.sqrt(64 // 4)
    assert cell.B.abs().max() <= bound and cell.B.abs().max() > 0.9 * bound
    for p in cell.recurrent_parameters():
        norms = p.norm(dim=-1)
        assert torch.all(norms <= 0.5 + 1e-6) and torch.all(norms > 0.4)
    assert torch.all(cls(8, 8, recurrent_init="zeros").A == 0)
    assert cls(8, 8, recurrent_init="normal", max_norm=None).A.norm(dim=-1).max() > 0.5


def test_max_norm_clips_every_forward():
    gru = ParaGRU(4, 8, max_norm=0.5)
    with torch.no_grad():
        gru.A.fill_(2.0)  # row norm 2·√8, far above 0.5
    clipped = gru.clipped(gru.A)
    torch.testing.assert_close(clipped.norm(dim=-1), torch.full((3,), 0.5))
    free = ParaGRU(4, 8, max_norm=None)
    free.load_state_dict(gru.state_dict())
    x = torch.randn(2, 5, 4)
    with torch.no_grad():
        free.A.copy_(clipped)
    torch.testing.assert_close(gru(x)[0], free(x)[0])


class HalvedGRU(ParaGRU):
    """A user's variant: ParaGRU's recurrence, halved; ParaGRU's kernel and Jacobian would compute the unhalved."""

    def recurrence(self, h_prev, u):
        return 0.5 * super().recurrence(h_prev, u)


class HalvedLSTM(ParaLSTM):
    def recurrence(self, h_prev, u):
        return 0.5 * super().recurrence(h_prev, u)


class SquashedGRU(ParaGRU):
    """Its own bound on A instead of the row-norm clip, which ParaGRU's kernel applies."""

    def clipped(self, p):
        return 0.9 * torch.tanh(p)


class SharpGatesLSTM(ParaLSTM):
    def _gates(self, s, u):
        return super()._gates(s, 2 * u)


class ProjectedGRU(ParaGRU):
    """Overrides only the input map: ParaGRU's recurrence, so ParaGRU's kernel still applies."""

    def project(self, x):
        return super().project(2 * x)


@pytest.mark.parametrize(
    "cls, method",
    [(HalvedGRU, "recurrence"), (HalvedLSTM, "recurrence"), (SquashedGRU, "clipped"), (SharpGatesLSTM, "_gates")],
)
def test_a_subclass_overriding_recurrence_runs_its_own_in_every_mode(cls, method):
    """Overriding the recurrence, or a method it calls, drops the parent's kernel and hand-written Jacobian."""
    torch.manual_seed(0)
    cell = cls(4, 6, num_heads=2).double()
    x = torch.randn(2, 9, 4, dtype=torch.float64)
    h = torch.zeros(2, *cell.state_shape, dtype=torch.float64)
    with torch.no_grad():
        for t in range(x.shape[1]):  # the subclass's recurrence step by step: the definition itself
            h = cell.recurrence(h, cell.project(x[:, t]))
        for mode in ("auto", "sequential", "parallel", "fused"):
            cell.mode = mode
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                y, _ = cell(x)
            torch.testing.assert_close(y[:, -1], cell.output(h), msg=mode)
            assert cell.last_stats.backend == "pytorch"
            refused = [str(w.message) for w in caught if f"overrides {method}" in str(w.message)]
            assert bool(refused) == (mode == "fused")
    parent = cls.__mro__[1].__name__
    assert refused and f"{cls.__name__} overrides {method}, so the fused kernel of {parent}" in refused[0]
    assert cls.jacobian is ParaCell.jacobian and cls.fused_kernel is None


def test_a_subclass_keeping_the_recurrence_keeps_the_kernel_and_jacobian():
    assert ProjectedGRU.fused_kernel == "gru" and ProjectedGRU.jacobian is ParaGRU.jacobian


class PlainBlock(Block):
    """Block(2) with its own algebra, which keeps the scans in the ``(D, 2)`` layout (the plain path)."""

    def apply(self, J, x):
        return super().apply(J, x)

    def compose(self, J2, J1):
        return super().compose(J2, J1)


class PlainLSTM(ParaLSTM):
    """ParaLSTM on the plain path: Jacobian by forward-mode AD (stacked columns), scans in the ``(D, 2)`` layout."""

    structure = PlainBlock(2)
    jacobian = ParaCell.jacobian


def test_paralstm_fast_path_equals_the_plain_path():
    # The hand-written Jacobian (assembled by _interleave) and the channels-last Block scan against forward-mode AD
    # and the (D, 2)-layout scan: outputs, final state and every gradient, at awkward sizes.
    B, T, D = 3, 17, 5
    results = []
    for cls in (ParaLSTM, PlainLSTM):
        torch.manual_seed(0)
        cell = cls(4, D, max_norm=None, mode="parallel", chunk_size=None).double()
        with torch.no_grad():
            cell.A.uniform_(-0.9, 0.9)
            cell.C.uniform_(-0.9, 0.9)
            cell.b.uniform_(-0.9, 0.9)
        g = torch.Generator().manual_seed(1)
        x = torch.randn(B, T, 4, generator=g, dtype=torch.float64, requires_grad=True)
        c0, h0 = (0.5 * torch.randn(B, D, generator=g, dtype=torch.float64).requires_grad_() for _ in range(2))
        y, (c, h) = cell(x, (c0, h0))
        w = [torch.randn(t.shape, generator=g, dtype=torch.float64) for t in (y, c, h)]
        loss = (w[0] * y).sum() + (w[1] * c).sum() + (w[2] * h).sum()
        grads = torch.autograd.grad(loss, [x, c0, h0, *cell.parameters()])
        assert cell.last_stats.converged and cell.last_stats.iterations >= 2
        results.append((y, c, h, *grads))
    for got, expected in zip(*results, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
