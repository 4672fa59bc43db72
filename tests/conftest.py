"""Shared factories: cells for the solver tests, small CLI configs for the forecasting and language-model tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

# Without a GPU the Triton kernels run in Triton's interpreter; it must be chosen before triton loads.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from pararnn_ts import ParaGRU, ParaLSTM, RotationOscillator
from pararnn_ts.core import ParaCell
from pararnn_ts.lm.corpus import stdlib_root

ROOT = Path(__file__).resolve().parents[1]

INPUT_SIZE = 6
HIDDEN = 45  # not a multiple of 32, divisible by 3 heads
CELLS = ("paragru", "paralstm", "oscillator")


def read_pyproject() -> dict[str, Any]:
    """The repository's ``pyproject.toml``, parsed (``tomllib``; ``tomli``, from the dev extra, on Python 3.10)."""
    try:
        import tomllib
    except ModuleNotFoundError:
        import tomli as tomllib
    return tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())


def make_cell(name: str, dtype: torch.dtype = torch.float64, seed: int = 0, hidden: int = HIDDEN, **kwargs) -> ParaCell:
    """A cell with random (not just initial) recurrent weights, so every gate matters."""
    torch.manual_seed(seed)
    if name == "paragru":
        cell = ParaGRU(INPUT_SIZE, hidden, num_heads=3, max_norm=None, **kwargs)
    elif name == "paralstm":
        cell = ParaLSTM(INPUT_SIZE, hidden, num_heads=3, max_norm=None, **kwargs)
    elif name == "oscillator":
        cell = RotationOscillator(INPUT_SIZE, hidden, **kwargs)
    else:
        raise KeyError(name)
    with torch.no_grad():
        for p in cell.parameters():
            if p.dim() == 2 and name != "oscillator":  # A, b, C: off their initial values
                p.uniform_(-0.9, 0.9)
    return cell.to(dtype)


def random_state(cell: ParaCell, batch: int, dtype: torch.dtype, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    h0 = 0.5 * torch.randn(batch, *cell.state_shape, generator=g, dtype=dtype)
    return cell.tensor_to_state(h0)


def state_tensors(state) -> list[torch.Tensor]:
    return list(state) if isinstance(state, tuple) else [state]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max|a − b| / max|a|`` (absolute when ``a`` is all zeros)."""
    scale = a.abs().max().clamp_min(torch.finfo(a.dtype).tiny)
    return ((a - b).abs().max() / scale).item()


@pytest.fixture
def bare_argv(monkeypatch) -> None:
    """The CLI reads ``args`` only; pytest's own ``sys.argv`` must not look like CLI arguments."""
    monkeypatch.setattr(sys, "argv", ["pararnn-ts"])


@pytest.fixture
def in_tmp_path(monkeypatch, tmp_path) -> None:
    """The test runs in ``tmp_path``: runs and caches that commands write go there."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(params=CELLS)
def cell_name(request) -> str:
    return request.param


#: overrides that make the forecaster of :func:`forecast_config` tiny and its fit two steps long
TINY_FORECASTER = [
    "--trainer.max_steps=2",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--model.init_args.hidden_size=8",
    "--model.init_args.num_layers=1",
    "--model.init_args.num_parallel_samples=10",
    "--model.init_args.mode=sequential",
]


def forecast_config(dataset: dict[str, Any], **trainer: Any) -> dict[str, Any]:
    """A ``pararnn-ts`` config: the ParaGRU forecaster on ``dataset`` (``{"class_path", "init_args"}``), logged to
    ``runs/lightning_logs/version_N`` with ``last.ckpt``; ``trainer``: more ``Trainer`` arguments."""
    return {
        "model": str(ROOT / "models" / "forecast_paragru.yaml"),
        "data": {
            "class_path": "pararnn_ts.forecast.datamodule.ForecastDataModule",
            "init_args": {"dataset": dataset, "batch_size": 4, "num_batches_per_epoch": 2},
        },
        "trainer": {
            "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs"}},
            "callbacks": [
                {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"save_last": True}}
            ],
            **trainer,
        },
    }


@pytest.fixture
def count_runs(monkeypatch):
    """Counts the (dataset, model, seed) runs the forecast benchmark's runner trains and forecasts."""
    from pararnn_ts.forecast import benchmark

    calls = []
    real = benchmark.run_one

    def counted(model, dataset, data, seed, bench, quick=False):
        calls.append((dataset.name, model.name, seed))
        return real(model, dataset, data, seed, bench, quick=quick)

    monkeypatch.setattr(benchmark, "run_one", counted)
    return calls


#: the json package's source: keys __init__.py, decoder.py, encoder.py, scanner.py, tool.py
JSON_PY = stdlib_root() / "json" / "*.py"


def small_lm(cache_dir: Path) -> list[str]:
    """Overrides that shrink a tiny LM config: the json package's source (val 0.2), windows of 32, a 1-layer
    width-32 model."""
    return [
        "--data.init_args.source=files",
        f"--data.init_args.paths=[{JSON_PY}]",
        "--data.init_args.val_fraction=0.2",
        "--data.init_args.seq_len=32",
        "--data.init_args.batch_size=4",
        f"--data.init_args.cache_dir={cache_dir}",
        "--model.init_args.dim=32",
        "--model.init_args.num_layers=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]


#: Lightning's DDP on two CPU processes (gloo)
TWO_PROCESSES = ["--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu"]


def run_in_two_processes(args: list[str], folder: Path, refusal: str | None = None) -> None:
    """``pararnn-ts ARGS`` in two CPU processes in ``folder`` (Lightning's DDP starts the second from the first);
    it must succeed, or with ``refusal``, fail saying that."""
    done = subprocess.run(
        [sys.executable, "-m", "pararnn_ts.cli", *args, *TWO_PROCESSES],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if refusal is None:
        assert done.returncode == 0, done.stderr[-3000:]
    else:
        assert done.returncode != 0 and refusal in done.stderr, done.stderr[-3000:]
