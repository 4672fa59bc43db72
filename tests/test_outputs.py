"""The shared refusal to replace existing files, the run folder of a trainer, and reading back checkpoints."""

import io
import os
import platform
from types import SimpleNamespace

import pytest
import torch

from pararnn_ts.outputs import (
    ALLOCATOR_VARIABLES,
    allocator_settings,
    cpu_name,
    gathered,
    machine,
    read_checkpoint_file,
    refuse_existing,
    results_folder,
    run_folder,
    writes_results,
)


def test_refuse_existing_names_every_existing_file_and_the_options_that_chose_them(tmp_path):
    table, model, fresh = tmp_path / "table.md", tmp_path / "model.ckpt", tmp_path / "new.json"
    refuse_existing([table, model, fresh], overwrite=False)  # nothing there yet
    table.write_text("mine")
    with pytest.raises(FileExistsError, match=r"table\.md already exists: pass --overwrite to replace it, or --out "):
        refuse_existing([table, fresh], overwrite=False)
    model.write_text("mine")
    paths = {table: "--out", model: "--save-model", fresh: "--out"}
    with pytest.raises(FileExistsError) as refused:
        refuse_existing(paths, overwrite=False)
    assert str(refused.value) == (
        f"{table}, {model} already exist: pass --overwrite to replace them, or --out or --save-model elsewhere"
    )
    refuse_existing(paths, overwrite=True)
    assert table.read_text() == model.read_text() == "mine"  # refusing or not, nothing is touched


def test_run_folder_is_the_log_folder_or_the_root_without_a_logger(tmp_path):
    logged = SimpleNamespace(log_dir=str(tmp_path / "logs" / "version_0"), default_root_dir=str(tmp_path))
    assert run_folder(logged) == tmp_path / "logs" / "version_0" and run_folder(logged).is_dir()
    unlogged = SimpleNamespace(log_dir=None, default_root_dir=str(tmp_path / "root"))
    assert run_folder(unlogged) == tmp_path / "root" and run_folder(unlogged).is_dir()


def test_cpu_name_is_the_model_name_cpuinfo_gives_or_platforms_guess(monkeypatch):
    def cpuinfo(path, *args, **kwargs):
        assert path == "/proc/cpuinfo"
        return io.StringIO("processor\t: 0\nmodel name\t: Example CPU @ 2.00GHz\nflags\t: fpu\n")

    monkeypatch.setattr("builtins.open", cpuinfo)
    assert cpu_name() == "Example CPU @ 2.00GHz" == machine()["cpu"]

    def missing(path, *args, **kwargs):
        raise OSError("no such file")

    monkeypatch.setattr("builtins.open", missing)
    assert cpu_name() == (platform.processor() or platform.machine())


def test_results_name_the_allocator_settings_that_change_their_speed(monkeypatch):
    for name in [name for name in os.environ if name.startswith("MALLOC_") or name in ALLOCATOR_VARIABLES]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1073741824")
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/libjemalloc.so.2")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    want = {"LD_PRELOAD": "/usr/lib/libjemalloc.so.2", "MALLOC_TRIM_THRESHOLD_": "1073741824"}
    assert allocator_settings() == want == machine()["allocator"]


def test_results_name_the_gpu_of_the_device_that_ran_them(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: f"GPU {torch.device(device or 'cuda:0')}")
    assert machine()["gpu"] == "GPU cuda:0"  # the current one, where the caller does not say
    assert machine("cuda:1")["gpu"] == "GPU cuda:1" and machine("cpu")["gpu"] is None


def test_only_the_global_zero_process_of_a_real_run_writes_results():
    assert writes_results(SimpleNamespace(is_global_zero=True, fast_dev_run=0))
    assert not writes_results(SimpleNamespace(is_global_zero=False, fast_dev_run=0))
    assert not writes_results(SimpleNamespace(is_global_zero=True, fast_dev_run=True))


def test_every_process_reads_the_log_folder_and_the_global_zero_one_writes_there(tmp_path):
    """Under DDP ``trainer.log_dir`` is a broadcast from the global-zero process: every process must read it, or
    that one waits for the others forever."""
    reads = []

    class Process(SimpleNamespace):
        @property
        def log_dir(self) -> str:
            reads.append(self.is_global_zero)
            return str(tmp_path / "logs")

    first, second = (Process(is_global_zero=rank == 0, fast_dev_run=0) for rank in (0, 1))
    assert results_folder(first) == tmp_path / "logs" and results_folder(second) is None
    assert reads == [True, False]
    assert gathered(SimpleNamespace(world_size=1), ["a", "b"]) == ["a", "b"]  # a single process: its own items


def test_read_checkpoint_file_refuses_what_torch_save_did_not_write_as_a_dict(tmp_path):
    (tmp_path / "text.ckpt").write_text("hello")
    torch.save([1, 2], tmp_path / "list.ckpt")
    torch.save({"state_dict": {"w": torch.ones(2)}}, tmp_path / "good.ckpt")
    with pytest.raises(FileNotFoundError, match=r"--ckpt \S*missing.ckpt does not exist; give a .ckpt file \(by fit\)"):
        read_checkpoint_file(tmp_path / "missing.ckpt", "--ckpt", "by fit")
    with pytest.raises(ValueError, match=r"text.ckpt is not a PyTorch checkpoint \(by fit\)"):
        read_checkpoint_file(tmp_path / "text.ckpt", "--ckpt", "by fit")
    with pytest.raises(ValueError, match=r"list.ckpt holds a list, not a checkpoint"):
        read_checkpoint_file(tmp_path / "list.ckpt", "--ckpt", "by fit")
    assert torch.equal(
        read_checkpoint_file(tmp_path / "good.ckpt", "--ckpt", "by fit")["state_dict"]["w"], torch.ones(2)
    )
