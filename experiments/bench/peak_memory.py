"""Peak memory of one benchmark case, measured the same way by every script here.

On CUDA: the growth of ``torch.cuda.max_memory_allocated`` over what was allocated when the case
started. On CPU: the growth of the process's peak RSS over its RSS when the case started, the peak reset
there (Linux's ``/proc/self/clear_refs``), so that what the case's setup freed before it started (its inputs'
temporaries) does not count; where the reset is refused, the process's peak since it began (the scripts run
each CPU case in a fresh process, so it is the case's own and its setup's).

    base = peak_memory.start(device)
    ...                                # the calls to measure
    mib = peak_memory.peak_mib(device, base)

A case that fails (out of memory, or a backend refusing a size) becomes a result row through
:func:`failed_row`, so the other cases still run.
"""

from __future__ import annotations

import resource

import torch


def rss_mib() -> float:
    """The process's current resident set size in MiB (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def peak_rss_mib() -> float | None:
    """The process's peak RSS in MiB since it began or the last :func:`reset_peak_rss` (Linux's ``VmHWM``)."""
    with open("/proc/self/status") as f:
        peak = next((line.split()[1] for line in f if line.startswith("VmHWM:")), None)
    return None if peak is None else int(peak) / 1024


def reset_peak_rss() -> bool:
    """Set the process's peak RSS to its current RSS; whether Linux allowed it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def start(device: torch.device) -> float:
    """Reset the peak counter (CUDA's, the process's RSS peak on CPU); the baseline :func:`peak_mib` subtracts
    (bytes on CUDA, MiB of RSS on CPU)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    reset_peak_rss()
    return rss_mib()


def peak_mib(device: torch.device, base: float) -> float:
    """Peak memory in MiB since :func:`start` returned ``base``."""
    if device.type == "cuda":
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    # Linux updates the peak lazily, so it can lag the current RSS; the peak since start is at least both, and base
    recorded = peak_rss_mib()
    if recorded is None:
        recorded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return max(recorded, rss_mib(), base) - base


def failed_row(row: dict, error: BaseException) -> dict:
    """``row`` with an ``error`` column: the first line of ``error``, marked when memory ran out."""
    message = str(error).splitlines()[0][:120] if str(error) else type(error).__name__
    if isinstance(error, (torch.cuda.OutOfMemoryError, MemoryError)):
        message = f"out of memory: {message}"
    return {**row, "error": message}
