"""Config-driven forecasting benchmark: every dataset × model × seed, trained, forecast, scored, timed.

    pararnn-ts benchmark --config experiments/forecast/benchmark.yaml --output-dir runs/forecast_benchmark
    python -m pararnn_ts.forecast.benchmark --config experiments/forecast/benchmark.yaml --quick --models DeepAR
    pararnn-ts benchmark --config experiments/forecast/validation.yaml --split validation --output-dir runs/val

The config (its format: :mod:`~pararnn_ts.forecast.benchmark_config`) names datasets, models and seeds;
every entry is checked (classes importable, arguments known, data valid, models constructible) before
any training starts. ``--split validation`` scores windows cut from the training split instead of the
test windows (:func:`~pararnn_ts.forecast.data.validation_split`), to choose settings. Results go to
``results.csv`` (one row per run, written as runs finish; its ``settings`` column is a fingerprint of what shaped
the run besides its seed, :func:`settings_of`, spelled out in ``settings.json``), ``results.md`` (mean ± std over
seeds, best per dataset in bold; with ``paired_reference``, each model's ``mean_wQL`` minus the reference's with
an interval from resampling the test windows, see :mod:`~pararnn_ts.forecast.paired`), ``window_losses.csv`` (each
run's share of ``mean_wQL`` per test window) and ``plots/<dataset>__<model>.png``
(:mod:`~pararnn_ts.forecast.benchmark_report`). ``--resume`` keeps the finished runs and refuses kept rows made
with other settings than this invocation would use for them (e.g. a ``--quick`` run's); kept rows made by other
code or libraries (the ``commit``, ``torch``, ``gluonts`` and ``lightning`` columns, :func:`provenance`) are kept
with a warning that counts them. Each file is rewritten whole after every run through a temporary file moved over
it (:func:`~pararnn_ts.forecast.csv_rows.write_text`), so a killed run loses at most the run it was in; the output
folder is made, and ``--overwrite`` clears it, only when the first result is written. A ``covariates`` column says
whether the model took the covariates the dataset has (``used``), could not (``ignored: …``, marked † in
``results.md``), or the dataset has none (``none``).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import inspect
import json
import logging
import math
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, seed_everything

from ..outputs import cpu_name
from . import csv_rows
from .benchmark_config import (
    QUICK_MODEL_ARGS,
    QUICK_TRAINER,
    TRAINER_DEFAULTS,
    Benchmark,
    DatasetSpec,
    ModelSpec,
    instantiate,
    load_benchmark,
    parameters,
    refuse_duplicates,
)
from .benchmark_report import results_markdown
from .data import ForecastData, seasonality_of, validation_split
from .metrics import METRICS, score, split_windows, window_quantile_losses
from .paired import read_window_rows, window_rows, write_window_rows
from .plots import plot_forecasts

#: library warnings repeated on every batch or run, silenced unless ``--verbose``
QUIET_WARNINGS = (
    (FutureWarning, ".*is deprecated and will be removed"),  # pandas, on GluonTS's period aliases ('M')
    (UserWarning, "Using a non-tuple sequence for multidimensional indexing"),  # gluonts.torch.util, newer torch
    (UserWarning, ".*no `val_dataloader`"),  # GluonTS modules define validation_step; the runner has no val split
    (Warning, r".*isinstance\(treespec, LeafSpec\)"),  # Lightning on newer torch
)
#: what made a row besides its settings: the code's git commit (:func:`code_commit`) and the libraries' versions
PROVENANCE = ("commit", "torch", "gluonts", "lightning")
COLUMNS = (
    "dataset",
    "model",
    "seed",
    *METRICS,
    "MASE_excluded_windows",  # score's count of windows MASE left out (seasonal error 0); empty when none
    "fit_s",
    "epochs",
    "epoch_s",
    "predict_s",
    "threads",
    "cpu",
    "settings",
    "covariates",  # used / ignored: <kinds> (the model cannot take them) / none (the dataset has none)
    *PROVENANCE,
)
#: the settings each ``results.csv`` fingerprint stands for (:func:`settings_of`), beside it in the output folder
SETTINGS_FILE = "settings.json"


class EpochTimer(Callback):
    """Records the wall time of every training epoch (``durations``, seconds)."""

    def __init__(self) -> None:
        self.durations: list[float] = []
        self.started = 0.0

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self.started = time.perf_counter()

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self.durations.append(time.perf_counter() - self.started)


def season_of(data: ForecastData) -> int:
    return data.seasonality or seasonality_of(data.freq)


def model_kwargs(
    model: ModelSpec, dataset: DatasetSpec, data: ForecastData, bench: Benchmark, quick: bool = False
) -> dict[str, Any]:
    """The arguments of ``model`` for ``data``, layered as the module doc says, as the config writes them
    (``{class_path, init_args}`` not built yet); ``trainer_kwargs`` without the runner's callbacks and folder."""
    from_data: dict[str, Any] = {
        "freq": data.freq,
        "prediction_length": data.prediction_length,
        "season_length": season_of(data),
        "num_feat_dynamic_real": data.num_feat_dynamic_real,
    }
    if data.cardinality:
        from_data |= {"cardinality": data.cardinality, "num_feat_static_cat": len(data.cardinality)}
    if data.num_feat_static_real:
        from_data["num_feat_static_real"] = data.num_feat_static_real
    names = parameters(model.cls)
    layered = {**from_data, **bench.model_args, **dataset.model_args}
    kwargs = {key: value for key, value in layered.items() if key in names}
    kwargs |= model.init_args | model.overrides.get(dataset.name, {})
    if quick:
        kwargs |= {key: value for key, value in QUICK_MODEL_ARGS.items() if key in names}
    if "trainer_kwargs" in names:
        own = kwargs.get("trainer_kwargs") or {}
        kwargs["trainer_kwargs"] = {
            **TRAINER_DEFAULTS,
            **bench.trainer_kwargs,
            **own,
            **(QUICK_TRAINER if quick else {}),
        }
    return kwargs


