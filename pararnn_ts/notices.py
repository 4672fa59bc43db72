"""Warnings attributed to the user's code: the line that called into ``pararnn_ts`` (or into torch, which calls
our modules from ``nn.Module.__call__``), however deep in the package the warning is raised.

A leaf module (it imports nothing of ``pararnn_ts``), for the solver and kernel layers.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch

#: folders whose frames are not the user's: this package and torch
LIBRARY_FOLDERS = (str(Path(__file__).resolve().parent), str(Path(torch.__file__).resolve().parent))


def user_stacklevel() -> int:
    """The ``stacklevel`` of :func:`warnings.warn`, called by the caller of this function, that names the first
    frame outside :data:`LIBRARY_FOLDERS`: the first one of a file, where code that a tracer generated (torch.export,
    torch.fx: ``<string>``, ``<eval_with_key>``) sits between it and the package."""
    frame, level = sys._getframe(1), 1  # the caller's frame is warnings.warn's stacklevel 1
    first = None
    while frame is not None:
        name = frame.f_code.co_filename
        if not str(Path(name).resolve()).startswith(LIBRARY_FOLDERS):
            if not name.startswith(("<string>", "<eval_with_key")):
                return level
            first = level if first is None else first
        frame, level = frame.f_back, level + 1
    return first if first is not None else level


def warn(message: str, category: type[Warning] = RuntimeWarning) -> None:
    """:func:`warnings.warn` of ``message``, attributed to the first frame outside :data:`LIBRARY_FOLDERS`."""
    warnings.warn(message, category, stacklevel=user_stacklevel())
