"""Where a benchmark script writes its results, and its refusal to replace a results file that is already there.

Every script under ``experiments/bench`` (and ``experiments/lm/tiny_results.py``) writes by default under
``runs/bench/`` of the current folder (``runs/`` is ignored by git), never into the committed results in
``experiments/*/results``. A run refuses, before it measures anything, when a file it would write exists, unless
``--overwrite`` is given: regenerating a committed file is ``--out experiments/bench/results/<file> --overwrite``.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence
from pathlib import Path

from pararnn_ts import outputs

#: the default folder of every benchmark's results, relative to the current folder (git-ignored)
DEFAULT_DIR = Path("runs") / "bench"


def add_overwrite(parser: argparse.ArgumentParser) -> None:
    """The ``--overwrite`` flag every results-writing script takes."""
    parser.add_argument(
        "--overwrite", action="store_true", help="replace results files that exist (without it the run refuses)"
    )


def refuse_existing(
    paths: Iterable[Path],
    overwrite: bool,
    option: str = "--out",
    parser: argparse.ArgumentParser | None = None,
) -> None:
    """:func:`pararnn_ts.outputs.refuse_existing`, as ``parser.error`` (exit status 2) when given a ``parser``."""
    try:
        outputs.refuse_existing(paths, overwrite, option)
    except FileExistsError as error:
        if parser is None:
            raise
        parser.error(str(error))


def results_path(
    out: Path | str | None,
    default_name: str,
    overwrite: bool,
    also: Sequence[str] = (),
    parser: argparse.ArgumentParser | None = None,
) -> Path:
    """The results file: ``out``, or ``runs/bench/<default_name>`` without one, after :func:`refuse_existing` of it
    and of the files written beside it, ``also`` (suffixes replacing its own, e.g. ``(".md",)``)."""
    path = Path(out) if out is not None else DEFAULT_DIR / default_name
    refuse_existing([path, *(path.with_suffix(suffix) for suffix in also)], overwrite, parser=parser)
    return path