def build_model(
    model: ModelSpec,
    dataset: DatasetSpec,
    data: ForecastData,
    bench: Benchmark,
    quick: bool = False,
    callbacks: list[Callback] | None = None,
    root_dir: str | None = None,
) -> Any:
    """The estimator (or predictor) of ``model`` for ``data``, with arguments layered as the module doc says."""
    kwargs = instantiate(model_kwargs(model, dataset, data, bench, quick))
    if "trainer_kwargs" in parameters(model.cls):
        trainer = kwargs["trainer_kwargs"]
        trainer["callbacks"] = list(callbacks or []) + list(trainer.get("callbacks", []))
        if root_dir is not None:
            trainer["default_root_dir"] = root_dir
    try:
        return model.cls(**kwargs)
    except Exception as error:
        raise ValueError(
            f"model {model.name!r} on dataset {dataset.name!r}: {type(error).__name__}: {error}"
        ) from error


def class_path(cls: type) -> str:
    """``module.Class`` of ``cls``."""
    return f"{cls.__module__}.{cls.__qualname__}"


def settings_of(
    model: ModelSpec, dataset: DatasetSpec, data: ForecastData, bench: Benchmark, quick: bool = False
) -> dict[str, Any]:
    """What shapes a run's result besides its seed, as JSON values: the split, the dataset's class and arguments,
    the model's class and its layered arguments (:func:`model_kwargs`: ``--quick``'s budget and the Trainer's
    settings included). Threads and machine are recorded in their own columns."""
    settings = {
        "split": bench.split,
        "dataset": class_path(dataset.cls),
        "dataset_args": dataset.init_args,
        "model": class_path(model.cls),
        "model_kwargs": model_kwargs(model, dataset, data, bench, quick),
    }
    return json.loads(json.dumps(settings, sort_keys=True, default=str))


