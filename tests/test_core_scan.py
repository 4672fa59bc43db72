"""The linear-recurrence solvers against plain loops, for every Jacobian structure."""

from __future__ import annotations

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from pararnn_ts.core import Block, Dense, Diagonal, linear_scan, reverse_linear_scan
from pararnn_ts.core import scan as scan_module

STRUCTURES = {
    "diag": (Diagonal(), (7,)),
    "block2": (Block(2), (7, 2)),
    "block3": (Block(3), (5, 3)),
    "dense": (Dense(), (6,)),
}


def random_system(structure, state_shape, B, T, seed=0):
    g = torch.Generator().manual_seed(seed)
    J = 0.6 * torch.randn(B, T, *structure.jacobian_shape(state_shape), generator=g, dtype=torch.float64)
    b = torch.randn(B, T, *state_shape, generator=g, dtype=torch.float64)
    x0 = torch.randn(B, *state_shape, generator=g, dtype=torch.float64)
    return J, b, x0


def loop_forward(structure, J, b, x0):
    x, out = x0, []
    for t in range(b.shape[1]):
        x = structure.apply(J[:, t], x) + b[:, t]
        out.append(x)
    return torch.stack(out, 1)


def loop_adjoint(structure, J, g):
    T = g.shape[1]
    lam, out = g[:, -1], [g[:, -1]]
    for t in range(T - 2, -1, -1):
        lam = g[:, t] + structure.apply(structure.transpose(J[:, t + 1]), lam)
        out.append(lam)
    return torch.stack(out[::-1], 1)


@pytest.mark.parametrize("name", STRUCTURES)
@pytest.mark.parametrize("T", [1, 2, 3, 5, 63, 64, 1000])
def test_linear_scan_matches_loop(name, T):
    structure, shape = STRUCTURES[name]
    J, b, x0 = random_system(structure, shape, 3, T)
    torch.testing.assert_close(
        linear_scan(J, b, structure, x0), loop_forward(structure, J, b, x0), rtol=1e-10, atol=1e-10
    )
    torch.testing.assert_close(linear_scan(J, b, structure), loop_forward(structure, J, b, torch.zeros_like(x0)))


@pytest.mark.parametrize("name", STRUCTURES)
@pytest.mark.parametrize("T", [1, 2, 7, 64, 999])
def test_reverse_scan_matches_adjoint_loop(name, T):
    structure, shape = STRUCTURES[name]
    J, g, _ = random_system(structure, shape, 2, T, seed=3)
    torch.testing.assert_close(
        reverse_linear_scan(J, g, structure), loop_adjoint(structure, J, g), rtol=1e-10, atol=1e-10
    )


@pytest.mark.parametrize("name", STRUCTURES)
@pytest.mark.parametrize(("B", "T"), [(2, 0), (0, 5), (0, 0)])
def test_scans_of_empty_systems_are_empty(name, B, T):
    structure, shape = STRUCTURES[name]
    J, b, x0 = random_system(structure, shape, B, T)
    for x in (linear_scan(J, b, structure, x0), linear_scan(J, b, structure), reverse_linear_scan(J, b, structure)):
        assert x.shape == b.shape


@pytest.mark.parametrize("name", STRUCTURES)
def test_reverse_scan_does_not_read_the_first_jacobian(name):
    # λ's recurrence uses J_1 ... J_{T-1}; J_0 (∂h_0/∂h_init) may hold anything, even NaN.
    structure, shape = STRUCTURES[name]
    J, g, _ = random_system(structure, shape, 2, 9, seed=5)
    J[:, 0] = float("nan")
    torch.testing.assert_close(
        reverse_linear_scan(J, g, structure), loop_adjoint(structure, J, g), rtol=1e-10, atol=1e-10
    )


class CountingDiagonal(Diagonal):
    """Counts how many step-Jacobians the scan combines."""

    def __init__(self):
        self.combined = 0

    def compose(self, J2, J1):
        self.combined += J2[0, :, 0].numel()
        return super().compose(J2, J1)


@pytest.mark.parametrize("T", [255, 1024, 4097])
def test_scan_is_work_efficient(T):
    # Odd-even reduction combines T/2 + T/4 + ... < T pairs; Hillis-Steele would do ~T log2 T.
    structure = CountingDiagonal()
    J, b, _ = random_system(structure, (3,), 1, T)
    linear_scan(J, b, structure)
    assert structure.combined < T


class OwnAlgebraBlock(Block):
    """A Block with its own (here: the inherited) algebra: the scan keeps the ``(D, k)`` layout for it."""

    def apply(self, J, x):
        return super().apply(J, x)

    def compose(self, J2, J1):
        return super().compose(J2, J1)


class OwnAlgebraDiagonal(Diagonal):
    """A Diagonal with its own (here: the inherited) algebra."""

    def apply(self, J, x):
        return super().apply(J, x)


@pytest.mark.parametrize(
    ("structure", "native"),
    [(Diagonal(), "diagonal"), (Block(2), "block2"), (OwnAlgebraDiagonal(), None), (OwnAlgebraBlock(2), None)],
    ids=["diagonal", "block2", "own-diagonal", "own-block2"],
)
def test_only_the_standard_algebras_go_to_the_native_gpu_scans(structure, native):
    """On float32 CUDA tensors (fake ones here) the scans hand the standard algebras to the native kernels, which
    compute them; a subclass with an algebra of its own keeps the PyTorch scan, which runs its maths."""
    block = isinstance(structure, Block)
    with FakeTensorMode():
        J = torch.empty(2, 5, 3, *((2, 2) if block else ()), device="cuda")
        b = torch.empty(2, 5, 3, *((2,) if block else ()), device="cuda")
    assert scan_module._native_kind(J, b, structure) == native
    assert scan_module._native_kind(J.to("cpu"), b.to("cpu"), structure) is None


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("T", [1, 2, 17, 64])
def test_block_scan_in_channels_last_layout_equals_the_block_layout(k, T):
    # Block scans with channels last ((..., k, k, D)); a subclass with its own algebra, in its own layout.
    fast, plain = Block(k), OwnAlgebraBlock(k)
    assert plain.scan_layout(torch.zeros(1, 1, 5, k, k), torch.zeros(1, 1, 5, k))[2] is plain
    J, b, x0 = random_system(fast, (5, k), 3, T, seed=k)
    J, b, x0 = (t.requires_grad_() for t in (J, b, x0))

    def solves(structure):
        return linear_scan(J, b, structure, x0), linear_scan(J, b, structure), reverse_linear_scan(J, b, structure)

    outs_fast, outs_plain = solves(fast), solves(plain)
    weights = [torch.randn_like(out) for out in outs_fast]
    grads = []
    for outs in (outs_fast, outs_plain):
        assert all(out.is_contiguous() for out in outs)
        loss = sum((w * out).sum() for w, out in zip(weights, outs, strict=True))
        grads.append(torch.autograd.grad(loss, (J, b, x0)))
    for got, expected in zip((*outs_fast, *grads[0]), (*outs_plain, *grads[1]), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
