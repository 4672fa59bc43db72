"""Where the native kernel sources live: ``kernels/`` in a checkout, ``pararnn_ts/_kernels`` in a wheel."""

from __future__ import annotations

import hashlib
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