def fingerprint(settings: dict[str, Any]) -> str:
    """A short stable hash of :func:`settings_of`'s ``settings``: the ``settings`` column of ``results.csv``."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


#: a setting one of two :func:`settings_of` leaves out (:func:`differences`)
UNSET = object()


def differences(kept: Any, now: Any, prefix: str = "") -> list[str]:
    """``key kept → now`` for every setting (dotted key) that differs between two :func:`settings_of`."""
    if isinstance(kept, dict) and isinstance(now, dict):
        keys = sorted(set(kept) | set(now))
        return [
            line for key in keys for line in differences(kept.get(key, UNSET), now.get(key, UNSET), f"{prefix}{key}.")
        ]
    shown = ["unset" if value is UNSET else repr(value) for value in (kept, now)]
    return [] if kept == now else [f"{prefix.rstrip('.')} {shown[0]} → {shown[1]}"]


def check_kept_settings(
    rows: list[dict[str, Any]],
    current: dict[tuple[str, str], dict[str, Any]],
    kept: dict[str, dict[str, Any]],
    out: Path,
    quick: bool = False,
    flip_quick: Callable[[tuple[str, str]], dict[str, Any]] | None = None,
) -> None:
    """Refuse kept ``rows`` of a (dataset label, model) of ``current`` (this invocation's settings) that record
    another ``settings`` fingerprint, naming what differs (``kept``: the settings of recorded fingerprints; with
    ``flip_quick``, the settings with ``--quick`` the other way, to say so); warn once about rows that record none."""
    unknown, other = 0, {}
    for row in rows:
        key = (row["dataset"], row["model"])
        if key not in current:  # not part of this invocation: kept as it is
            continue
        recorded, own = row.get("settings") or "", current[key]
        if not recorded:
            unknown += 1
        elif recorded != fingerprint(own):
            why = (
                "; ".join(differences(kept[recorded], own))
                if recorded in kept
                else (f"fingerprint {recorded}, now {fingerprint(own)} ({SETTINGS_FILE} does not hold theirs)")
            )
            if flip_quick is not None and fingerprint(flip_quick(key)) == recorded:
                why = f"made {'without' if quick else 'with'} --quick ({why})"
            other.setdefault((*key, why), []).append(row["seed"])
    if other:
        lines = [f"  {dataset} × {model} seeds {seeds}: {why}" for (dataset, model, why), seeds in other.items()]
        raise ValueError(
            f"--resume: {sum(map(len, other.values()))} kept runs of {out / 'results.csv'} were made with other "
            "settings than this invocation would use for them (kept → now):\n" + "\n".join(lines) + "\nrun with "
            "the settings they were made with, write to another --output-dir, or pass --overwrite to replace them"
        )
    if unknown:
        warnings.warn(
            f"--resume: {unknown} kept runs of {out / 'results.csv'} record no settings (written before the settings "
            "column): kept unchecked; pass --overwrite to rerun them if their settings may differ from this run's",
            stacklevel=2,
        )


def code_commit(root: Path | None = None) -> str:
    """The git commit of the checkout that holds this package (``root``: its folder, by default the one above
    ``pararnn_ts``): ``<sha>``, or ``<sha>+dirty.<hash of git diff HEAD>`` when tracked files differ from it (the
    hash tells two edited trees apart); ``"unknown"`` outside a git checkout (an installed wheel) or without git."""
    root = Path(__file__).resolve().parents[2] if root is None else Path(root)

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != root.resolve():
            return "unknown"  # e.g. a wheel installed in a virtual environment that lies inside another repository
        sha = git("rev-parse", "HEAD")
        diff = subprocess.run(
            ["git", "-C", str(root), "diff", "HEAD", "--no-ext-diff", "--binary"],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}+dirty.{hashlib.sha256(diff).hexdigest()[:8]}" if diff else sha


def library_version(name: str) -> str:
    """The installed version of the distribution ``name``, or ``"unknown"``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


@functools.cache
def provenance() -> dict[str, str]:
    """The :data:`PROVENANCE` columns of this process's rows: the code's commit (:func:`code_commit`, read once:
    the modules were loaded when the process started) and the versions of torch, GluonTS and Lightning."""
    return {
        "commit": code_commit(),
        "torch": torch.__version__,
        "gluonts": library_version("gluonts"),
        "lightning": library_version("lightning"),
    }


def check_kept_provenance(rows: list[dict[str, Any]], now: dict[str, str], out: Path) -> None:
    """Warn about kept ``rows`` made by other code or library versions than ``now`` (:func:`provenance`), counted
    per commit and version, and, once, about rows from before the provenance columns (their makers unknown).
    They are kept: rows of older code are a legitimate part of a resumed file, but never silently."""
    unrecorded, other = 0, Counter()
    for row in rows:
        recorded = {key: row.get(key) or "" for key in PROVENANCE}
        if not any(recorded.values()):
            unrecorded += 1
            continue
        differs = tuple(f"{key} {recorded[key] or 'unknown'}" for key in PROVENANCE if recorded[key] != now[key])
        if differs:
            other[differs] += 1
    where = out / "results.csv"
    if other:
        lines = [f"  {count} by {', '.join(differs)}" for differs, count in other.most_common()]
        warnings.warn(
            f"--resume: {sum(other.values())} kept runs of {where} were made by other code or libraries than this "
            f"run ({', '.join(f'{key} {value}' for key, value in now.items())}); kept, and the tables mix them with "
            "this run's rows (pass --overwrite to rerun them):\n" + "\n".join(lines),
            stacklevel=2,
        )
    if unrecorded:
        warnings.warn(
            f"--resume: {unrecorded} kept runs of {where} record no commit or library versions (written before "
            "those columns): kept, made by unknown code",
            stacklevel=2,
        )


#: the covariates a dataset may have: ``(kind, how many the data has, how many the model's arguments take)``
COVARIATE_KINDS: tuple[tuple[str, Callable[[ForecastData], int], Callable[[dict[str, Any]], int]], ...] = (
    (
        "feat_dynamic_real",
        lambda data: data.num_feat_dynamic_real,
        lambda kwargs: max(
            kwargs.get("num_feat_dynamic_real") or 0,
            sum(kwargs.get("dynamic_dims") or []) + sum(kwargs.get("past_dynamic_dims") or []),  # TFT's
        ),
    ),
    (
        "feat_static_cat",
        lambda data: len(data.cardinality),
        lambda kwargs: max(kwargs.get("num_feat_static_cat") or 0, len(kwargs.get("static_cardinalities") or [])),
    ),
    (
        "feat_static_real",
        lambda data: data.num_feat_static_real,
        lambda kwargs: max(kwargs.get("num_feat_static_real") or 0, sum(kwargs.get("static_dims") or [])),
    ),
)


def covariates_of(model: ModelSpec, dataset: DatasetSpec, data: ForecastData, bench: Benchmark) -> str:
    """The ``covariates`` column: ``"none"`` when ``data`` has no covariates, ``"used"`` when the model's arguments
    (:func:`model_kwargs`) take all it has, else ``"ignored: <kinds>"``, the kinds the model runs without (its
    class takes no argument for them, as DLinear and SimpleFeedForward take no dynamic reals, or its arguments
    take fewer)."""
    kwargs = model_kwargs(model, dataset, data, bench)
    provided = [(kind, has(data), takes(kwargs)) for kind, has, takes in COVARIATE_KINDS if has(data)]
    if not provided:
        return "none"
    ignored = [kind for kind, has, taken in provided if taken < has]
    return f"ignored: {', '.join(ignored)}" if ignored else "used"


def warm_up(model: ModelSpec, kwargs: dict[str, Any]) -> None:
    """Build or load the fused kernels a ParaRNN forecaster's cell runs, before its fit is timed: a tiny forward
    and backward of its cell kind in its mode (the first use of the CPU kernels builds them, about 30 s on a fresh
    install). Nothing for other models, nor for a user cell (``cell`` not a built-in's name: it brings its own
    kernels, if any)."""
    from .estimator import ParaRNNEstimator
    from .module import RNN_CELLS

    if not issubclass(model.cls, ParaRNNEstimator):
        return
    defaults = parameters(model.cls)
    cell = kwargs.get("cell", defaults["cell"].default)
    mode = kwargs.get("mode", defaults["mode"].default)
    if not isinstance(cell, str) or cell not in RNN_CELLS:
        return
    with torch.random.fork_rng(devices=[]):  # leaves the seeded streams of the run as they were
        layer = RNN_CELLS[cell](4, 4, 1, mode=mode)
        x = torch.linspace(-1, 1, 2 * 8 * 4).reshape(2, 8, 4).requires_grad_()
        y, _ = layer(x)
        y.sum().backward()


def nan_forecasts(forecasts: list[Any]) -> int:
    """How many ``forecasts`` hold a NaN (samples, quantiles or their mean)."""

    def values(forecast: Any) -> Any:
        for name in ("samples", "forecast_array"):
            if getattr(forecast, name, None) is not None:
                return getattr(forecast, name)
        return forecast.mean

    return sum(bool(np.isnan(np.asarray(values(forecast), dtype=float)).any()) for forecast in forecasts)


def predict_kwargs(predictor: Any, num_samples: int | None) -> dict[str, Any]:
    """``{"num_samples": num_samples}`` where given and ``predictor.predict`` names it (a sampling model; seasonal
    naive and other predictors that make no samples do not)."""
    takes = "num_samples" in inspect.signature(predictor.predict).parameters
    return {"num_samples": num_samples} if num_samples is not None and takes else {}


def run_one(
    model: ModelSpec, dataset: DatasetSpec, data: ForecastData, seed: int, bench: Benchmark, quick: bool = False
) -> tuple[dict[str, Any], list[Any]]:
    """Train (if ``model`` is an estimator), forecast every test window and score: the CSV row and forecasts.

    A ParaRNN forecaster's kernels are built before its fit is timed (:func:`warm_up`). Forecasts holding NaN
    are refused naming the dataset, model and seed."""
    warm_up(model, model_kwargs(model, dataset, data, bench, quick))
    seed_everything(seed, verbose=False)
    timer = EpochTimer()
    with tempfile.TemporaryDirectory(prefix="pararnn_benchmark_") as root:  # GluonTS's checkpoints go there
        built = build_model(model, dataset, data, bench, quick=quick, callbacks=[timer], root_dir=root)
        started = time.perf_counter()
        # cache_data: transform each training series once, not on every pass (one pass = one window per series)
        cache = (
            {"cache_data": True} if model.trains and "cache_data" in inspect.signature(built.train).parameters else {}
        )
        predictor = built.train(data.train, **cache) if model.trains else built
        fit_s = time.perf_counter() - started
    inputs, _ = split_windows(data.test, data.prediction_length)
    started = time.perf_counter()
    forecasts = list(predictor.predict(inputs, **predict_kwargs(predictor, bench.num_samples)))
    predict_s = time.perf_counter() - started
    broken = nan_forecasts(forecasts)
    if broken:
        raise ValueError(
            f"{dataset.name} × {model.name} seed {seed}: {broken} of {len(forecasts)} forecasts contain NaN values "
            "(the training diverged?); the finished runs are saved, so fix the model's settings (e.g. a lower lr) "
            "or leave it out with --models, and --resume"
        )
    try:
        metrics = score(forecasts, data.test, data.prediction_length, season_of(data))
    except ValueError as error:
        raise ValueError(f"{dataset.name} × {model.name} seed {seed}: {error}") from error
    row = {
        "dataset": dataset.name,
        "model": model.name,
        "seed": seed,
        **metrics,
        "fit_s": fit_s if model.trains else 0.0,
        "epochs": len(timer.durations),
        "epoch_s": float(np.mean(timer.durations)) if timer.durations else math.nan,
        "predict_s": predict_s,
        "threads": torch.get_num_threads(),
        "cpu": cpu_name(),
        "covariates": covariates_of(model, dataset, data, bench),
        **provenance(),
    }
    return row, forecasts


def read_rows(path: Path) -> list[dict[str, Any]]:
    return csv_rows.read_rows(path, ("seed", "epochs", "threads"), (*METRICS, "fit_s", "epoch_s", "predict_s"))


def write_rows(rows: list[dict[str, Any]], path: Path) -> None:
    csv_rows.write_rows(rows, path, COLUMNS)


def read_settings(path: Path) -> dict[str, dict[str, Any]]:
    """The ``{fingerprint: settings}`` of a ``settings.json`` (none if it does not exist)."""
    if not path.exists():
        return {}
    try:
        settings = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path}: not JSON ({error}); remove it, or pass --overwrite or another --output-dir"
        ) from None
    if not isinstance(settings, dict):
        raise ValueError(f"{path}: not a mapping of fingerprints to settings; remove it, or pass --overwrite")
    return settings


