"""Config-driven forecasting benchmark: every dataset × model × seed, trained, forecast, scored, timed.

    pararnn-ts benchmark --config experiments/forecast/benchmark.yaml --output-dir runs/forecast_benchmark
    python -m pararnn_ts.forecast.benchmark --config experiments/forecast/benchmark.yaml --quick --models DeepAR
    pararnn-ts benchmark --config experiments/forecast/validation.yaml --split validation --output-dir runs/val

The config's top-level ``benchmark:`` mapping holds::

    seeds: [0, 1, 2]
    trainer_kwargs: {max_epochs: 20, ...}   # every estimator's Lightning Trainer
    model_args: {batch_size: 32, ...}      # given to every model whose signature takes them
    timing_reference: DeepAR               # optional: epoch times are also reported relative to it
    paired_reference: DeepAR               # optional: mean_wQL differences to it, paired over test windows
    base: benchmark.yaml                   # optional: start from that config's mapping (path relative
                                           # to this file); the keys given here replace its keys
    datasets:                              # ForecastDataset specs
      - {name: tourism_monthly, class_path: pararnn_ts.forecast.data.FCompDataset,
         init_args: {collection: tourism, subset: monthly}, model_args: {context_length: 48}}
    models:                                # any GluonTS Estimator, or a Predictor that needs no training
      - {name: DeepAR, class_path: gluonts.torch.DeepAREstimator, init_args: {...},
         overrides: {vic_elec: {...}}, datasets: [vic_elec]}   # datasets: optional, default all

Each model gets, where its signature takes them: ``freq``, ``prediction_length``, ``season_length``,
``num_feat_dynamic_real``, ``cardinality``/``num_feat_static_cat`` from the data, then ``model_args``, the
dataset's ``model_args``, its own ``init_args`` and its ``overrides`` for the dataset (later ones win). An
``init_args`` value that is a ``{class_path, init_args}`` mapping is built too (e.g. ``distr_output``).
Every entry is checked (classes importable, arguments known, data valid, models constructible) before
any training starts. ``--split validation`` scores windows cut from the training split instead of the
test windows (:func:`~pararnn_ts.forecast.data.validation_split`), to choose settings. Results go to
``results.csv`` (one row per run, written as runs finish), ``results.md`` (mean ± std over seeds, best per
dataset in bold; with ``paired_reference``, each model's ``mean_wQL`` minus the reference's with an interval
from resampling the test windows, see :mod:`~pararnn_ts.forecast.paired`), ``window_losses.csv`` (each
run's share of ``mean_wQL`` per test window) and ``plots/<dataset>__<model>.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import logging
import math
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from lightning.pytorch import Callback, seed_everything

from . import csv_rows
from .data import ForecastData, ForecastDataset, seasonality_of, validation_split
from .metrics import METRICS, score, split_windows, window_quantile_losses
from .paired import paired_cells, read_window_rows, window_rows, write_window_rows

#: set from the data, never by the config
INJECTED = ("freq", "prediction_length")
#: the Trainer settings every estimator starts from (the config's ``trainer_kwargs`` win)
TRAINER_DEFAULTS: dict[str, Any] = {
    "accelerator": "cpu",
    "logger": False,
    "enable_progress_bar": False,
    "enable_model_summary": False,
}
#: ``--quick``: one epoch of two batches per deep model
QUICK_TRAINER = {"max_epochs": 1}
QUICK_MODEL_ARGS = {"num_batches_per_epoch": 2}
CONFIG_KEYS = {
    "seeds",
    "threads",
    "trainer_kwargs",
    "model_args",
    "timing_reference",
    "paired_reference",
    "plot_series",
    "datasets",
    "models",
}
#: library warnings repeated on every batch or run, silenced unless ``--verbose``
QUIET_WARNINGS = (
    (FutureWarning, ".*is deprecated and will be removed"),  # pandas, on GluonTS's period aliases ('M')
    (UserWarning, "Using a non-tuple sequence for multidimensional indexing"),  # gluonts.torch.util, newer torch
    (UserWarning, ".*no `val_dataloader`"),  # GluonTS modules define validation_step; the runner has no val split
    (Warning, r".*isinstance\(treespec, LeafSpec\)"),  # Lightning on newer torch
)
COLUMNS = ("dataset", "model", "seed", *METRICS, "fit_s", "epochs", "epoch_s", "predict_s", "threads")
TIMINGS = ("epoch_s", "fit_s")


@dataclass
class DatasetSpec:
    """A ``datasets:`` entry; ``model_args`` go to every model that takes them (e.g. ``context_length``)."""

    name: str
    cls: type
    init_args: dict[str, Any]
    model_args: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelSpec:
    """A ``models:`` entry; ``overrides`` maps a dataset name to init args for that dataset only, and
    ``datasets`` names the only datasets it runs on (``None``: all)."""

    name: str
    cls: type
    init_args: dict[str, Any]
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    datasets: list[str] | None = None

    def runs_on(self, dataset: str) -> bool:
        return self.datasets is None or dataset in self.datasets

    @property
    def trains(self) -> bool:
        from gluonts.model.estimator import Estimator

        return issubclass(self.cls, Estimator)


@dataclass
class Benchmark:
    """A checked config: what to run and how."""

    datasets: list[DatasetSpec]
    models: list[ModelSpec]
    seeds: list[int]
    trainer_kwargs: dict[str, Any]
    model_args: dict[str, Any]
    timing_reference: str | None = None
    plot_series: int = 4
    threads: int | None = None
    #: ``"test"``: the official split; ``"validation"``: its training part cut the same way
    #: (:func:`~pararnn_ts.forecast.data.validation_split`), to choose settings without looking at test
    split: str = "test"
    #: the model ``results.md`` compares every other model's ``mean_wQL`` with, window by window
    paired_reference: str | None = None


class EpochTimer(Callback):
    """Records the wall time of every training epoch (``durations``, seconds)."""

    def __init__(self) -> None:
        self.durations: list[float] = []
        self.started = 0.0

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self.started = time.perf_counter()

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self.durations.append(time.perf_counter() - self.started)


def import_class(path: Any, where: str) -> type:
    if not isinstance(path, str) or "." not in path:
        raise ValueError(f"{where}: class_path must be a dotted path such as 'gluonts.torch.DeepAREstimator'")
    module_name, _, name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as error:
        raise ValueError(
            f"{where}: cannot import {path!r} ({type(error).__name__}: {error}); fix the class_path, install "
            "what it needs, or leave the entry out with --models / --datasets"
        ) from None
    if not inspect.isclass(cls):
        raise ValueError(f"{where}: {path!r} is not a class")
    return cls


def parameters(cls: type) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(cls.__init__).parameters)


def takes_any(cls: type) -> bool:
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters(cls).values())


def accepts(cls: type, name: str) -> bool:
    return name in parameters(cls) or takes_any(cls)


def check_args(cls: type, args: dict[str, Any], where: str, fixed_names: tuple[str, ...] = ()) -> None:
    """``args`` must all be ``cls``'s arguments and leave out ``fixed_names`` (set by the runner)."""
    if not isinstance(args, dict):
        raise ValueError(f"{where}: init_args must be a mapping, got {type(args).__name__}")
    fixed = sorted(set(args) & set(fixed_names))
    if fixed:
        raise ValueError(f"{where}: {fixed} come from the dataset; remove them from the config")
    unknown = sorted(name for name in args if not accepts(cls, name))
    if unknown:
        known = sorted(n for n in parameters(cls) if n != "self")
        raise ValueError(f"{where}: {cls.__name__} takes no argument {unknown}; it takes {known}")


