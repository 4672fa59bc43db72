"""Building the native kernels with :func:`torch.utils.cpp_extension.load`, as a user running them expects.

Three things torch leaves to the caller: ninja installed into this Python's environment but not on ``PATH``
(a venv used without activating it) is found; a build lock left by a killed build (``kill -9``, the OOM killer,
a restarted notebook kernel) is removed once it is older than any build, instead of waiting on it forever; and a
first build, which takes tens of seconds, says so on stderr.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
import time
from pathlib import Path
from types import ModuleType
from typing import Any

#: a build lock older than this was left by a build that died (a build takes about a minute, CUDA a few)
STALE_LOCK_S = 15 * 60


def put_ninja_on_path() -> None:
    """Append the folder of this environment's ``ninja`` to ``PATH`` when ``ninja`` is not on it."""
    if shutil.which("ninja") is not None:
        return
    folders = [sysconfig.get_path("scripts"), str(Path(sys.executable).parent)]
    try:
        import ninja  # the PyPI package ships the binary in its own folder

        folders.insert(0, ninja.BIN_DIR)
    except (ImportError, AttributeError):
        pass
    found = next((folder for folder in folders if shutil.which("ninja", path=folder)), None)
    if found is not None:
        os.environ["PATH"] = os.pathsep.join(filter(None, (os.environ.get("PATH"), found)))


def clear_stale_lock(folder: Path, now: float | None = None) -> Path | None:
    """Remove ``folder/lock`` when it is older than :data:`STALE_LOCK_S`; returns the removed lock's path."""
    lock = folder / "lock"
    try:
        age = (time.time() if now is None else now) - lock.stat().st_mtime
    except OSError:  # no lock
        return None
    if age < STALE_LOCK_S:
        return None
    lock.unlink(missing_ok=True)
    return lock


def load_extension(name: str, what: str, **options: Any) -> ModuleType:
    """``cpp_extension.load(name=name, verbose=False, **options)`` after :func:`put_ninja_on_path` and
    :func:`clear_stale_lock`, printing one line to stderr (``what`` is built, where, once) when no build of
    ``name`` is there yet, and one when it waits on another process's build."""
    from torch.utils import cpp_extension

    put_ninja_on_path()
    folder = Path(cpp_extension._get_build_directory(name, verbose=False))
    removed = clear_stale_lock(folder)
    if removed is not None:
        print(f"pararnn_ts: removed {removed}, left by a build of {what} that did not finish", file=sys.stderr)
    if (folder / "lock").exists():
        print(
            f"pararnn_ts: waiting for another process building {what}; if none is (a build killed midway leaves "
            f"its lock), stop this one and delete {folder / 'lock'}",
            file=sys.stderr,
            flush=True,
        )
    elif not any(folder.glob(f"{name}*.so")) and not any(folder.glob(f"{name}*.pyd")):
        print(f"pararnn_ts: building {what} in {folder} (once per machine and install)", file=sys.stderr, flush=True)
    return cpp_extension.load(name=name, verbose=False, **options)
