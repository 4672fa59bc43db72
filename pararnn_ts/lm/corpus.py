"""Text sources for language modelling, each an iterator of ``(key, text)`` documents.

- :func:`stdlib_documents`: the default corpus, needing no download: the Python standard
  library's own source files (real code and prose no one here wrote, shipped with every Python).
- :func:`read_text_files`: local text files (one document per file), given as paths or globs.
- :func:`read_jsonl`: local JSONL files (one document per line, text under a configurable field).
- :func:`hf_documents`: a Hugging Face ``datasets`` stream (optional; e.g. SlimPajama-style corpora).

A document's ``key`` (a relative path, ``path:line`` or ``dataset:index``) alone decides its split
(:func:`split_of`), so the split is the same on every machine and a validation or test document is never
trained on. For files this holds whatever else is in the corpus: a file is keyed by its path relative
to the folder its own pattern starts from (:func:`keyed_files`), so adding a pattern or a file leaves
the other keys as they are. A Hugging Face record is keyed by its index in the stream, so the records
after an added data file may change split. Text and JSONL files must be UTF-8: other bytes are
refused, naming the file and line (:func:`check_utf8`).
"""

from __future__ import annotations

import glob
import hashlib
import itertools
import json
import os
import platform
import re
import sysconfig
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

#: folders of the standard library left out of the default corpus
STDLIB_EXCLUDED_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"})

#: the splits every shard folder holds (the validation one may be empty: ``val_fraction=0``)
SPLITS = ("train", "val")
#: the held-out test split, made only when asked for (``test_fraction > 0``); folders without it stay readable
TEST_SPLIT = "test"

Document = tuple[str, str]  # (key, text)


def check_fractions(val_fraction: float, test_fraction: float = 0.0) -> None:
    """Raise ``ValueError`` unless both shares lie in [0, 1) and leave documents to train on."""
    for name, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= fraction < 1:
            raise ValueError(f"{name} must be in [0, 1), got {fraction!r}")
    if not val_fraction + test_fraction < 1:
        raise ValueError(
            f"val_fraction + test_fraction must be below 1 (the rest is trained on), got {val_fraction} + "
            f"{test_fraction}"
        )


def split_of(key: str, val_fraction: float, test_fraction: float = 0.0) -> str:
    """``"val"`` for a fraction ``val_fraction`` of keys, chosen by a hash of ``key``; ``"test"`` for a further
    ``test_fraction`` of them; else ``"train"``.

    The hash places each key in [0, 1): below ``val_fraction`` it is validation, below ``val_fraction +
    test_fraction`` test. Test documents are therefore taken from those that ``test_fraction=0`` trains on, and
    the validation documents do not depend on ``test_fraction``.
    """
    check_fractions(val_fraction, test_fraction)
    position = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2**64
    if position < val_fraction:
        return "val"
    if test_fraction > 0 and position < val_fraction + test_fraction:
        return TEST_SPLIT
    return "train"


def split_documents(
    documents: Iterable[Document], val_fraction: float, test_fraction: float = 0.0
) -> Iterator[tuple[str, str]]:
    """``(split, text)`` for every ``(key, text)`` document, the split chosen by :func:`split_of`."""
    for key, text in documents:
        yield split_of(key, val_fraction, test_fraction), text


def trains_on_test(trained: tuple[float, float], tested: tuple[float, float]) -> bool:
    """Whether a model trained on the documents that ``(val_fraction, test_fraction) = trained`` leave for training
    (on the same corpus) has trained on some of the test documents of ``tested``: :func:`split_of` trains on the
    keys at or above ``sum(trained)`` and tests those in ``[tested[0], sum(tested))``."""
    return tested[1] > 0 and tested[0] + tested[1] > trained[0] + trained[1]


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
    return sorted(keyed_files(patterns, folder_globs))


def keyed_files(patterns: Sequence[str | Path], folder_globs: Sequence[str] = FOLDER_GLOBS) -> dict[Path, str]:
    """The files of :func:`expand_paths`, each with its key: its path relative to :func:`pattern_folder` of the
    first pattern that matches it. A key depends on that pattern alone, not on where its folder is nor on the
    other patterns (``["docs/*.txt", "more/*.txt"]`` keys ``docs/a.txt`` as ``a.txt``, as ``["docs/*.txt"]``
    does); files of two patterns may share a key, and then a split."""
    if isinstance(patterns, (str, Path)):
        patterns = [patterns]
    files: dict[Path, str] = {}
    for pattern in map(str, patterns):
        if os.path.isdir(pattern):
            examples = " or ".join(repr(f"{Path(pattern)}/{example}") for example in folder_globs)
            raise IsADirectoryError(f"{pattern!r} is a folder; give a glob of its files, e.g. {examples}")
        matches = matching_files(pattern)
        if not matches:
            raise FileNotFoundError(f"no file matches {pattern!r}")
        folder = pattern_folder(pattern)
        for match in matches:
            files.setdefault(Path(match).resolve(), Path(os.path.relpath(match, folder)).as_posix())
    return files