def instantiate(value: Any) -> Any:
    """Build ``{class_path, init_args}`` mappings (at any depth) into objects; other values pass through."""
    if isinstance(value, dict) and "class_path" in value:
        unknown = set(value) - {"class_path", "init_args"}
        if unknown:
            raise ValueError(f"{value['class_path']}: unknown keys {sorted(unknown)}; use class_path and init_args")
        cls = import_class(value["class_path"], value["class_path"])
        args = value.get("init_args") or {}
        check_args(cls, args, value["class_path"])
        return cls(**instantiate(args))
    if isinstance(value, dict):
        return {key: instantiate(item) for key, item in value.items()}
    if isinstance(value, list):
        return [instantiate(item) for item in value]
    return value


def entries_of(config: dict[str, Any], key: str, allowed: set[str], keep: list[str] | None) -> list[dict[str, Any]]:
    entries = config.get(key) or []
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ValueError(f"benchmark.{key} must be a list of mappings with name, class_path and init_args")
    for index, entry in enumerate(entries):
        where = f"benchmark.{key}[{index}]"
        unknown = set(entry) - allowed
        if unknown or "name" not in entry or "class_path" not in entry:
            raise ValueError(f"{where}: needs name and class_path; allowed keys {sorted(allowed)}")
    names = [entry["name"] for entry in entries]
    if len(set(names)) != len(names):
        raise ValueError(f"benchmark.{key}: names must be unique, got {names}")
    if keep is not None:
        missing = sorted(set(keep) - set(names))
        if missing:
            raise ValueError(f"--{key} {missing}: not in the config; it has {names}")
        entries = [entry for entry in entries if entry["name"] in keep]
    if not entries:
        raise ValueError(f"benchmark.{key}: nothing to run")
    return entries


