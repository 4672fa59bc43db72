"""CPU backend: fused *sequential* ParaGRU / ParaLSTM kernels in C++ (``kernels/cpu``).

Built on first use with :func:`torch.utils.cpp_extension.load` as ``pararnn_ts_cpu_<build tag>_<checkout tag>``
and cached by torch (in ``$TORCH_EXTENSIONS_DIR`` when set); the build tag keeps one build per CPU type (code
built with ``-march=native`` may crash on another CPU sharing the cache) and per content of the sources, compiler
flags, Python and torch (:func:`~pararnn_ts.ops.sources.build_tag`), and the checkout tag one per install
(:func:`~pararnn_ts.ops.sources.checkout_tag`). The kernels are exact
(no Newton), so ``stats`` is ``None``. Shapes and layouts: ``kernels/README.md``; tensors are float32
or float64, contiguous.
"""

from __future__ import annotations

import functools
import platform
import re
import sys
import threading
from types import ModuleType

import torch
from torch import Tensor

from ..notices import warn
from .build import load_extension
from .sources import build_tag, checkout_tag, kernel_source_dir

NAME = "cpu"

_lock = threading.Lock()
_extension: ModuleType | None = None
_failure: str | None = None


def compiler_flags() -> list[str]:
    """Optimise for this machine; keep IEEE semantics (no -ffast-math: the exp range reduction needs it)."""
    if sys.platform == "win32":
        return ["/O2", "/openmp"]
    flags = ["-O3", "-fopenmp", "-fno-math-errno", "-fno-trapping-math"]
    if platform.machine().lower() in ("x86_64", "amd64"):
        flags.append("-march=native")
    return flags


def linker_flags() -> list[str]:
    return [] if sys.platform == "win32" else ["-fopenmp"]


def cpu_description() -> str:
    """This CPU's model and instruction-set flags (what ``-march=native`` compiles for)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            lines = {line for line in cpuinfo if line.startswith(("model name", "flags", "Features", "CPU part"))}
    except OSError:
        lines = set()
    return "".join(sorted(lines)) or f"{platform.machine()} {platform.processor()}"


@functools.cache
def extension_name() -> str:
    """``pararnn_ts_cpu_<build>_<checkout>``: hashes of this CPU, the sources' contents, the flags, Python and
    torch (:func:`~pararnn_ts.ops.sources.build_tag`), and of the sources' folder; computed once per process."""
    source_dir = kernel_source_dir("cpu")
    build = build_tag(source_dir, cpu_description(), compiler_flags(), linker_flags())
    return f"pararnn_ts_cpu_{build}_{checkout_tag(source_dir)}"


def _build() -> ModuleType:
    source_dir = kernel_source_dir("cpu")
    return load_extension(
        extension_name(),
        "the fused CPU kernels (about 30 s)",
        sources=[str(path) for path in sorted(source_dir.glob("*.cpp"))],
        extra_include_paths=[str(source_dir)],
        extra_cflags=compiler_flags(),
        extra_ldflags=linker_flags(),
    )


