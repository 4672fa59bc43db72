"""Building the native kernels with :func:`torch.utils.cpp_extension.load`, as a user running them expects.

Four things torch leaves to the caller: ninja installed into this Python's environment but not on ``PATH``
(a venv used without activating it) is found; a build lock left by a killed build (``kill -9``, the OOM killer,
a restarted notebook kernel) is removed once it is older than any build, instead of waiting on it forever; a
first build, which takes tens of seconds, says so on stderr; and a finished build in a cache that this process
cannot write to (a read-only ``TORCH_EXTENSIONS_DIR``, another user's cache) is loaded as it is, where torch
fails on creating its build lock. Extension names change with everything that changes the binary
(:func:`~pararnn_ts.ops.sources.build_tag`), so a finished build of a name is the right one.
"""

from __future__ import annotations

import errno
import importlib.util
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
#: what a failure to write to the cache says: read-only file system, permission denied, operation not permitted
NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


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


def built_library(folder: Path, name: str) -> Path:
    """The file a finished build of ``name`` in ``folder`` leaves (``name.so``, ``name.pyd`` on Windows)."""
    return folder / f"{name}{'.pyd' if sys.platform == 'win32' else '.so'}"


def import_built(name: str, library: Path) -> ModuleType:
    """Import the extension module ``name`` from its built ``library``, as torch does after a build."""
    spec = importlib.util.spec_from_file_location(name, library)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the extension {name} from {library}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_extension(name: str, what: str, **options: Any) -> ModuleType:
    """``cpp_extension.load(name=name, verbose=False, **options)`` after :func:`put_ninja_on_path` and
    :func:`clear_stale_lock`, printing one line to stderr (``what`` is built, where, once) when no build of
    ``name`` is there yet, and one when it waits on another process's build. Where the cache cannot be written
    (torch fails on its build lock) and holds a finished build of ``name``, that build is loaded, silently."""
    from torch.utils import cpp_extension

    put_ninja_on_path()
    folder = Path(cpp_extension._get_build_directory(name, verbose=False))
    library = built_library(folder, name)
    try:
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
        elif not library.exists():
            print(
                f"pararnn_ts: building {what} in {folder} (once per machine and install)", file=sys.stderr, flush=True
            )
        return cpp_extension.load(name=name, verbose=False, **options)
    except OSError as error:
        if error.errno not in NOT_WRITABLE or not library.is_file():
            raise
        try:
            return import_built(name, library)
        except Exception as failure:  # a truncated or foreign file: report the cache's error
            raise error from failure