def read_config(path: Path, inside: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The ``benchmark:`` mapping of ``path``, on top of its ``base`` config's mapping when it names one."""
    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, dict) or not isinstance(raw.get("benchmark"), dict):
        raise ValueError(f"{path}: a benchmark config holds a top-level 'benchmark:' mapping")
    config = dict(raw["benchmark"])
    base = config.pop("base", None)
    if base is None:
        return config
    base_path = (path.parent / str(base)).resolve()
    if base_path in inside + (path.resolve(),):
        raise ValueError(f"{path}: base {base!r} leads back to a config that names it as base")
    if not base_path.is_file():
        raise ValueError(f"{path}: base {base!r} is not a file (a base path is relative to the config's folder)")
    return {**read_config(base_path, inside + (path.resolve(),)), **config}


def load_benchmark(path: str | Path, datasets: list[str] | None = None, models: list[str] | None = None) -> Benchmark:
    """Read and check a benchmark config; ``datasets``/``models`` keep only the named entries."""
    config = read_config(Path(path))
    unknown = set(config) - CONFIG_KEYS
    if unknown:
        raise ValueError(f"{path}: unknown benchmark keys {sorted(unknown)}; allowed {sorted(CONFIG_KEYS)}")
    dataset_specs = []
    for entry in entries_of(config, "datasets", {"name", "class_path", "init_args", "model_args"}, datasets):
        where = f"dataset {entry['name']!r}"
        cls = import_class(entry["class_path"], where)
        if not issubclass(cls, ForecastDataset):
            raise ValueError(f"{where}: {cls.__name__} is not a pararnn_ts.forecast.data.ForecastDataset")
        check_args(cls, entry.get("init_args") or {}, where)
        dataset_specs.append(
            DatasetSpec(entry["name"], cls, entry.get("init_args") or {}, entry.get("model_args") or {})
        )
    model_specs = []
    for entry in entries_of(config, "models", {"name", "class_path", "init_args", "overrides", "datasets"}, models):
        model_specs.append(model_spec(entry, [d.name for d in dataset_specs], all_datasets=config["datasets"]))
    shared = config.get("model_args") or {}
    classes = importable_classes(config["models"])
    for where, args in [("benchmark.model_args", shared)] + [
        (f"dataset {d.name!r} model_args", d.model_args) for d in dataset_specs
    ]:
        check_shared_args(args, classes, where)
    seeds = config.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise ValueError(f"{path}: benchmark.seeds must be a non-empty list of ints, got {seeds!r}")
    threads = config.get("threads")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"{path}: benchmark.threads must be a positive int (torch intra-op threads), got {threads!r}")
    for key in ("timing_reference", "paired_reference"):
        if config.get(key) is not None and config[key] not in [m["name"] for m in config["models"]]:
            raise ValueError(f"{path}: {key} {config[key]!r} is not a model of the config")
    return Benchmark(
        dataset_specs,
        model_specs,
        seeds,
        config.get("trainer_kwargs") or {},
        shared,
        config.get("timing_reference"),
        int(config.get("plot_series", 4)),
        threads,
        paired_reference=config.get("paired_reference"),
    )


def model_spec(entry: dict[str, Any], dataset_names: list[str], all_datasets: list[dict[str, Any]]) -> ModelSpec:
    from gluonts.model.estimator import Estimator
    from gluonts.model.predictor import Predictor

    where = f"model {entry['name']!r}"
    cls = import_class(entry["class_path"], where)
    if not issubclass(cls, (Estimator, Predictor)):
        raise ValueError(f"{where}: {cls.__name__} is neither a GluonTS Estimator nor a Predictor")
    init_args = entry.get("init_args") or {}
    check_args(cls, init_args, where, INJECTED)
    overrides = entry.get("overrides") or {}
    known = [d["name"] for d in all_datasets]
    for dataset, args in overrides.items():
        if dataset not in known:
            raise ValueError(f"{where}: overrides for unknown dataset {dataset!r}; the config has {known}")
        check_args(cls, args, f"{where} overrides[{dataset!r}]", INJECTED)
    only = entry.get("datasets")
    if only is not None:
        if not isinstance(only, list) or not only or not all(isinstance(d, str) for d in only):
            raise ValueError(f"{where}: datasets must be a non-empty list of dataset names, got {only!r}")
        unknown = [d for d in only if d not in known]
        if unknown:
            raise ValueError(f"{where}: datasets names unknown datasets {unknown}; the config has {known}")
    overrides = {k: v for k, v in overrides.items() if k in dataset_names}
    return ModelSpec(entry["name"], cls, init_args, overrides, only)


