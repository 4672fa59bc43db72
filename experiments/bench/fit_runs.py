"""``pararnn-ts fit`` runs in subprocesses, for the results scripts that train configs and tabulate their runs.

A run logs to ``root/name/version_N`` (the config's CSV logger, pointed at ``root`` and ``name``); :func:`fit`
adds a ``run.json`` with the command and the wall time, and :func:`read_metrics` reads the logged values back.
A script's own arguments come before ``--`` and those for every fit after it (:func:`split_overrides`); its
report is a JSON file with the machine and a Markdown table beside it (:func:`write_report`).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from results_file import results_path

from pararnn_ts.outputs import machine


def versions(root: Path, name: str) -> list[Path]:
    """The run folders ``root/name/version_N``, oldest (smallest ``N``) first."""
    numbered = {p: p.name.removeprefix("version_") for p in (root / name).glob("version_*")}
    return sorted((p for p, n in numbered.items() if n.isdigit()), key=lambda p: int(numbered[p]))


def fit(config: Path, root: Path, name: str, overrides: Sequence[str], script: str) -> Path:
    """Run ``pararnn-ts fit -c config`` with ``overrides`` to its end, logging to ``root/name``; returns the new
    run folder, which gets a ``run.json`` (command, wall time). ``script`` names the caller in errors."""
    before = set(versions(root, name))
    command = [
        sys.executable,
        "-m",
        "pararnn_ts.cli",
        "fit",
        "-c",
        str(config),
        f"--trainer.logger.init_args.save_dir={root}",
        f"--trainer.logger.init_args.name={name}",
        *overrides,
    ]
    print(f"\n== {name}: {' '.join(command)}", flush=True)
    start = time.perf_counter()
    returncode = subprocess.run(command).returncode
    wall_s = time.perf_counter() - start
    new = [p for p in versions(root, name) if p not in before]
    if returncode != 0 or len(new) != 1:
        raise SystemExit(f"{script}: the {name} run failed (exit code {returncode}, new run folders {new})")
    (new[0] / "run.json").write_text(json.dumps({"command": command, "wall_s": wall_s}, indent=1) + "\n")
    return new[0]


def read_metrics(run: Path) -> dict[str, list[float]]:
    """Every logged value of ``metrics.csv`` by column, in order (empty cells left out)."""
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return {key: [float(row[key]) for row in rows if row[key]] for key in (rows[0] if rows else {})}


def split_overrides(argv: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """The script's arguments (``sys.argv`` without one) before ``--``, and the fit overrides after it."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        return argv, []
    return argv[: argv.index("--")], argv[argv.index("--") + 1 :]


def place_outputs(args: argparse.Namespace, name: str, parser: argparse.ArgumentParser) -> None:
    """Fill in ``args.root``, the run folders (default ``runs/<name>``, ``runs/<name>_quick`` with
    ``args.quick``), and ``args.out``, the report (default ``runs/bench/<name>.json``; with ``args.quick`` beside
    its runs), refusing through ``parser`` when the report or its ``.md`` exists and ``args.overwrite`` is off."""
    args.root = args.root or Path("runs") / f"{name}{'_quick' if args.quick else ''}"
    out = args.out or (args.root / f"{name}.json" if args.quick else None)
    args.out = results_path(out, f"{name}.json", args.overwrite, also=(".md",), parser=parser)


def write_report(out: Path, rows: list[dict[str, Any]], overrides: Sequence[str] | None, markdown: str) -> None:
    """``out``: the machine, the fit ``overrides`` and the ``rows`` as JSON; the ``markdown`` table beside it
    (``.md``), also printed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {"machine": machine(), "overrides": overrides, "rows": rows}
    out.write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown + "\n")
    print(f"\n{markdown}\n\nwrote {out} and {out.with_suffix('.md')}")
