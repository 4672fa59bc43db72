"""The benchmark's config: read, checked and turned into a :class:`Benchmark` before anything trains.

The config's top-level ``benchmark:`` mapping holds::

    seeds: [0, 1, 2]
    trainer_kwargs: {max_epochs: 20, ...}   # every estimator's Lightning Trainer
    model_args: {batch_size: 32, ...}      # given to every model whose signature takes them
    timing_reference: DeepAR               # optional: epoch times are also reported relative to it
    paired_reference: DeepAR               # optional: mean_wQL differences to it, paired over test windows
    num_samples: 1000                      # optional: sample paths of every predictor that takes num_samples
                                           # (default: each one's own, GluonTS's 100)
    base: benchmark.yaml                   # optional: start from that config's mapping (path relative
                                           # to this file); the keys given here replace its keys
    datasets:                              # ForecastDataset specs
      - {name: tourism_monthly, class_path: pararnn_ts.forecast.data.FCompDataset,
         init_args: {collection: tourism, subset: monthly}, model_args: {context_length: 48}}
    models:                                # any GluonTS Estimator, or a Predictor that needs no training
      - {name: DeepAR, class_path: gluonts.torch.DeepAREstimator, init_args: {...},
         overrides: {vic_elec: {...}}, datasets: [vic_elec]}   # datasets: optional, default all

Each model gets, where its signature takes them: ``freq``, ``prediction_length``, ``season_length``,
``num_feat_dynamic_real``, ``cardinality``/``num_feat_static_cat``, ``num_feat_static_real`` (when the data has
static reals) from the data, then ``model_args``, the dataset's ``model_args``, its own ``init_args`` and its
``overrides`` for the dataset (later ones win). An ``init_args`` value that is a ``{class_path, init_args}``
mapping is built too (e.g. ``distr_output``; :func:`~pararnn_ts.forecast.benchmark.build_model` does the
layering). :func:`load_benchmark` checks every entry (classes importable, arguments known, ``trainer_kwargs`` keys
taken by Lightning's ``Trainer``) before anything runs.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .data import ForecastDataset

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
    "num_samples",
    "plot_series",
    "datasets",
    "models",
}


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
    #: sample paths per forecast of every predictor whose ``predict`` takes ``num_samples`` (``None``: its own);
    #: more paths take the Monte Carlo error out of the sampled models' quantiles (ours are an exact grid)
    num_samples: int | None = None


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
        refuse_duplicates(keep, f"--{key}")
        missing = sorted(set(keep) - set(names))
        if missing:
            raise ValueError(f"--{key} {missing}: not in the config; it has {names}")
        entries = [entry for entry in entries if entry["name"] in keep]
    if not entries:
        raise ValueError(f"benchmark.{key}: nothing to run")
    return entries


def refuse_duplicates(values: list[Any], where: str) -> None:
    """Refuse a list that names something twice (``--seeds 0 0`` would run seed 0 twice and report two seeds)."""
    repeated = sorted({value for value in values if values.count(value) > 1}, key=str)
    if repeated:
        raise ValueError(
            f"{where} {list(values)}: {', '.join(map(repr, repeated))} given more than once; name each once"
        )


def read_config(path: Path, inside: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The ``benchmark:`` mapping of ``path``, on top of its ``base`` config's mapping when it names one."""
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise ValueError(f"benchmark config {str(path)!r} {what}; give --config the path of a benchmark YAML file")
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
        if args.get("trainer_kwargs") is not None:
            check_trainer_kwargs(args["trainer_kwargs"], f"{where} trainer_kwargs")
    trainer_kwargs = config.get("trainer_kwargs") or {}
    check_trainer_kwargs(trainer_kwargs, "benchmark.trainer_kwargs")
    seeds = config.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise ValueError(f"{path}: benchmark.seeds must be a non-empty list of ints, got {seeds!r}")
    refuse_duplicates(seeds, f"{path}: benchmark.seeds")
    threads = config.get("threads")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"{path}: benchmark.threads must be a positive int (torch intra-op threads), got {threads!r}")
    num_samples = config.get("num_samples")
    if num_samples is not None and (type(num_samples) is not int or num_samples < 1):
        raise ValueError(f"{path}: benchmark.num_samples must be a positive int (sample paths), got {num_samples!r}")
    for key in ("timing_reference", "paired_reference"):
        if config.get(key) is not None and config[key] not in [m["name"] for m in config["models"]]:
            raise ValueError(f"{path}: {key} {config[key]!r} is not a model of the config")
    return Benchmark(
        dataset_specs,
        model_specs,
        seeds,
        trainer_kwargs,
        shared,
        config.get("timing_reference"),
        int(config.get("plot_series", 4)),
        threads,
        paired_reference=config.get("paired_reference"),
        num_samples=num_samples,
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
    if init_args.get("trainer_kwargs") is not None:
        check_trainer_kwargs(init_args["trainer_kwargs"], f"{where} init_args.trainer_kwargs")
    overrides = entry.get("overrides") or {}
    known = [d["name"] for d in all_datasets]
    for dataset, args in overrides.items():
        if dataset not in known:
            raise ValueError(f"{where}: overrides for unknown dataset {dataset!r}; the config has {known}")
        check_args(cls, args, f"{where} overrides[{dataset!r}]", INJECTED)
        if (args or {}).get("trainer_kwargs") is not None:
            check_trainer_kwargs(args["trainer_kwargs"], f"{where} overrides[{dataset!r}].trainer_kwargs")
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


def check_trainer_kwargs(args: Any, where: str) -> None:
    """``args`` must be a mapping of ``lightning.pytorch.Trainer``'s arguments (a typo would otherwise fail only
    when the first estimator trains, or never for a config of predictors)."""
    from lightning.pytorch import Trainer

    if not isinstance(args, dict):
        raise ValueError(f"{where} must be a mapping of lightning.pytorch.Trainer arguments, got {type(args).__name__}")
    if takes_any(Trainer):
        return
    known = sorted(n for n in parameters(Trainer) if n != "self")
    for name in sorted(args, key=str):
        if name in known:
            continue
        close = difflib.get_close_matches(str(name), known, n=3)
        named = ", ".join(map(repr, close[:-1])) + " or " * (len(close) > 1) + repr(close[-1]) if close else ""
        hint = f"did you mean {named}?" if close else f"it takes {known}"
        raise ValueError(
            f"{where}: lightning.pytorch.Trainer takes no argument {name!r} ({hint}); fix the name or remove it"
        )