def importable_classes(entries: list[dict[str, Any]]) -> list[type] | None:
    """The classes of all the config's models, or ``None`` if one does not import (it may be filtered out)."""
    try:
        return [import_class(entry.get("class_path"), entry.get("name", "?")) for entry in entries]
    except ValueError:
        return None


def check_shared_args(args: dict[str, Any], classes: list[type] | None, where: str) -> None:
    """Arguments given to every model that takes them: each must be taken by some model of the config
    (not checked when ``classes`` is ``None``: a model that does not import may take it)."""
    if not isinstance(args, dict):
        raise ValueError(f"{where} must be a mapping")
    fixed = sorted(set(args) & set(INJECTED))
    if fixed:
        raise ValueError(f"{where}: {fixed} come from the dataset; remove them from the config")
    unused = [] if classes is None else sorted(n for n in args if not any(n in parameters(c) for c in classes))
    if unused:
        raise ValueError(f"{where}: no model of the config takes {unused}; fix the names or remove them")


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
    }
    return row, forecasts


def read_rows(path: Path) -> list[dict[str, Any]]:
    return csv_rows.read_rows(path, ("seed", "epochs", "threads"), (*METRICS, "fit_s", "epoch_s", "predict_s"))


def write_rows(rows: list[dict[str, Any]], path: Path) -> None:
    csv_rows.write_rows(rows, path, COLUMNS)


