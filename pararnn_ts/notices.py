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
    frame outside :data:`LIBRARY_FOLDERS`."""
    frame, level = sys._getframe(1), 1  # the caller's frame is warnings.warn's stacklevel 1
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(LIBRARY_FOLDERS):
        frame, level = frame.f_back, level + 1
    return level


def warn(message: str, category: type[Warning] = RuntimeWarning) -> None:
    """:func:`warnings.warn` of ``message``, attributed to the first frame outside :data:`LIBRARY_FOLDERS`."""
    warnings.warn(message, category, stacklevel=user_stacklevel())
