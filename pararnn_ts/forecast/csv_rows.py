"""The benchmark's CSV files (``results.csv``, ``window_losses.csv``): rows as dicts, typed on reading."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def read_rows(path: Path, ints: Sequence[str], floats: Sequence[str]) -> list[dict[str, Any]]:
    """The rows of the CSV at ``path``, with the ``ints`` and ``floats`` columns parsed (the rest strings)."""
    with path.open() as file:
        rows = list(csv.DictReader(file))
    for row in rows:
        row.update({key: int(row[key]) for key in ints})
        row.update({key: float(row[key]) for key in floats})
    return rows


def write_rows(rows: Sequence[dict[str, Any]], path: Path, columns: Sequence[str]) -> None:
    """``rows`` as a CSV at ``path`` with a header of ``columns``."""
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