def summarise(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value) over seeds."""
    array = np.asarray(values, dtype=float)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


def best_of(column: str, means: dict[str, float]) -> str | None:
    """The model with the best mean: the lowest, or for ``coverage_80`` the closest to 0.8."""
    finite = {name: value for name, value in means.items() if math.isfinite(value)}
    if not finite:
        return None
    return min(finite, key=lambda name: abs(finite[name] - 0.8) if column == "coverage_80" else finite[name])


def table(title: str, datasets: list[str], models: list[str], text_of: Callable[[str, str], str]) -> list[str]:
    """A Markdown table, datasets × models, of ``text_of(dataset, model)``."""
    lines = [f"## {title}", "", "| dataset | " + " | ".join(models) + " |", "|---" * (len(models) + 1) + "|"]
    lines += [
        "| " + " | ".join([dataset] + [text_of(dataset, model) for model in models]) + " |" for dataset in datasets
    ]
    return lines + [""]


TABLE_TITLES = {
    "MASE": "MASE (lower is better)",
    "mean_wQL": "mean_wQL (mean weighted quantile loss over q = 0.1…0.9, lower is better)",
    "sMAPE": "sMAPE (fraction, lower is better)",
    "coverage_80": "coverage_80 (share of actuals inside the 10–90% interval, best = closest to 0.8)",
    "epoch_s": "epoch_s (seconds per training epoch, trained models only)",
    "fit_s": "fit_s (seconds to train, trained models only)",
}


def markdown_tables(
    rows: list[dict[str, Any]],
    reference: str | None = None,
    header: str = "",
    windows: list[dict[str, Any]] | None = None,
    paired_reference: str | None = None,
) -> str:
    """Mean ± std over seeds, one table per metric (datasets × models), the best per dataset in bold; with
    ``reference``, also each model's epoch time divided by the reference model's on the same dataset; with
    ``paired_reference``, also each model's ``mean_wQL`` minus that model's, paired over the ``windows`` rows
    (:func:`~pararnn_ts.forecast.paired.paired_cells`)."""
    datasets = list(dict.fromkeys(row["dataset"] for row in rows))
    models = list(dict.fromkeys(row["model"] for row in rows))
    trained = [model for model in models if any(row["model"] == model and row["epochs"] > 0 for row in rows)]
    stats: dict[tuple[str, str, str], tuple[float, float, int]] = {}
    for dataset in datasets:
        for model in models:
            runs = [row for row in rows if (row["dataset"], row["model"]) == (dataset, model)]
            for column in (*METRICS, *TIMINGS) if runs else ():
                stats[column, dataset, model] = (*summarise([row[column] for row in runs]), len(runs))

    def metric_table(column: str) -> list[str]:
        shown = trained if column in TIMINGS else models
        digits = 2 if column in TIMINGS else 3

        def text_of(dataset: str, model: str) -> str:
            if (column, dataset, model) not in stats:
                return "—"
            mean, std, runs = stats[column, dataset, model]
            means = {m: stats[column, dataset, m][0] for m in shown if (column, dataset, m) in stats}
            text = f"{mean:.{digits}f} ± {std:.{digits}f}" if runs > 1 else f"{mean:.{digits}f}"
            return f"**{text}**" if best_of(column, means) == model else text

        return table(TABLE_TITLES[column], datasets, shown, text_of)

    def ratio(dataset: str, model: str) -> str:
        base, own = stats.get(("epoch_s", dataset, reference)), stats.get(("epoch_s", dataset, model))
        return "—" if base is None or own is None else f"{own[0] / base[0]:.2f}"

    lines = [header, ""] if header else []
    for column in (*METRICS, *TIMINGS):
        lines += metric_table(column)
    if reference in trained:
        lines += table(f"epoch time relative to {reference} (same run; < 1 is faster)", datasets, trained, ratio)
    paired = paired_cells(windows or [], paired_reference) if paired_reference else {}
    if paired:
        title = (
            f"mean_wQL minus {paired_reference}'s, paired over the scored windows (mean over seeds [95% bootstrap "
            "interval from resampling the windows]; < 0: lower than the reference)"
        )
        labels, compared = list(dict.fromkeys(d for d, _ in paired)), list(dict.fromkeys(m for _, m in paired))
        lines += table(title, labels, compared, lambda label, model: paired.get((label, model), "—"))
    return "\n".join(lines)


def describe(bench: Benchmark, quick: bool) -> str:
    """The results' header: what budget and machine settings produced them."""
    trainer = {**TRAINER_DEFAULTS, **bench.trainer_kwargs, **(QUICK_TRAINER if quick else {})}
    model_args = {**bench.model_args, **(QUICK_MODEL_ARGS if quick else {})}
    return (
        f"# Forecast benchmark{' (--quick smoke run)' if quick else ''}\n\n"
        f"split {bench.split}; seeds {bench.seeds}; torch threads {torch.get_num_threads()}; "
        f"max_epochs {trainer.get('max_epochs')}; "
        f"model_args {model_args}; per-dataset model_args "
        + "; ".join(f"{d.name} {d.model_args}" for d in bench.datasets if d.model_args)
    )


def plot_forecasts(
    inputs: list[dict[str, Any]], labels: np.ndarray, forecasts: list[Any], path: Path, title: str, series: int = 4
) -> None:
    """The first ``series`` test windows: recent history, actuals, median and 80% band of the forecast."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = min(series, len(forecasts))
    figure, axes = plt.subplots(count, 1, figsize=(9, 2.4 * count), squeeze=False)
    for ax, entry, label, forecast in zip(axes[:, 0], inputs[:count], labels[:count], forecasts[:count], strict=True):
        horizon = len(label)
        history = np.asarray(entry["target"])[-3 * horizon :]
        past = np.arange(-len(history), 0)
        future = np.arange(horizon)
        ax.plot(past, history, color="black", lw=1)
        ax.plot(future, label, color="black", lw=1, ls="--", label="actual")
        ax.plot(future, forecast.quantile(0.5), color="C0", lw=1.2, label="median")
        ax.fill_between(future, forecast.quantile(0.1), forecast.quantile(0.9), color="C0", alpha=0.3, label="80%")
        ax.set_title(f"{entry['item_id']} from {forecast.start_date}", fontsize=9)
    axes[0, 0].legend(loc="upper left", fontsize=8)
    axes[-1, 0].set_xlabel("steps (0 = first forecast step)")
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)


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
            plot_forecasts(inputs, labels, forecasts, plot_path, f"{model.name} on {name}", bench.plot_series)
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


def results_markdown(rows: list[dict[str, Any]], windows: list[dict[str, Any]], bench: Benchmark, quick: bool) -> str:
    return markdown_tables(rows, bench.timing_reference, describe(bench, quick), windows, bench.paired_reference)


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


if __name__ == "__main__":
    main()
