"""Building the native kernels: ninja found off PATH, stale build locks cleared, a note while building."""

from __future__ import annotations

import os
import shutil
import sys

import pytest
from torch.utils import cpp_extension

from pararnn_ts.ops import build


def test_ninja_of_this_environment_is_found_when_the_venv_is_not_activated(tmp_path, monkeypatch):
    if shutil.which("ninja", path=os.path.dirname(sys.executable)) is None:
        pytest.importorskip("ninja")  # ninja in this environment is the point; the project depends on it
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH with no ninja, as in `.venv/bin/python` unactivated
    assert shutil.which("ninja") is None
    build.put_ninja_on_path()
    assert shutil.which("ninja") is not None and os.environ["PATH"].startswith(str(tmp_path) + os.pathsep)
    path = os.environ["PATH"]
    build.put_ninja_on_path()  # found now: PATH stays as it is
    assert os.environ["PATH"] == path


def test_only_a_lock_older_than_any_build_is_removed(tmp_path):
    assert build.clear_stale_lock(tmp_path) is None  # no lock
    lock = tmp_path / "lock"
    lock.write_text("")
    written = lock.stat().st_mtime
    assert build.clear_stale_lock(tmp_path, now=written + build.STALE_LOCK_S - 1) is None and lock.exists()
    assert build.clear_stale_lock(tmp_path, now=written + build.STALE_LOCK_S + 1) == lock and not lock.exists()


def test_load_says_when_it_builds_waits_or_clears_a_dead_build(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    calls = []
    monkeypatch.setattr(cpp_extension, "load", lambda **kwargs: calls.append(kwargs) or "module")
    assert build.load_extension("ext_a", "the test kernels", sources=["a.cpp"]) == "module"
    assert calls == [{"name": "ext_a", "verbose": False, "sources": ["a.cpp"]}]
    assert f"building the test kernels in {tmp_path / 'ext_a'}" in capsys.readouterr().err

    (tmp_path / "ext_a" / "ext_a.so").write_bytes(b"")  # built before: nothing to say
    build.load_extension("ext_a", "the test kernels")
    assert capsys.readouterr().err == ""

    lock = tmp_path / "ext_a" / "lock"
    lock.write_text("")
    build.load_extension("ext_a", "the test kernels")
    waiting = capsys.readouterr().err
    assert "waiting for another process building the test kernels" in waiting and f"delete {lock}" in waiting
    os.utime(lock, (0, 0))  # from a build killed long ago
    build.load_extension("ext_a", "the test kernels")
    assert f"removed {lock}, left by a build of the test kernels" in capsys.readouterr().err and not lock.exists()


def test_an_installed_package_reads_its_own_kernel_sources_before_a_kernels_folder_beside_it(tmp_path, monkeypatch):
    from pararnn_ts.ops import sources

    site = tmp_path / "site-packages"
    for folder in (site / "pararnn_ts" / "_kernels" / "cpu", site / "kernels" / "cpu"):  # "kernels": another package
        folder.mkdir(parents=True)
    monkeypatch.setattr(sources, "_PACKAGE", site / "pararnn_ts")
    assert sources.kernel_source_dir("cpu") == site / "pararnn_ts" / "_kernels" / "cpu"
    checkout = tmp_path / "checkout"
    (checkout / "kernels" / "cpu").mkdir(parents=True)
    monkeypatch.setattr(sources, "_PACKAGE", checkout / "pararnn_ts")
    assert sources.kernel_source_dir("cpu") == checkout / "kernels" / "cpu"
    with pytest.raises(FileNotFoundError, match="reinstall"):
        sources.kernel_source_dir("cuda")
