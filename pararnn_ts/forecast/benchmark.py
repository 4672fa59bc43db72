"""Config-driven forecasting benchmark: every dataset × model × seed, trained, forecast, scored, timed.

    pararnn-ts benchmark --config experiments/forecast/benchmark.yaml --output-dir runs/forecast_benchmark
    python -m pararnn_ts.forecast.benchmark --config experiments/forecast/benchmark.yaml --quick --models DeepAR
    pararnn-ts benchmark --config experiments/forecast/validation.yaml --split validation --output-dir runs/val

The config (its format: :mod:`~pararnn_ts.forecast.benchmark_config`) names datasets, models and seeds;
every entry is checked (classes importable, arguments known, data valid, models constructible) before
any training starts. ``--split validation`` scores windows cut from the training split instead of the
test windows (:func:`~pararnn_ts.forecast.data.validation_split`), to choose settings. Results go to
``results.csv`` (one row per run, written as runs finish), ``results.md`` (mean ± std over seeds, best per
dataset in bold; with ``paired_reference``, each model's ``mean_wQL`` minus the reference's with an interval
from resampling the test windows, see :mod:`~pararnn_ts.forecast.paired`), ``window_losses.csv`` (each
run's share of ``mean_wQL`` per test window) and ``plots/<dataset>__<model>.png``
(:mod:`~pararnn_ts.forecast.benchmark_report`).
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import logging
import math
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
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
COLUMNS = ("dataset", "model", "seed", *METRICS, "fit_s", "epochs", "epoch_s", "predict_s", "threads", "cpu")


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
    from_data: dict[str, Any] = {
        "freq": data.freq,
        "prediction_length": data.prediction_length,
        "season_length": season_of(data),
        "num_feat_dynamic_real": data.num_feat_dynamic_real,
    }
    if data.cardinality:
        from_data |= {"cardinality": data.cardinality, "num_feat_static_cat": len(data.cardinality)}
    names = parameters(model.cls)
    layered = {**from_data, **bench.model_args, **dataset.model_args}
    kwargs = {key: value for key, value in layered.items() if key in names}
    kwargs |= model.init_args | model.overrides.get(dataset.name, {})
    if quick:
        kwargs |= {key: value for key, value in QUICK_MODEL_ARGS.items() if key in names}
    kwargs = instantiate(kwargs)
    if "trainer_kwargs" in names:
        trainer = {**TRAINER_DEFAULTS, **instantiate(bench.trainer_kwargs), **(kwargs.get("trainer_kwargs") or {})}
        trainer["callbacks"] = list(callbacks or []) + list(trainer.get("callbacks", []))
        trainer |= QUICK_TRAINER if quick else {}
        if root_dir is not None:
            trainer["default_root_dir"] = root_dir
        kwargs["trainer_kwargs"] = trainer
    try:
        return model.cls(**kwargs)
    except Exception as error:
        raise ValueError(
            f"model {model.name!r} on dataset {dataset.name!r}: {type(error).__name__}: {error}"
        ) from error


def run_one(
    model: ModelSpec, dataset: DatasetSpec, data: ForecastData, seed: int, bench: Benchmark, quick: bool = False
) -> tuple[dict[str, Any], list[Any]]:
    """Train (if ``model`` is an estimator), forecast every test window and score: the CSV row and forecasts."""
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
    forecasts = list(predictor.predict(inputs))
    predict_s = time.perf_counter() - started
    metrics = score(forecasts, data.test, data.prediction_length, season_of(data))
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
    }
    return row, forecasts


def read_rows(path: Path) -> list[dict[str, Any]]:
    return csv_rows.read_rows(path, ("seed", "epochs", "threads"), (*METRICS, "fit_s", "epoch_s", "predict_s"))


def write_rows(rows: list[dict[str, Any]], path: Path) -> None:
    csv_rows.write_rows(rows, path, COLUMNS)


def prepare_output(out: Path, resume: bool, overwrite: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Make ``out`` ready; return the result and window-loss rows of finished runs to keep (``resume``) or none."""
    if resume and overwrite:
        raise ValueError("--resume keeps earlier results and --overwrite deletes them: pass one of them")
    csv_path = out / "results.csv"
    if out.exists() and any(out.iterdir()) and not (resume or overwrite):
        raise FileExistsError(
            f"{out} is not empty; pass --resume to continue its runs, --overwrite to replace its results, "
            "or another --output-dir"
        )
    if overwrite:
        for name in ("results.csv", "results.md", "window_losses.csv"):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / "plots", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    if not (resume and csv_path.exists()):
        return [], []
    return read_rows(csv_path), read_window_rows(out / "window_losses.csv")


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
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Check every (dataset, model), then run the missing (dataset, model, seed) triples; return all result
    and window-loss rows.

    ``done`` and ``done_windows``: the result and window-loss rows of finished runs (kept, not rerun)."""
    loaded = {}
    for dataset in bench.datasets:
        try:
            data = dataset.cls(**instantiate(dataset.init_args)).load()
            loaded[dataset.name] = validation_split(data) if bench.split == "validation" else data
        except (TypeError, ValueError) as error:
            raise ValueError(f"dataset {dataset.name!r}: {error}") from error
    for dataset in bench.datasets:  # everything constructible before the first run trains
        for model in bench.models:
            if model.runs_on(dataset.name):
                build_model(model, dataset, loaded[dataset.name], bench, quick=quick)
    # rows name the split, so a validation run never counts as (or resumes) a test run
    label = {d.name: d.name if bench.split == "test" else f"{d.name}_{bench.split}" for d in bench.datasets}
    rows, windows = list(done or []), list(done_windows or [])
    finished = {(row["dataset"], row["model"], row["seed"]) for row in rows}
    todo = [(d, m, s) for d in bench.datasets for m in bench.models if m.runs_on(d.name) for s in bench.seeds]
    todo = [(d, m, s) for d, m, s in todo if (label[d.name], m.name, s) not in finished]
    print(f"{len(todo)} runs to do, {len(finished)} finished runs kept", flush=True)
    for index, (dataset, model, seed) in enumerate(todo, 1):
        data = loaded[dataset.name]
        row, forecasts = run_one(model, dataset, data, seed, bench, quick=quick)
        row["dataset"] = label[dataset.name]
        rows.append(row)
        windows += window_rows(
            row["dataset"], model.name, seed, *window_quantile_losses(forecasts, data.test, data.prediction_length)
        )
        save_results(rows, windows, out, bench, quick)
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
        save_results(rows, windows, out, bench, quick)
    return rows, windows


def save_results(
    rows: list[dict[str, Any]], windows: list[dict[str, Any]], out: Path, bench: Benchmark, quick: bool
) -> None:
    """``results.csv``, ``window_losses.csv`` and ``results.md`` of ``rows`` and ``windows`` in ``out``."""
    write_rows(rows, out / "results.csv")
    if windows:  # none for results kept from before window losses were recorded
        write_window_rows(windows, out / "window_losses.csv")
    (out / "results.md").write_text(results_markdown(rows, windows, bench, quick))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="pararnn-ts benchmark",
        description="Train, forecast and score every dataset × model × seed of a benchmark config.",
    )
    parser.add_argument("--config", required=True, help="YAML with a top-level 'benchmark:' mapping")
    parser.add_argument("--output-dir", default="runs/forecast_benchmark", help="where results and plots go")
    parser.add_argument("--seeds", type=int, nargs="+", help="override the config's seeds")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (overrides the config's threads)")
    parser.add_argument("--datasets", nargs="+", help="run only these dataset names")
    parser.add_argument("--models", nargs="+", help="run only these model names")
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
    parser.add_argument("--resume", action="store_true", help="keep finished runs of the output dir's results.csv")
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
    bench = load_benchmark(args.config, args.datasets, args.models)
    if args.seeds:
        bench.seeds = args.seeds
    elif args.quick:
        bench.seeds = bench.seeds[:1]
    bench.threads = args.threads or bench.threads
    bench.split = args.split
    out = Path(args.output_dir)
    done, done_windows = prepare_output(out, args.resume, args.overwrite)
    with run_settings(bench.threads, args.verbose):
        rows, windows = run_benchmark(bench, out, quick=args.quick, done=done, done_windows=done_windows)
        print(results_markdown(rows, windows, bench, args.quick))
    print(
        f"results: {out / 'results.csv'}, {out / 'results.md'}, {out / 'window_losses.csv'}, plots in {out / 'plots'}"
    )
    return rows