#: what ``--overwrite`` removes from the output folder (when the first new result is written: :func:`clear_output`)
OUTPUT_FILES = ("results.csv", "results.md", "window_losses.csv", SETTINGS_FILE)


def prepare_output(
    out: Path, resume: bool, overwrite: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Check ``out`` (made later, by the first result written); return the result rows, window-loss rows and
    settings (:data:`SETTINGS_FILE`) of finished runs to keep (``resume``) or none. Window losses of a run that
    ``results.csv`` does not hold (a run killed between the two files) are dropped: the run is done again."""
    if resume and overwrite:
        raise ValueError("--resume keeps earlier results and --overwrite deletes them: pass one of them")
    csv_path = out / "results.csv"
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--output-dir {out} is a file, not a folder; pass another --output-dir")
    if out.exists() and any(out.iterdir()) and not (resume or overwrite):
        raise FileExistsError(
            f"{out} is not empty; pass --resume to continue its runs, --overwrite to replace its results, "
            "or another --output-dir"
        )
    if not (resume and csv_path.exists()):
        return [], [], {}
    rows = read_rows(csv_path)
    finished = {(row["dataset"], row["model"], row["seed"]) for row in rows}
    windows = [
        w for w in read_window_rows(out / "window_losses.csv") if (w["dataset"], w["model"], w["seed"]) in finished
    ]
    return rows, windows, read_settings(out / SETTINGS_FILE)


def clear_output(out: Path) -> None:
    """``--overwrite``: remove the results and plots of ``out`` (before its first new result is written)."""
    for name in OUTPUT_FILES:
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / "plots", ignore_errors=True)


def row_line(row: dict[str, Any]) -> str:
    metrics = "  ".join(f"{name} {row[name]:.3f}" for name in METRICS)
    timing = f"fit {row['fit_s']:.1f} s" + (
        f" ({row['epochs']} epochs, {row['epoch_s']:.2f} s/epoch)" if row["epochs"] else ""
    )
    return f"{row['dataset']} × {row['model']} seed {row['seed']}: {metrics}  {timing}"


def run_benchmark(
    bench: Benchmark,
    out: Path,
    quick: bool = False,
    done: list[dict[str, Any]] | None = None,
    done_windows: list[dict[str, Any]] | None = None,
    done_settings: dict[str, dict[str, Any]] | None = None,
    overwrite: bool = False,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Check every (dataset, model), then run the missing (dataset, model, seed) triples; return all result
    and window-loss rows.

    ``done``, ``done_windows`` and ``done_settings``: the result rows, window-loss rows and settings
    (:data:`SETTINGS_FILE`) of finished runs (kept, not rerun); kept rows of a (dataset, model) made with other
    settings than this invocation's are refused (:func:`check_kept_settings`), and those made by other code or
    libraries warned about (:func:`check_kept_provenance`). ``overwrite``: clear ``out``'s results when the first
    new one is written (a run that fails before keeps them)."""
    loaded = {}
    for dataset in bench.datasets:
        try:
            data = dataset.cls(**instantiate(dataset.init_args)).load()
            loaded[dataset.name] = validation_split(data) if bench.split == "validation" else data
        except (TypeError, ValueError) as error:
            raise ValueError(f"dataset {dataset.name!r}: {error}") from error
    # rows name the split, so a validation run never counts as (or resumes) a test run
    label = {d.name: d.name if bench.split == "test" else f"{d.name}_{bench.split}" for d in bench.datasets}
    pairs = {(label[d.name], m.name): (m, d) for d in bench.datasets for m in bench.models if m.runs_on(d.name)}
    current = {}
    for key, (model, dataset) in pairs.items():  # everything constructible before the first run trains
        build_model(model, dataset, loaded[dataset.name], bench, quick=quick)
        current[key] = settings_of(model, dataset, loaded[dataset.name], bench, quick)
    rows, windows = list(done or []), list(done_windows or [])
    kept = dict(done_settings or {})

    def flip_quick(key: tuple[str, str]) -> dict[str, Any]:
        model, dataset = pairs[key]
        return settings_of(model, dataset, loaded[dataset.name], bench, not quick)

    check_kept_settings(rows, current, kept, out, quick, flip_quick)
    check_kept_provenance(rows, provenance(), out)
    covariates = {
        key: covariates_of(model, dataset, loaded[dataset.name], bench) for key, (model, dataset) in pairs.items()
    }
    for row in rows:  # kept rows from before the column: the model's class and arguments decide it, as now
        if not row.get("covariates") and (row["dataset"], row["model"]) in covariates:
            row["covariates"] = covariates[row["dataset"], row["model"]]
    settings = kept | {fingerprint(own): own for own in current.values()}
    finished = {(row["dataset"], row["model"], row["seed"]) for row in rows}
    todo = [(d, m, s) for d in bench.datasets for m in bench.models if m.runs_on(d.name) for s in bench.seeds]
    todo = [(d, m, s) for d, m, s in todo if (label[d.name], m.name, s) not in finished]
    print(f"{len(todo)} runs to do, {len(finished)} finished runs kept", flush=True)
    for index, (dataset, model, seed) in enumerate(todo, 1):
        data = loaded[dataset.name]
        row, forecasts = run_one(model, dataset, data, seed, bench, quick=quick)
        row["dataset"] = label[dataset.name]
        row["settings"] = fingerprint(current[row["dataset"], model.name])
        rows.append(row)
        windows += window_rows(
            row["dataset"], model.name, seed, *window_quantile_losses(forecasts, data.test, data.prediction_length)
        )
        if overwrite and index == 1:
            clear_output(out)
        save_results(rows, windows, out, bench, quick, settings)
        print(f"[{index}/{len(todo)}] {row_line(row)}", flush=True)
        if seed == bench.seeds[0]:
            inputs, labels = split_windows(data.test, data.prediction_length)
            name = label[dataset.name]
            plot_path = out / "plots" / f"{name}__{model.name}.png"
            plot_forecasts(
                inputs,
                forecasts,
                plot_path,
                actuals=labels,
                title=f"{model.name} on {name}",
                num_series=bench.plot_series,
            )
    if rows and not todo:  # nothing ran: the tables still follow the kept rows (and the current code)
        save_results(rows, windows, out, bench, quick, settings)
    return rows, windows


def save_results(
    rows: list[dict[str, Any]],
    windows: list[dict[str, Any]],
    out: Path,
    bench: Benchmark,
    quick: bool,
    settings: dict[str, dict[str, Any]] | None = None,
) -> None:
    """:data:`SETTINGS_FILE` (the ``settings`` of the fingerprints ``rows`` name), ``window_losses.csv``,
    ``results.csv`` and ``results.md`` of ``rows`` and ``windows`` in ``out`` (made if need be), each replaced
    whole in one step (:func:`~pararnn_ts.forecast.csv_rows.write_text`). ``results.csv`` comes after the files
    it refers to: a run killed between two of them leaves a ``results.csv`` whose settings are on record, and
    window losses of a run it lacks, which a ``--resume`` drops (:func:`prepare_output`)."""
    named = {row.get("settings") for row in rows}
    recorded = {key: value for key, value in (settings or {}).items() if key in named}
    csv_rows.write_text(out / SETTINGS_FILE, json.dumps(recorded, indent=1, sort_keys=True) + "\n")
    if windows:  # none for results kept from before window losses were recorded
        write_window_rows(windows, out / "window_losses.csv")
    write_rows(rows, out / "results.csv")
    csv_rows.write_text(out / "results.md", results_markdown(rows, windows, bench, quick))


def positive_int(text: str) -> int:
    """An argparse type: an int > 0 (argparse's error names the flag)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        allow_abbrev=False,  # a misspelt option must not pass for another one
        prog="pararnn-ts benchmark",
        description="Train, forecast and score every dataset × model × seed of a benchmark config.",
    )
    parser.add_argument("--config", required=True, help="YAML with a top-level 'benchmark:' mapping")
    parser.add_argument(
        "--output-dir",
        default="runs/forecast_benchmark",
        help="where results and plots go (default: %(default)s); a folder that is not empty is refused unless "
        "--resume or --overwrite is given",
    )
    parser.add_argument("--seeds", type=int, nargs="+", help="override the config's seeds (each once)")
    parser.add_argument(
        "--threads", type=positive_int, help="torch intra-op threads, > 0 (overrides the config's threads)"
    )
    parser.add_argument("--datasets", nargs="+", help="run only these dataset names (each once)")
    parser.add_argument("--models", nargs="+", help="run only these model names (each once)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 1 epoch of 2 batches per deep model, first seed only (unless --seeds)",
    )
    parser.add_argument(
        "--split",
        choices=("test", "validation"),
        default="test",
        help="score on the official test windows, or on the same windows cut from the end of the training split "
        "(training then ends before them): for choosing settings without looking at test",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep finished runs of the output dir's results.csv (refused if they ran with other settings)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace the output dir's results and plots")
    parser.add_argument("--verbose", action="store_true", help="keep Lightning's and GluonTS's info logs")
    return parser.parse_args(argv)


@contextlib.contextmanager
def run_settings(threads: int | None, verbose: bool) -> Iterator[None]:
    """Torch threads and quiet logs for the runs; the caller's settings come back afterwards."""
    previous_threads = torch.get_num_threads()
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric", "gluonts")]
    previous_levels = [logger.level for logger in loggers]
    try:
        with warnings.catch_warnings():
            if threads:
                torch.set_num_threads(threads)
            if not verbose:
                for logger in loggers:
                    logger.setLevel(logging.WARNING)
                for category, message in QUIET_WARNINGS:
                    warnings.filterwarnings("ignore", message, category)
            yield
    finally:
        torch.set_num_threads(previous_threads)
        for logger, level in zip(loggers, previous_levels, strict=True):
            logger.setLevel(level)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Entry point of ``pararnn-ts benchmark``; returns the result rows."""
    args = parse_args(argv)
    if args.seeds:
        refuse_duplicates(args.seeds, "--seeds")
    bench = load_benchmark(args.config, args.datasets, args.models)
    if args.seeds:
        bench.seeds = args.seeds
    elif args.quick:
        bench.seeds = bench.seeds[:1]
    bench.threads = args.threads if args.threads is not None else bench.threads
    bench.split = args.split
    out = Path(args.output_dir)
    done, done_windows, done_settings = prepare_output(out, args.resume, args.overwrite)
    with run_settings(bench.threads, args.verbose):
        rows, windows = run_benchmark(bench, out, args.quick, done, done_windows, done_settings, args.overwrite)
        print(results_markdown(rows, windows, bench, args.quick))
    print(
        f"results: {out / 'results.csv'}, {out / 'results.md'}, {out / 'window_losses.csv'}, plots in {out / 'plots'}"
    )
    return rows


if __name__ == "__main__":  # python -m pararnn_ts.forecast.benchmark: the same command as pararnn-ts benchmark
    from ..cli import console

    console(["benchmark", *sys.argv[1:]])
