"""Where the native kernel sources live (``kernels/`` in a checkout, ``pararnn_ts/_kernels`` in a wheel), and the
tags that name their builds in torch's extension cache."""

from __future__ import annotations

import functools
import hashlib
import os
import sys
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]


def kernel_source_dir(kind: str) -> Path:
    """The folder holding the ``kind`` (``"cpu"`` or ``"cuda"``) sources.

    Raises:
        FileNotFoundError: neither a checkout's ``kernels/<kind>`` nor a wheel's
            ``pararnn_ts/_kernels/<kind>`` exists (a broken install).
    """
    # the wheel's own copy first: next to an installed package, "kernels" may be another distribution's
    # top-level package (PyPI has one of that name)
    for root in (_PACKAGE / "_kernels", _PACKAGE.parent / "kernels"):
        if (root / kind).is_dir():
            return root / kind
    raise FileNotFoundError(
        f"pararnn_ts: no kernel sources for {kind!r} next to {_PACKAGE}; reinstall pararnn-ts "
        "(the wheel carries them in pararnn_ts/_kernels)"
    )


def checkout_tag(folder: Path) -> str:
    """8 hex digits naming ``folder``'s install: checkouts built side by side then get their own build folders.

    ``torch.utils.cpp_extension.load`` builds in a cache folder named after the extension; a name shared by two
    checkouts makes each one's first use rebuild over the other's.
    """
    return hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:8]


#: the files of a kernel folder that a build reads (sources and headers)
SOURCE_SUFFIXES = (".cpp", ".h", ".cu", ".cuh")


@functools.cache
def sources_digest(folder: Path) -> bytes:
    """SHA-1 of the names and contents of every source and header (:data:`SOURCE_SUFFIXES`) under ``folder``;
    read once per process and folder."""
    digest = hashlib.sha1()
    for path in sorted(p for p in Path(folder).rglob("*") if p.suffix in SOURCE_SUFFIXES and p.is_file()):
        digest.update(f"{path.relative_to(folder).as_posix()}\0{path.stat().st_size}\0".encode())
        digest.update(path.read_bytes())
    return digest.digest()


def build_tag(folder: Path, *options: object) -> str:
    """12 hex digits naming one build of ``folder``'s sources: their contents (:func:`sources_digest`), ``options``
    (compiler flags, the target CPU or GPU, ...), the compiler (``CXX``), Python's ABI and torch's build.

    torch's cache reuses a build folder of the same name, and ninja rebuilds in it only when a source is newer than
    its object file: an upgrade that installs older-dated sources (``cp -p``, hardlinked wheels), other flags or
    another torch would otherwise run the old binary. Each of those gets its own name, hence its own build.
    """
    import torch

    digest = hashlib.sha1(sources_digest(Path(folder).resolve()))
    parts = (
        sys.implementation.cache_tag,
        getattr(sys, "abiflags", ""),
        torch.__version__,
        torch.version.git_version,
        torch.version.cuda,
        torch.version.hip,
        os.environ.get("CXX", "c++"),
        *options,
    )
    for part in parts:
        digest.update(f"{part!r}\0".encode())
    return digest.hexdigest()[:12]
