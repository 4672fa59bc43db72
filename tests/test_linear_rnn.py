"""GatedLinearRNN: the formula, every mode agreeing, its hand-written Jacobian, and its head blocks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pararnn_ts.nn import GatedLinearRNN, HeadwiseLinear

INPUT, HIDDEN, HEADS = 6, 9, 3


def make_cell(**kwargs) -> GatedLinearRNN:
    torch.manual_seed(0)
    cell = GatedLinearRNN(INPUT, HIDDEN, num_heads=HEADS, **kwargs).double()
    with torch.no_grad():
        cell.proj.bias.uniform_(-1, 1)  # off its zero initialisation, so the bias matters
    return cell


def reference_loop(cell: GatedLinearRNN, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """The docstring's equations with the block-diagonal weight written out as one matrix."""
    W = torch.block_diag(*cell.proj.weight)  # (2·HIDDEN, INPUT); rows alternate g, v per channel
    pre = F.linear(x, W, cell.proj.bias)
    g, v = torch.sigmoid(pre[..., 0::2]), pre[..., 1::2]
    ys = []
    for t in range(x.shape[1]):
        h = g[:, t] * h + (1 - g[:, t]) * v[:, t]
        ys.append(h)
    return torch.stack(ys, dim=1)


def outputs_and_grads(cell: GatedLinearRNN, x: torch.Tensor, h0: torch.Tensor, mode: str) -> dict[str, torch.Tensor]:
    cell.mode = mode
    cell.zero_grad()
    x, h0 = x.detach().clone().requires_grad_(), h0.detach().clone().requires_grad_()
    y, last = cell(x, h0)
    weights = torch.randn(y.shape, generator=torch.Generator().manual_seed(3), dtype=y.dtype)
    ((y * weights).sum() + last.sum()).backward()
    return {"y": y.detach(), "last": last.detach(), "x": x.grad, "h0": h0.grad} | {
        name: p.grad for name, p in cell.named_parameters()
    }


@pytest.mark.parametrize("T", [1, 2, 37, 256])
def test_matches_the_equations(T):
    cell = make_cell()
    x = torch.randn(2, T, INPUT, dtype=torch.float64)
    h0 = torch.randn(2, HIDDEN, dtype=torch.float64)
    y, last = cell(x, h0)
    expected = reference_loop(cell, x, h0)
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(last, expected[:, -1], rtol=0, atol=1e-12)


@pytest.mark.parametrize("T", [1, 2, 63, 1000])
def test_parallel_equals_sequential_float64(T):
    cell = make_cell()
    x = torch.randn(3, T, INPUT, dtype=torch.float64)
    h0 = torch.randn(3, HIDDEN, dtype=torch.float64)
    seq = outputs_and_grads(cell, x, h0, "sequential")
    par = outputs_and_grads(cell, x, h0, "parallel")
    assert cell.last_stats.mode == "parallel" and cell.last_stats.converged and not cell.last_stats.fell_back
    assert set(seq) == set(par)
    for name in seq:
        assert par[name] is not None, f"no gradient for {name}"
        # float64 rounding, growing at most linearly in T
        torch.testing.assert_close(par[name], seq[name], rtol=1e-12 * T, atol=1e-12 * T, msg=name)


def test_newton_converges_in_one_iteration():
    cell = make_cell(mode="parallel")
    cell(torch.randn(2, 50, INPUT, dtype=torch.float64))
    assert cell.last_stats.iterations == 1 and cell.last_stats.converged


def test_jacobian_equals_forward_mode_ad():
    cell = make_cell()
    u = cell.project(torch.randn(4, 7, INPUT, dtype=torch.float64))
    h = torch.randn(4, 7, HIDDEN, dtype=torch.float64)
    f_hand, J_hand = cell.jacobian(h, u)
    f_ad, J_ad = cell.structure.jacobian_from_jvp(lambda s: cell.recurrence(s, u), h)
    torch.testing.assert_close(f_hand, f_ad, rtol=0, atol=1e-15)
    torch.testing.assert_close(J_hand, J_ad, rtol=0, atol=1e-15)


def test_step_continues_forward():
    cell = make_cell()
    x = torch.randn(2, 5, INPUT, dtype=torch.float64)
    y, last = cell(x)
    _, before_last = cell(x[:, :-1])
    torch.testing.assert_close(cell.step(x[:, -1], before_last), last, rtol=0, atol=1e-14)


def test_heads_only_see_their_slice_of_the_input():
    cell = make_cell()
    x = torch.randn(1, 4, INPUT, dtype=torch.float64)
    y, _ = cell(x)
    x2 = x.clone()
    x2[..., : INPUT // HEADS] += 1.0  # head 0's input slice
    y2, _ = cell(x2)
    changed = (y2 - y).abs().amax(dim=(0, 1)) > 0
    head0 = torch.arange(HIDDEN) < HIDDEN // HEADS
    assert changed[head0].all() and not changed[~head0].any()


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"input_size": 6, "hidden_size": 8, "num_heads": 3}, "num_heads"),
        ({"input_size": 6, "hidden_size": 0}, "hidden_size"),
        ({"input_size": -1, "hidden_size": 4}, "input_size"),
    ],
)
def test_bad_sizes_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        GatedLinearRNN(**kwargs)


def test_headwise_linear_is_block_diagonal_linear():
    torch.manual_seed(0)
    layer = HeadwiseLinear(6, 12, num_heads=3).double()
    with torch.no_grad():
        layer.bias.uniform_(-1, 1)
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    expected = F.linear(x, torch.block_diag(*layer.weight), layer.bias)
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=1e-14)
