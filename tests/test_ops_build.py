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


def _source_tree(root, contents: dict[str, str], mtime: float = 1_000_000_000.0):
    """``root`` holding ``contents`` (name → text), every file dated ``mtime`` (as ``cp -p`` or a hardlink keeps)."""
    root.mkdir(parents=True, exist_ok=True)
    for file, text in contents.items():
        (root / file).write_text(text)
        os.utime(root / file, (mtime, mtime))
    return root


def test_a_build_is_named_after_its_sources_contents_flags_and_torch(tmp_path, monkeypatch):
    """A build folder named only after the install path kept running an old binary after an upgrade whose sources
    were older-dated (ninja rebuilds on timestamps only): every input of the binary must change the name."""
    import torch

    from pararnn_ts.ops import sources

    kernel = {"k.cpp": '#include "k.h"\nint f() { return K; }\n', "k.h": "#define K 1\n", "notes.txt": "a"}
    old = _source_tree(tmp_path / "old", kernel)
    new = _source_tree(tmp_path / "new", {**kernel, "k.h": "#define K 2\n"})  # same names, sizes and dates
    same = _source_tree(tmp_path / "same", {**kernel, "notes.txt": "not a source"})
    assert sources.build_tag(old, "-O3") != sources.build_tag(new, "-O3")
    assert sources.build_tag(old, "-O3") == sources.build_tag(same, "-O3") == sources.build_tag(old / ".", "-O3")
    assert sources.build_tag(old, "-O3") != sources.build_tag(old, "-O2")
    tag = sources.build_tag(old, "-O3")
    monkeypatch.setattr(torch, "__version__", "0.0.1")
    assert sources.build_tag(old, "-O3") != tag
    monkeypatch.undo()
    monkeypatch.setenv("CXX", "clang++")
    assert sources.build_tag(old, "-O3") != tag


def test_the_cpu_extension_name_follows_its_sources_and_flags(tmp_path, monkeypatch):
    from pararnn_ts.ops import cpu

    name = cpu.extension_name.__wrapped__  # the uncached computation
    kernel = {"bindings.cpp": "int g();\n", "fused_common.h": "#define K 1\n"}
    monkeypatch.setattr(cpu, "kernel_source_dir", lambda kind: _source_tree(tmp_path / "v1" / kind, kernel))
    first = name()
    assert first.startswith("pararnn_ts_cpu_") and first.isidentifier()
    kernel["fused_common.h"] = "#define K 2\n"
    monkeypatch.setattr(cpu, "kernel_source_dir", lambda kind: _source_tree(tmp_path / "v2" / kind, kernel))
    upgraded = name()
    assert upgraded.split("_")[3] != first.split("_")[3]  # the build tag; the checkout tags differ anyway
    monkeypatch.setattr(cpu, "compiler_flags", lambda: ["-O2"])
    assert name() != upgraded


def _an_extension_module():
    """(name, path) of a compiled module of the standard library, to stand for a finished build."""
    for module in ("_json", "_bisect", "_heapq", "_csv", "_struct", "array", "math"):
        path = getattr(__import__(module), "__file__", None)
        if path and path.endswith(".so"):
            return module, path
    pytest.skip("no compiled standard-library module to load")


def test_a_finished_build_in_a_read_only_cache_is_loaded_silently(tmp_path, monkeypatch, capsys):
    import errno

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))

    def read_only(**kwargs):  # what torch raises when it cannot create its build lock
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / kwargs["name"] / "lock"))

    monkeypatch.setattr(cpp_extension, "load", read_only)
    name, library = _an_extension_module()
    with pytest.raises(OSError, match="Read-only"):  # nothing built: the error stands (the caller warns)
        build.load_extension(name, "the test kernels")
    capsys.readouterr()
    shutil.copy(library, build.built_library(tmp_path / name, name))
    module = build.load_extension(name, "the test kernels")
    assert module.__file__ == str(build.built_library(tmp_path / name, name))
    assert capsys.readouterr().err == ""

    def disk_full(**kwargs):  # not about writing the cache at all: the error stands
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cpp_extension, "load", disk_full)
    with pytest.raises(OSError, match="No space"):
        build.load_extension(name, "the test kernels")