def _summary(error: Exception) -> str:
    """One line: the error's headline and the first line of the compiler output naming the cause."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    head = lines[0].split(": [", 1)[0] if lines else type(error).__name__
    causes = (line for line in lines[1:] if re.search(r"error|not found|no such file", line, re.IGNORECASE))
    cause = next((line for line in causes if not line.startswith(("[", "FAILED"))), None)
    return f"{head}: {cause}"[:300] if cause else head[:300]


def _load() -> ModuleType | None:
    """The built extension, or ``None`` after a failed build (warned about once; the reason is kept)."""
    global _extension, _failure
    if _extension is not None or _failure is not None:
        return _extension
    with _lock:
        if _extension is None and _failure is None:
            try:
                _extension = _build()
            except Exception as error:  # any build failure means "use the PyTorch path"
                _failure = f"building the C++ extension {extension_name()} failed ({_summary(error)})"
                warn(
                    f"pararnn_ts: {_failure}. The fused CPU kernels are unavailable and the PyTorch solvers are "
                    "used instead (slower on CPU). To fix: install a C++ compiler with OpenMP support (e.g. "
                    "`apt install g++` or `conda install gxx`), or point the CXX environment variable at one, "
                    "and make sure ninja is installed and the folder TORCH_EXTENSIONS_DIR (default "
                    "~/.cache/torch_extensions) is writable; then restart Python.",
                )
    return _extension


def unavailable_reason(device: torch.device) -> str | None:
    """``None`` when the fused CPU kernels run on ``device`` (building them if needed), else why not."""
    if torch.device(device).type != "cpu":
        return f"the cpu backend runs on CPU tensors only, not on {torch.device(device).type}"
    _load()
    return _failure


def _kernels() -> ModuleType:
    extension = _load()
    if extension is None:
        raise RuntimeError(f"pararnn_ts cpu backend unavailable: {_failure}")
    return extension


#: the kernels' schemas as torch operators ``torch.ops.pararnn_ts.cpu_<name>`` (:func:`_run`)
SCHEMAS = {
    "gru_forward": "(Tensor u, Tensor A, Tensor h0) -> Tensor",
    "gru_backward": "(Tensor grad_h, Tensor u, Tensor A, Tensor h0, Tensor h) -> (Tensor, Tensor, Tensor)",
    "lstm_forward": "(Tensor u, Tensor A, Tensor C, Tensor h0) -> Tensor",
    "lstm_backward": (
        "(Tensor grad_h, Tensor u, Tensor A, Tensor C, Tensor h0, Tensor h) -> (Tensor, Tensor, Tensor, Tensor)"
    ),
}


def _shapes(name: str, *args: Tensor) -> Tensor | tuple[Tensor, ...]:
    """Kernel ``name``'s outputs as empty tensors: what torch.compile traces it with. Forwards give the trajectory
    ``(B, T, *S)`` of ``u`` ``(B, T, 3, D)`` from ``h0`` ``(B, *S)``; backwards the gradients of their inputs between
    ``grad_h`` and ``h``."""
    if name.endswith("_forward"):
        u, h0 = args[0], args[-1]
        return h0.new_empty(*u.shape[:2], *h0.shape[1:])
    return tuple(torch.empty_like(t) for t in args[1:-1])


def _register_operators() -> torch.library.Library:
    library = torch.library.Library("pararnn_ts", "FRAGMENT")
    for name, schema in SCHEMAS.items():
        library.define(f"cpu_{name}{schema}")
        library.impl(f"cpu_{name}", functools.partial(_call, name), "CPU")
        torch.library.register_fake(f"pararnn_ts::cpu_{name}", functools.partial(_shapes, name), lib=library)
    return library


def _call(name: str, *args: Tensor) -> Tensor | tuple[Tensor, ...]:
    return getattr(_kernels(), name)(*args)


_library = _register_operators()


def _run(name: str, *args: Tensor) -> Tensor | tuple[Tensor, ...]:
    """Kernel ``name`` on ``args``: through its torch operator where torch.compile traces it (a pybind call would
    break its graph), else directly (the operator's dispatch costs about 12 µs a call)."""
    if torch.compiler.is_compiling():
        return getattr(torch.ops.pararnn_ts, f"cpu_{name}")(*args)
    return _call(name, *args)


def gru_forward(u: Tensor, A: Tensor, h0: Tensor, tol: float, max_iters: int) -> tuple[Tensor, None]:
    """ParaGRU ``h`` ``(B, T, D)`` from ``u`` ``(B, T, 3, D)``, ``A`` ``(3, D)``, ``h0`` ``(B, D)``; exact."""
    return _run("gru_forward", u, A, h0), None


def gru_backward(grad_h: Tensor, u: Tensor, A: Tensor, h0: Tensor, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(grad_u (B, T, 3, D), grad_A (3, D), grad_h0 (B, D))`` from ``grad_h`` ``(B, T, D)``."""
    return tuple(_run("gru_backward", grad_h, u, A, h0, h))


def lstm_forward(u: Tensor, A: Tensor, C: Tensor, h0: Tensor, tol: float, max_iters: int) -> tuple[Tensor, None]:
    """ParaLSTM state ``(B, T, D, 2)`` (``[c, h]``) from ``u`` ``(B, T, 3, D)``, ``A`` ``(3, D)``,
    ``C`` ``(2, D)``, ``h0`` ``(B, D, 2)``; exact."""
    return _run("lstm_forward", u, A, C, h0), None


def lstm_backward(
    grad_h: Tensor, u: Tensor, A: Tensor, C: Tensor, h0: Tensor, h: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(grad_u (B, T, 3, D), grad_A (3, D), grad_C (2, D), grad_h0 (B, D, 2))`` from ``grad_h`` ``(B, T, D, 2)``."""
    return tuple(_run("lstm_backward", grad_h, u, A, C, h0, h))
