"""``pararnn-ts fit`` runs in subprocesses, for the results scripts that train configs and tabulate their runs.

A run logs to ``root/name/version_N`` (the config's CSV logger, pointed at ``root`` and ``name``); :func:`fit`
adds a ``run.json`` with the command and the wall time, and :func:`read_metrics` reads the logged values back.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path


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
