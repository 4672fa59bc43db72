"""The benchmark's CSV files (``results.csv``, ``window_losses.csv``): rows as dicts, typed on reading, written
whole to a temporary file beside the target and moved over it (:func:`write_text`), so a run killed while it
writes leaves the previous file as it was."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: how a refusal of a damaged file ends
REPAIR = "repair or remove it, or pass --overwrite or another --output-dir"


def read_rows(path: Path, ints: Sequence[str], floats: Sequence[str]) -> list[dict[str, Any]]:
    """The rows of the CSV at ``path``, with the ``ints`` and ``floats`` columns parsed (the rest strings).

    A file without those columns, or with a row of more or fewer fields than its header or a value that does not
    parse (a file cut short by a killed write), is refused naming the file and the row's line."""
    with path.open(newline="") as file:
        reader = csv.DictReader(file)
        header = reader.fieldnames or []
        missing = [key for key in (*ints, *floats) if key not in header]
        if missing:
            what = "no header (an empty file)" if not header else f"no column {missing} (its header: {header})"
            raise ValueError(f"{path}: {what}; {REPAIR}")
        rows = []
        for row in reader:
            where = f"{path}, line {reader.line_num}"
            if None in row:
                raise ValueError(
                    f"{where}: {len(header) + len(row[None])} fields, the header has {len(header)}; {REPAIR}"
                )
            short = [key for key, value in row.items() if value is None]
            if short:
                raise ValueError(
                    f"{where}: the row ends before column {short[0]!r} (the file was cut short?); {REPAIR}"
                )
            for kind, keys in ((int, ints), (float, floats)):
                for key in keys:
                    try:
                        row[key] = kind(row[key])
                    except ValueError:
                        raise ValueError(
                            f"{where}: column {key!r} is {row[key]!r}, not {'an int' if kind is int else 'a number'}; "
                            f"{REPAIR}"
                        ) from None
            rows.append(row)
    return rows


def write_rows(rows: Sequence[dict[str, Any]], path: Path, columns: Sequence[str]) -> None:
    """``rows`` as a CSV at ``path`` with a header of ``columns`` (columns a row lacks are left empty), replacing
    the file in one step (:func:`write_text`)."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, text.getvalue())


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically: into a temporary file in the same folder, flushed to disk, then
    renamed over ``path`` (:func:`os.replace`). A reader, or a run killed midway, sees the old file or the new one,
    never a part; the folder is made if it does not exist."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    # created as a plain write creates a file (0666 less the umask), unlike mkstemp's private 0600
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(handle, "w", newline="") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
