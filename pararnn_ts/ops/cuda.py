"""CUDA C++ backend (``kernels/cuda``): fused Newton forward and adjoint backward of ParaGRU / ParaLSTM,
and standalone diagonal and 2×2-block linear scans.

The extension is built with ``torch.utils.cpp_extension`` on first use, for the device's compute
capability only, and cached by torch (``TORCH_EXTENSIONS_DIR``, else its default folder) under a name that
changes with the sources' contents, the flags, the toolkit, Python and torch (:func:`extension_name`).

Tunables (keyword arguments of every op): ``warps`` (1..8) time runs per chunk, i.e. warps per thread
block, and ``steps`` (4, 8 or 16) consecutive time steps per thread; a block solves chunks of
``warps * steps`` steps for one batch element and 32 channels. The defaults were the fastest of a small
sweep on an H100 (batch 16, 1024 channels): GRU 4 × 8, LSTM 8 × 4. Inputs ``u`` / ``J`` / ``b`` may be
float32, float16 or bfloat16; everything else is float32 and every output is float32.
"""

from __future__ import annotations

import functools
import os
from types import ModuleType

import torch
from torch import Tensor

from ..notices import warn
from .build import load_extension, put_ninja_on_path
from .sources import build_tag, checkout_tag, kernel_source_dir

NAME = "cuda"


def unavailable_reason(device: torch.device) -> str | None:
    """``None`` when the kernels can run on ``device`` (building them on first call), else why not."""
    try:
        return _reason(torch.device(device))
    except Exception as error:  # never raise: report instead
        return f"cuda backend check failed: {type(error).__name__}: {error}"


@functools.cache
def _reason(device: torch.device) -> str | None:
    """:func:`unavailable_reason`, once per device: it probes the toolkit (a ``ninja`` subprocess)."""
    if device.type != "cuda":
        return f"the cuda backend runs on CUDA devices only, not {device.type}"
    if torch.version.cuda is None:
        return "this torch is a CPU-only build: install a CUDA build of torch"
    if not torch.cuda.is_available():
        return "torch sees no CUDA device"
    from torch.utils import cpp_extension

    home = cpp_extension.CUDA_HOME
    if home is None or not os.path.exists(os.path.join(home, "bin", "nvcc")):
        return (
            f"nvcc not found: install the CUDA toolkit matching torch.version.cuda ({torch.version.cuda}) "
            "and put nvcc on PATH or set CUDA_HOME"
        )
    put_ninja_on_path()
    if not cpp_extension.is_ninja_available():
        return "ninja not found: pip install ninja (torch builds C++ extensions with it)"
    built = _load(_capability(device))
    return built if isinstance(built, str) else None


def _capability(device: torch.device) -> tuple[int, int]:
    index = device.index if device.index is not None else torch.cuda.current_device()
    return torch.cuda.get_device_capability(index)


def _flags(arch: str) -> tuple[list[str], list[str]]:
    """The C++ and the nvcc flags of a build for ``sm_<arch>``."""
    return ["-O3"], ["-O3", f"-gencode=arch=compute_{arch},code=sm_{arch}", "-lineinfo"]


@functools.cache
def extension_name(arch: str) -> str:
    """``pararnn_ts_cuda_sm<arch>_<build>_<checkout>``: the build tag hashes the sources' contents, the flags, the
    CUDA toolkit, Python and torch (:func:`~pararnn_ts.ops.sources.build_tag`), so none of them changing can leave
    an old build in use; the checkout tag keeps one build per install."""
    from torch.utils import cpp_extension

    folder = kernel_source_dir("cuda")
    build = build_tag(folder, arch, *_flags(arch), cpp_extension.CUDA_HOME, os.environ.get("TORCH_CUDA_ARCH_LIST"))
    return f"pararnn_ts_cuda_sm{arch}_{build}_{checkout_tag(folder)}"


@functools.cache
def _load(capability: tuple[int, int]) -> ModuleType | str:
    """The built extension for one compute capability, or why the build failed (warned once)."""
    arch = f"{capability[0]}{capability[1]}"
    folder = kernel_source_dir("cuda")
    sources = [str(folder / "bindings.cpp")] + sorted(str(path) for path in folder.glob("*.cu"))
    cflags, cuda_cflags = _flags(arch)
    try:
        return load_extension(
            extension_name(arch),
            f"the CUDA kernels for sm_{arch} (a few minutes)",
            sources=sources,
            extra_cflags=cflags,
            extra_cuda_cflags=cuda_cflags,
            extra_include_paths=[str(folder)],
        )
    except Exception as error:  # compiler or linker failure
        lines = str(error).strip().splitlines() or [type(error).__name__]
        reason = f"building the CUDA kernels for sm_{arch} failed: {lines[0]}"
        warn(f"pararnn_ts: {reason}\n{error}")
        return reason


