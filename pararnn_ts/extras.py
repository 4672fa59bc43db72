"""Optional dependencies: a subpackage whose extra is not installed says which one to install."""

from __future__ import annotations

import importlib


def missing_extra(what: str, extra: str) -> ImportError:
    """The error that ``what`` (a subpackage, a command) needs the ``extra`` that is not installed, with its fix."""
    return ImportError(f"{what} needs the {extra} extra: pip install 'pararnn-ts[{extra}]'")


def require_extra(package: str, extra: str, modules: tuple[str, ...]) -> None:
    """Import each of ``modules`` (top-level names the ``extra`` installs); one that is not installed raises an
    :class:`ImportError` naming ``package``'s extra and the ``pip install`` that fixes it, the missing module as its
    cause. A module that is installed but fails on a missing dependency of its own keeps that error."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as missing:
            if missing.name != module:
                raise
            raise missing_extra(package, extra) from missing
