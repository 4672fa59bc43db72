"""The CUDA C++ kernels (``kernels/cuda``, ``pararnn_ts.ops.cuda``).

Everywhere nvcc exists, every ``.cu`` file must compile for sm_80 and sm_90 with warnings and register
spills as errors. On a CUDA device, every kernel is compared with its float64 PyTorch twin
(``sequential_solve`` of the cell, its autograd gradients, ``linear_scan``) at awkward sizes, with u in
float32 and bfloat16.
"""

from __future__ import annotations

import functools
import shutil
import subprocess

import pytest
import torch
from conftest import INPUT_SIZE, make_cell, rel_err

from pararnn_ts.core import Block, Diagonal, linear_scan
from pararnn_ts.core.autograd import sequential_solve
from pararnn_ts.core.newton import default_tol
from pararnn_ts.ops import cuda as cuda_ops
from pararnn_ts.ops.sources import kernel_source_dir

# torch's own nvcc flags (torch.utils.cpp_extension.COMMON_NVCC_FLAGS) plus strictness.
NVCC_FLAGS = [
    "-std=c++17",
    "-O3",
    "-gencode=arch=compute_80,code=sm_80",
    "-gencode=arch=compute_90,code=sm_90",
    "-D__CUDA_NO_HALF_OPERATORS__",
    "-D__CUDA_NO_HALF_CONVERSIONS__",
    "-D__CUDA_NO_BFLOAT16_CONVERSIONS__",
    "-D__CUDA_NO_HALF2_OPERATORS__",
    "--expt-relaxed-constexpr",
    "-Werror=all-warnings",
    "-Xcompiler=-Wall,-Wextra,-Werror",
    "-Xptxas=-warn-spills,-Werror",
]


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH")
def test_cuda_sources_compile(tmp_path):
    sources = sorted(kernel_source_dir("cuda").glob("*.cu"))
    assert sources, "no .cu files in kernels/cuda"
    jobs = [
        (
            src,
            subprocess.Popen(
                ["nvcc", "-c", *NVCC_FLAGS, str(src), "-o", str(tmp_path / f"{src.stem}.o")],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            ),
        )
        for src in sources
    ]
    failures = []
    for src, job in jobs:
        output, _ = job.communicate(timeout=300)
        if job.returncode != 0:
            failures.append(f"--- {src.name} (exit {job.returncode})\n{output}")
    assert not failures, "nvcc failed:\n" + "\n".join(failures)


def test_unavailable_reason_never_raises():
    assert cuda_ops.NAME == "cuda"
    assert "CUDA devices only" in cuda_ops.unavailable_reason(torch.device("cpu"))
    if torch.version.cuda is None:
        assert "install a CUDA build of torch" in cuda_ops.unavailable_reason(torch.device("cuda"))


# ---------------------------------------------------------------- GPU: against the float64 twins

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEVICE = torch.device("cuda")
SIZES = [(T, D, B) for T in (1, 17, 1000, 4097) for D in (45, 999) for B in (1, 3)]  # D divisible by 3 heads
KERNELS = ("gru", "lstm")
CELLS = {"gru": "paragru", "lstm": "paralstm"}
#: float32 kernels vs float64 twins (measured on an H100: at most 1.1e-5 for h, 3e-6 for gradients)
TOL = 1e-4


def _poison(*shapes: tuple[int, ...]) -> None:
    """Fill blocks of the caching allocator with NaN so that an output the kernel forgets to write shows."""
    for shape in shapes:
        torch.full(shape, float("nan"), device=DEVICE)  # freed at once, reused by the next allocation


@functools.cache
def _problem(kernel: str, T: int, D: int, B: int):
    """Inputs (u in bfloat16-representable float64 values) and the float64 reference outputs and gradients."""
    cell = make_cell(CELLS[kernel], torch.float64, hidden=D).to(DEVICE)
    weights = [cell.A] if kernel == "gru" else [cell.A, cell.C]
    g = torch.Generator(device="cpu").manual_seed(T * 7919 + D * 31 + B)
    with torch.no_grad():
        for w in weights:  # exactly representable in float32
            w.copy_(w.float().double())
        x = torch.randn(B, T, INPUT_SIZE, generator=g, dtype=torch.float64).to(DEVICE)
        u = cell.project(x).to(torch.bfloat16).double()
    state = (B, D) if kernel == "gru" else (B, D, 2)
    h0 = (0.5 * torch.randn(*state, generator=g)).float().double().to(DEVICE)
    grad_h = torch.randn(B, T, *state[1:], generator=g).float().double().to(DEVICE)
    u.requires_grad_(True)
    h0.requires_grad_(True)
    h = sequential_solve(cell, u, h0)
    grads = torch.autograd.grad((h * grad_h).sum(), [u, *weights, h0])
    inputs = [t.detach() for t in (u, *weights, h0, grad_h)]
    return inputs, h.detach(), [gr.detach() for gr in grads]


def _forward(kernel, u, weights, h0, tol, max_iters, **config):
    fn = cuda_ops.gru_forward if kernel == "gru" else cuda_ops.lstm_forward
    return fn(u, *weights, h0, tol, max_iters, **config)


def _backward(kernel, grad_h, u, weights, h0, h, **config):
    fn = cuda_ops.gru_backward if kernel == "gru" else cuda_ops.lstm_backward
    return fn(grad_h, u, *weights, h0, h, **config)