def matching_files(pattern: str) -> list[str]:
    """The files (not folders) that the glob ``pattern`` matches, ``**`` included."""
    return [match for match in glob.glob(pattern, recursive=True) if os.path.isfile(match)]


def pattern_folder(pattern: str) -> str:
    """The folder a pattern starts from: its leading components without glob characters (``*?[``), or the
    parent folder of a plain file path; ``"."`` for a pattern such as ``*.txt``."""
    parts = Path(pattern).parts
    literal = list(itertools.takewhile(lambda part: not glob.has_magic(part), parts))
    if len(literal) == len(parts):
        literal.pop()
    return os.path.join(*literal) if literal else "."


#: what ``errors="surrogateescape"`` makes of each byte that is not part of valid UTF-8
UNDECODABLE = re.compile("[\udc80-\udcff]")


def check_utf8(text: str, path: Path, first_line: int = 1) -> str:
    """``text`` (read from ``path`` with ``errors="surrogateescape"``, from line ``first_line`` on) if all of it
    was UTF-8.

    Raises:
        ValueError: naming the file, line and byte of the first byte that is not UTF-8, and how to convert.
    """
    bad = UNDECODABLE.search(text)
    if bad is None:
        return text
    line = first_line + text.count("\n", 0, bad.start())
    raise ValueError(
        f"{path}, line {line}: byte 0x{ord(bad.group()) - 0xDC00:02x} is not UTF-8; convert the file to UTF-8 first, "
        f"e.g. iconv -f latin1 -t utf-8 {path} > converted (for Latin-1 text; iconv -l lists the encodings)"
    )


def read_text_files(patterns: Sequence[str | Path]) -> Iterator[Document]:
    """One document per file, keyed as :func:`keyed_files` says.

    Raises:
        ValueError: naming the file and line, for a file that is not UTF-8 (see :func:`check_utf8`).
    """
    for path, key in sorted(keyed_files(patterns).items()):
        yield key, check_utf8(path.read_bytes().decode("utf-8", errors="surrogateescape"), path)


def read_jsonl(patterns: Sequence[str | Path], text_field: str = "text") -> Iterator[Document]:
    """One document per non-blank line of each JSONL file: the string under ``text_field``.

    Raises:
        ValueError: naming the file and line, for a line that is not UTF-8, or not a JSON object with a
            string under ``text_field``.
    """
    for path, key in sorted(keyed_files(patterns, JSONL_FOLDER_GLOBS).items()):
        with open(path, encoding="utf-8", errors="surrogateescape") as lines:
            for line_number, line in enumerate(lines, start=1):
                if not check_utf8(line, path, line_number).strip():
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
    """What identifies the source's current content cheaply: the Python version, or the sizes and times of its
    local files (``None`` for a source with none).

    For ``"hf"`` these are the files of a local dataset folder ``paths[0]`` and the local files that the data
    files ``paths[1:]`` match. A Hub dataset, and data files that match nothing here (``https://``, ``hf://``,
    paths inside a Hub dataset), are not checked again: once tokenised, they are reused until their ``cache_dir``
    is deleted or another one is chosen.
    """
    if source == "stdlib":
        return {"python": platform.python_version(), "stdlib": str(stdlib_root())}
    if source in ("files", "jsonl"):
        return files_digest(expand_paths(paths, JSONL_FOLDER_GLOBS if source == "jsonl" else FOLDER_GLOBS))
    if source == "hf" and paths:
        patterns = [os.path.join(paths[0], "**", "*")] if os.path.isdir(paths[0]) else []
        local = {Path(match).resolve() for pattern in patterns + paths[1:] for match in matching_files(pattern)}
        return files_digest(sorted(local)) if local else None
    return None


def files_digest(files: Iterable[Path]) -> str:
    """A hash of the files' paths, sizes and modification times."""
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()
