"""Where runs write their files, the refusal to replace files a user already has, what machine ran them, and
reading back the checkpoints they wrote.

A leaf module (it imports nothing of ``pararnn_ts``) shared by the Lightning modules, the world verbs and the
benchmark scripts under ``experiments/``.
"""

from __future__ import annotations

import os
import pickle
import platform
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch


def refuse_existing(
    paths: Mapping[Path | str, str] | Iterable[Path | str], overwrite: bool, option: str = "--out"
) -> None:
    """Raise :class:`FileExistsError` naming every one of ``paths`` that exists, unless ``overwrite``.

    ``paths`` is the files a run would write, or a mapping from each file to the option that chose it
    (``"--out"``, ``"--save-model"``, ...; ``option`` for all of them otherwise). The message names the files,
    ``--overwrite`` and those options.
    """
    if overwrite:
        return
    options = dict(paths) if isinstance(paths, Mapping) else dict.fromkeys(paths, option)
    existing = {str(path): flag for path, flag in options.items() if Path(path).exists()}
    if existing:
        one = len(existing) == 1
        flags = " or ".join(dict.fromkeys(existing.values()))
        raise FileExistsError(
            f"{', '.join(existing)} already exist{'s' if one else ''}: "
            f"pass --overwrite to replace {'it' if one else 'them'}, or {flags} elsewhere"
        )


def read_checkpoint_file(path: str | Path, option: str, written_by: str) -> dict[str, Any]:
    """The dict that ``torch.save`` wrote at ``path`` (a Lightning checkpoint), on CPU and memory-mapped, read
    without unpickling code. A missing file, or one that is not such a dict, is refused naming the ``option`` that
    gave it and what writes one (``written_by``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{option} {path} does not exist; give a .ckpt file ({written_by})")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        raise ValueError(f"{option} {path} is not a PyTorch checkpoint ({written_by})") from error
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{option} {path} holds a {type(checkpoint).__name__}, not a checkpoint ({written_by})")
    return checkpoint


def writes_results(trainer: Any) -> bool:
    """Whether this process of a Lightning ``trainer`` writes a run's result files: the global-zero process,
    unless the run is a ``fast_dev_run`` smoke test, which writes nothing (Lightning's rule for its logs and
    checkpoints; :func:`run_folder` would be the current folder then)."""
    return bool(trainer.is_global_zero) and not trainer.fast_dev_run


def run_folder(trainer: Any) -> Path:
    """A Lightning ``trainer``'s log folder (its root folder when it has no logger), created if needed. Under DDP
    ``trainer.log_dir`` is a broadcast from the global-zero process: every process must ask for it at once."""
    folder = Path(trainer.log_dir or trainer.default_root_dir)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def results_folder(trainer: Any) -> Path | None:
    """Where this process of ``trainer`` writes a run's result files: the :func:`run_folder` on the process that
    :func:`writes_results`, ``None`` on the others. Call it on every process (see :func:`run_folder`)."""
    folder = run_folder(trainer)
    return folder if writes_results(trainer) else None


def gathered(trainer: Any, items: list[Any]) -> list[Any]:
    """The ``items`` of every process of ``trainer``, those of global rank 0 first, then rank 1's, ... (``items``
    in a single process). Under DDP a collective: every process must call it."""
    world_size = getattr(trainer, "world_size", 1)
    if world_size == 1 or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return items
    everyone: list[list[Any]] = [[] for _ in range(world_size)]
    torch.distributed.all_gather_object(everyone, items)
    return [item for part in everyone for item in part]


def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo``'s model name), or what :mod:`platform` knows where there is none."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            name = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), None)
    except OSError:
        name = None
    return name or platform.processor() or platform.machine()


#: environment variables that change how memory is allocated, so how fast kernels that allocate their outputs run
ALLOCATOR_VARIABLES = ("GLIBC_TUNABLES", "LD_PRELOAD", "PYTORCH_CUDA_ALLOC_CONF")


def allocator_settings() -> dict[str, str]:
    """The allocator settings in the environment: glibc's ``MALLOC_*`` and ``GLIBC_TUNABLES``, ``LD_PRELOAD`` (jemalloc,
    tcmalloc) and ``PYTORCH_CUDA_ALLOC_CONF``. On Linux glibc hands large freed buffers back to the system, and
    faulting them in again on the next call can cost as much as a fused CPU kernel (README, kernel benchmark)."""
    return {
        name: value
        for name, value in sorted(os.environ.items())
        if name.startswith("MALLOC_") or name in ALLOCATOR_VARIABLES
    }


def machine(device: torch.device | str | None = None) -> dict[str, Any]:
    """What ran a result: the CPU model, torch threads, the GPU (``device``'s, none for another device; ``None``:
    the current CUDA device, if any), torch, Python and the allocator settings (:func:`allocator_settings`)."""
    if device is None:
        gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    else:
        device = torch.device(device)
        gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {
        "cpu": cpu_name(),
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "allocator": allocator_settings(),
    }