def _check(name: str, out: torch.Tensor, ref: torch.Tensor, tol: float) -> None:
    assert out.dtype == torch.float32 and out.shape == ref.shape, (name, out.dtype, out.shape, ref.shape)
    assert torch.isfinite(out).all(), f"{name}: non-finite elements (an output not written?)"
    err = rel_err(ref, out.double())
    assert err < tol, f"{name}: relative error {err:.3g} > {tol:.3g}"


def _run_and_check(kernel, T, D, B, u_dtype, **config):
    (u, *weights, h0, grad_h), h_ref, grads_ref = _problem(kernel, T, D, B)
    u_k = u.to(u_dtype)
    weights_k = [w.float() for w in weights]
    h0_k, grad_h_k = h0.float(), grad_h.float()
    tol = default_tol(torch.float32)
    _poison(h_ref.shape, (4096, 2))
    h, stats = _forward(kernel, u_k, weights_k, h0_k, tol, 200, **config)
    torch.cuda.synchronize()
    assert stats.shape == (2,) and stats.dtype == torch.float32 and stats.device.type == "cuda"
    residual, updates = stats.tolist()
    assert residual <= tol, f"Newton did not converge: residual {residual:.3g} after {updates:.0f} updates"
    assert updates == int(updates) and (T == 1 or updates >= 1)
    _check("h", h, h_ref, TOL)
    _check("final state", h[:, -1], h_ref[:, -1], TOL)

    _poison(u.shape, h0.shape, (B, 5, D))
    grads = _backward(kernel, grad_h_k, u_k, weights_k, h0_k, h, **config)
    torch.cuda.synchronize()
    names = ["grad_u", "grad_A", "grad_h0"] if kernel == "gru" else ["grad_u", "grad_A", "grad_C", "grad_h0"]
    assert len(grads) == len(names)
    for name, grad, ref in zip(names, grads, grads_ref, strict=True):
        _check(name, grad, ref, TOL)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("T,D,B", SIZES)
def test_fused_float32_matches_twin(kernel, T, D, B):
    _run_and_check(kernel, T, D, B, torch.float32)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("u_dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("T,D,B", [(17, 45, 3), (4097, 999, 3)])
def test_fused_low_precision_input_matches_twin(kernel, u_dtype, T, D, B):
    _run_and_check(kernel, T, D, B, u_dtype)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("warps,steps", [(1, 4), (3, 16), (8, 16), (5, 8), (2, 4)])
def test_fused_tunables(kernel, warps, steps):
    _run_and_check(kernel, 1000, 45, 3, torch.float32, warps=warps, steps=steps)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("kernel", KERNELS)
def test_non_convergence_is_reported(kernel):
    (u, *weights, h0, _), _, _ = _problem(kernel, 1000, 45, 3)
    u, weights, h0 = u.float(), [w.float() for w in weights], h0.float()
    tol = default_tol(torch.float32)
    _, stats = _forward(kernel, 8 * u, [4 * w for w in weights], h0, tol, 1)  # strongly nonlinear
    residual, updates = stats.tolist()
    assert residual > tol and updates == 1
    u[1, 500, 0, 7] = float("nan")
    h, stats = _forward(kernel, u, weights, h0, tol, 50)
    assert torch.isnan(stats[0]), "a NaN residual must propagate to the stats"
    assert torch.isnan(h[1, 500:]).any() and torch.isfinite(h[0]).all()


@pytest.mark.gpu
@gpu
def test_bad_inputs_raise_clear_errors():
    (u, A, h0, _), _, _ = _problem("gru", 17, 45, 1)
    with pytest.raises(RuntimeError, match="A must be Float"):
        cuda_ops.gru_forward(u.float(), A, h0.float(), 1e-5, 10)
    with pytest.raises(RuntimeError, match="h0 has shape"):
        cuda_ops.gru_forward(u.float(), A.float(), h0.float()[:, :7].contiguous(), 1e-5, 10)
    with pytest.raises(RuntimeError, match="steps must be"):
        cuda_ops.gru_forward(u.float(), A.float(), h0.float(), 1e-5, 10, steps=5)


# ---------------------------------------------------------------- GPU: standalone scans


def _scan_problem(block: bool, T: int, D: int, B: int, dtype: torch.dtype):
    g = torch.Generator().manual_seed(T + D + B)
    jac = (B, T, D, 2, 2) if block else (B, T, D)
    state = (B, T, D, 2) if block else (B, T, D)
    J = (0.45 * (2 * torch.rand(*jac, generator=g) - 1)).to(dtype).double().to(DEVICE)  # ‖J‖∞ ≤ 0.9
    b = torch.randn(*state, generator=g).to(dtype).double().to(DEVICE)
    x0 = torch.randn(B, *state[2:], generator=g).float().double().to(DEVICE)
    return J, b, x0


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("block", [False, True], ids=["diagonal", "block2"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("T,D,B", [(1, 45, 3), (17, 1000, 1), (1000, 45, 3), (4097, 77, 3)])
def test_scan_matches_linear_scan(block, reverse, dtype, T, D, B):
    J, b, x0 = _scan_problem(block, T, D, B, dtype)
    structure = Block(2) if block else Diagonal()
    scan = cuda_ops.block2_scan if block else cuda_ops.diagonal_scan
    for start in (x0, None):
        flip = (lambda t: t.flip(1)) if reverse else (lambda t: t)
        ref = flip(linear_scan(flip(J), flip(b), structure, start))
        _poison(ref.shape)
        out = scan(J.to(dtype), b.to(dtype), None if start is None else start.float(), reverse)
        torch.cuda.synchronize()
        _check(f"scan (x0 {'given' if start is not None else 'zero'})", out, ref, 1e-5)