def _extension(device: torch.device) -> ModuleType:
    """The extension for ``device``; raises ``RuntimeError`` with the reason when it cannot run there."""
    reason = unavailable_reason(device)
    if reason is not None:
        raise RuntimeError(f"pararnn_ts cuda backend unavailable: {reason}")
    return _load(_capability(device))


def gru_forward(
    u: Tensor, A: Tensor, h0: Tensor, tol: float, max_iters: int, *, warps: int = 4, steps: int = 8
) -> tuple[Tensor, Tensor]:
    """ParaGRU by chunked Newton: ``u`` (B, T, 3, D), ``A`` (3, D), ``h0`` (B, D) → ``h`` (B, T, D), ``stats`` (2,)
    = [worst normalised residual, most Newton updates] over all chunks and channel groups."""
    return tuple(_extension(u.device).gru_forward(u, A, h0, float(tol), int(max_iters), warps, steps))


def gru_backward(
    grad_h: Tensor, u: Tensor, A: Tensor, h0: Tensor, h: Tensor, *, warps: int = 4, steps: int = 8
) -> tuple[Tensor, Tensor, Tensor]:
    """Adjoint of :func:`gru_forward` at its solution ``h``:
    ``(grad_u (B, T, 3, D), grad_A (3, D), grad_h0 (B, D))``."""
    return tuple(_extension(u.device).gru_backward(grad_h, u, A, h0, h, warps, steps))


def lstm_forward(
    u: Tensor, A: Tensor, C: Tensor, h0: Tensor, tol: float, max_iters: int, *, warps: int = 8, steps: int = 4
) -> tuple[Tensor, Tensor]:
    """ParaLSTM by chunked Newton: ``u`` (B, T, 3, D), ``A`` (3, D), ``C`` (2, D), ``h0`` (B, D, 2) →
    ``h`` (B, T, D, 2) ([c, h] last), ``stats`` (2,)."""
    return tuple(_extension(u.device).lstm_forward(u, A, C, h0, float(tol), int(max_iters), warps, steps))


def lstm_backward(
    grad_h: Tensor, u: Tensor, A: Tensor, C: Tensor, h0: Tensor, h: Tensor, *, warps: int = 8, steps: int = 4
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Adjoint of :func:`lstm_forward`: ``(grad_u (B, T, 3, D), grad_A (3, D), grad_C (2, D), grad_h0 (B, D, 2))``."""
    return tuple(_extension(u.device).lstm_backward(grad_h, u, A, C, h0, h, warps, steps))


def diagonal_scan(
    J: Tensor, b: Tensor, x0: Tensor | None = None, reverse: bool = False, *, warps: int = 8, steps: int = 8
) -> Tensor:
    """``x_t = J_t x_{t-1} + b_t`` (``x_{-1} = x0``), or with ``reverse`` ``x_t = J_t x_{t+1} + b_t`` (``x_T = x0``);
    zero start when ``x0`` is ``None``. ``J``, ``b`` (B, T, D), ``x0`` (B, D) → ``x`` (B, T, D) float32."""
    x0 = None if x0 is None else x0.float().contiguous()
    return _extension(J.device).diagonal_scan(J.contiguous(), b.contiguous(), x0, bool(reverse), warps, steps)


def block2_scan(
    J: Tensor, b: Tensor, x0: Tensor | None = None, reverse: bool = False, *, warps: int = 8, steps: int = 8
) -> Tensor:
    """:func:`diagonal_scan` with per-channel 2×2 blocks: ``J`` (B, T, D, 2, 2) applied as
    ``(J x)_i = Σ_j J[..., i, j] x_j``, ``b`` (B, T, D, 2), ``x0`` (B, D, 2) → ``x`` (B, T, D, 2) float32."""
    x0 = None if x0 is None else x0.float().contiguous()
    return _extension(J.device).block2_scan(J.contiguous(), b.contiguous(), x0, bool(reverse), warps, steps)
