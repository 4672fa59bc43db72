"""Text sources for language modelling, each an iterator of ``(key, text)`` documents.

- :func:`stdlib_documents`: the default corpus, needing no download: the Python standard
  library's own source files (real code and prose no one here wrote, shipped with every Python).
- :func:`read_text_files`: local text files (one document per file), given as paths or globs.
- :func:`read_jsonl`: local JSONL files (one document per line, text under a configurable field).
- :func:`hf_documents`: a Hugging Face ``datasets`` stream (optional; e.g. SlimPajama-style corpora).

A document's ``key`` (a relative path, ``path:line`` or ``dataset:index``) alone decides its split
(:func:`split_of`), so the split is the same on every machine and a validation document is never
trained on, whatever else is in the corpus.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import platform
import sysconfig
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

#: folders of the standard library left out of the default corpus
STDLIB_EXCLUDED_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"})

SPLITS = ("train", "val")

Document = tuple[str, str]  # (key, text)


def split_of(key: str, val_fraction: float) -> str:
    """``"val"`` for a fraction ``val_fraction`` of keys, chosen by a hash of ``key``, else ``"train"``."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    position = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2**64
    return "val" if position < val_fraction else "train"


def split_documents(documents: Iterable[Document], val_fraction: float) -> Iterator[tuple[str, str]]:
    """``(split, text)`` for every ``(key, text)`` document, the split chosen by :func:`split_of`."""
    for key, text in documents:
        yield split_of(key, val_fraction), text


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(root: Path | None = None) -> list[Path]:
    """The standard library's ``*.py`` files in sorted order, without tests and installed packages."""
    root = stdlib_root() if root is None else root
    files = (path for path in root.rglob("*.py") if not STDLIB_EXCLUDED_DIRS & set(path.relative_to(root).parts[:-1]))
    return sorted(files, key=lambda path: path.relative_to(root).as_posix())


def stdlib_documents(root: Path | None = None) -> Iterator[Document]:
    """Every file of :func:`stdlib_files`, keyed by its path relative to the library's root.

    Files are read as UTF-8 (undecodable bytes, if any, become U+FFFD).
    """
    root = stdlib_root() if root is None else root
    for path in stdlib_files(root):
        yield path.relative_to(root).as_posix(), path.read_bytes().decode("utf-8", errors="replace")


#: the globs a folder given as a path is told to use instead (for text files; JSONL readers pass their own)
FOLDER_GLOBS = ("**/*.py", "*.txt")
JSONL_FOLDER_GLOBS = ("*.jsonl", "**/*.jsonl")


def expand_paths(patterns: Sequence[str | Path], folder_globs: Sequence[str] = FOLDER_GLOBS) -> list[Path]:
    """Files named by ``patterns`` (paths or globs, ``**`` allowed), sorted and without duplicates.

    Raises:
        IsADirectoryError: for a pattern that is a folder (which files of it to read is the caller's choice),
            suggesting ``folder_globs`` inside it.
        FileNotFoundError: for a pattern that matches no file.
    """
    if isinstance(patterns, (str, Path)):
        patterns = [patterns]
    files: set[Path] = set()
    for pattern in patterns:
        if os.path.isdir(pattern):
            examples = " or ".join(repr(f"{Path(pattern)}/{example}") for example in folder_globs)
            raise IsADirectoryError(f"{str(pattern)!r} is a folder; give a glob of its files, e.g. {examples}")
        matches = [Path(p) for p in glob.glob(str(pattern), recursive=True) if os.path.isfile(p)]
        if not matches:
            raise FileNotFoundError(f"no file matches {str(pattern)!r}")
        files.update(path.resolve() for path in matches)
    return sorted(files)


def relative_keys(files: Sequence[Path]) -> list[str]:
    """Each file's path relative to the files' common folder: keys that do not depend on where that folder is."""
    common = Path(os.path.commonpath([str(path.parent) for path in files]))
    return [path.relative_to(common).as_posix() for path in files]


