"""The repository layout of DESIGN.md §3: only ``pararnn_ts`` is importable."""

from __future__ import annotations

from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[1]


def test_plain_folders_are_not_packages():
    for folder in ("kernels", "models", "datasets", "experiments"):
        assert not list((ROOT / folder).rglob("__init__.py")), f"{folder}/ must not contain __init__.py"


def test_only_pararnn_ts_is_packaged():
    packages = find_packages(str(ROOT), include=["pararnn_ts*"])
    assert "pararnn_ts" in packages
    assert {p.split(".")[0] for p in find_packages(str(ROOT), exclude=["tests*"])} == {"pararnn_ts"}