def read_text_files(patterns: Sequence[str | Path]) -> Iterator[Document]:
    """One document per file (read as UTF-8, undecodable bytes become U+FFFD), keyed by relative path."""
    files = expand_paths(patterns)
    for key, path in zip(relative_keys(files), files, strict=True):
        yield key, path.read_bytes().decode("utf-8", errors="replace")


def read_jsonl(patterns: Sequence[str | Path], text_field: str = "text") -> Iterator[Document]:
    """One document per non-blank line of each JSONL file: the string under ``text_field``.

    Raises:
        ValueError: naming the file and line, for a line that is not a JSON object with a string
            under ``text_field``.
    """
    files = expand_paths(patterns, JSONL_FOLDER_GLOBS)
    for key, path in zip(relative_keys(files), files, strict=True):
        with open(path, encoding="utf-8") as lines:
            for line_number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                where = f"{path}, line {line_number}"
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{where}: not valid JSON ({err})") from None
                yield f"{key}:{line_number}", text_of(record, text_field, where)


def text_of(record: Any, text_field: str, where: str) -> str:
    """``record[text_field]``, or a ``ValueError`` that says ``where`` and which fields there are."""
    if not isinstance(record, dict) or text_field not in record:
        fields = sorted(record) if isinstance(record, dict) else type(record).__name__
        raise ValueError(f"{where}: no field {text_field!r} (found {fields}); set text_field to the field of the text")
    text = record[text_field]
    if not isinstance(text, str):
        raise ValueError(f"{where}: field {text_field!r} holds {type(text).__name__}, not a string")
    return text


def import_hf_datasets() -> Any:
    """The Hugging Face ``datasets`` package, or an ``ImportError`` that says how to install it."""
    try:
        import datasets
    except ImportError:
        datasets = None
    # Without the package, this repository's own datasets/ folder may import as an empty namespace package.
    if not hasattr(datasets, "load_dataset"):
        raise ImportError(
            "The Hugging Face streaming reader needs the `datasets` package: pip install datasets "
            "(the stdlib, files and jsonl sources need nothing)"
        )
    return datasets


def hf_documents(
    path: str, text_field: str = "text", data_files: Sequence[str] | None = None, split: str = "train"
) -> Iterator[Document]:
    """Stream ``load_dataset(path, data_files=..., split=split, streaming=True)``, one document per record.

    ``path`` is a Hub dataset (e.g. ``"cerebras/SlimPajama-627B"``, downloaded as it streams) or a
    builder for local files (``"json"`` with ``data_files=["data/*.jsonl"]``). Records are keyed by
    ``path:index``.
    """
    stream = import_hf_datasets().load_dataset(
        path, data_files=list(data_files) if data_files else None, split=split, streaming=True
    )
    for index, record in enumerate(stream):
        yield f"{path}:{index}", text_of(record, text_field, f"{path} ({split} split), record {index}")


def source_documents(source: str, paths: Sequence[str] = (), text_field: str = "text") -> Iterator[Document]:
    """The documents of a named source: ``"stdlib"``, ``"files"``, ``"jsonl"`` or ``"hf"``.

    For ``"hf"``, ``paths[0]`` is the dataset and ``paths[1:]`` its data files, if any.
    """
    if source != "stdlib" and not paths:
        raise ValueError(f"source={source!r} needs paths")
    if source == "stdlib":
        return stdlib_documents()
    if source == "files":
        return read_text_files(paths)
    if source == "jsonl":
        return read_jsonl(paths, text_field)
    if source == "hf":
        return hf_documents(paths[0], text_field, data_files=paths[1:])
    raise ValueError(f"unknown source {source!r}; use 'stdlib', 'files', 'jsonl' or 'hf'")


def source_fingerprint(source: str, paths: list[str]) -> Any:
    """What identifies the source's current content cheaply: file sizes and times, or the Python version."""
    if source == "stdlib":
        return {"python": platform.python_version(), "stdlib": str(stdlib_root())}
    if source in ("files", "jsonl"):
        digest = hashlib.sha256()
        for path in expand_paths(paths, JSONL_FOLDER_GLOBS if source == "jsonl" else FOLDER_GLOBS):
            stat = path.stat()
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()
    return None
