"""The benchmark's report: Markdown tables of mean ± std over seeds, the header that says how they ran (the seeds the
tables average, machines, threads, budget), and a † on the runs that went without covariates the dataset has."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .benchmark_config import QUICK_MODEL_ARGS, QUICK_TRAINER, TRAINER_DEFAULTS, Benchmark
from .metrics import METRICS
from .paired import paired_cells

TIMINGS = ("epoch_s", "fit_s")
#: the mark of a (dataset, model) whose runs left out covariates the dataset has (``covariates`` column "ignored: …")
NO_COVARIATES = "†"
TABLE_TITLES = {
    "MASE": "MASE (lower is better)",
    "mean_wQL": "mean_wQL (mean weighted quantile loss over q = 0.1…0.9, lower is better)",
    "sMAPE": "sMAPE (fraction, lower is better)",
    "coverage_80": "coverage_80 (share of actuals inside the 10–90% interval, best = closest to 0.8)",
    "epoch_s": "epoch_s (seconds per training epoch, trained models only)",
    "fit_s": "fit_s (seconds to train, trained models only)",
}


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
    ignored = ignored_covariates(rows)
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
            mark = NO_COVARIATES if (dataset, model) in ignored else ""
            return (f"**{text}**" if best_of(column, means) == model else text) + mark

        return table(TABLE_TITLES[column], datasets, shown, text_of)

    def ratio(dataset: str, model: str) -> str:
        base, own = stats.get(("epoch_s", dataset, reference)), stats.get(("epoch_s", dataset, model))
        return "—" if base is None or own is None else f"{own[0] / base[0]:.2f}"

    lines = [header, ""] if header else []
    for column in (*METRICS, *TIMINGS):
        lines += metric_table(column)
    if reference in trained:
        title = f"epoch time relative to {reference} (< 1 is faster; rows kept by --resume may be from other runs)"
        lines += table(title, datasets, trained, ratio)
    paired = paired_cells(windows or [], paired_reference) if paired_reference else {}
    if paired:
        title = (
            f"mean_wQL minus {paired_reference}'s, paired over the scored windows (difference of the means over seeds "
            "[95% two-level bootstrap interval]; < 0: lower than the reference)"
        )
        labels, compared = list(dict.fromkeys(d for d, _ in paired)), list(dict.fromkeys(m for _, m in paired))
        lines += table(title, labels, compared, lambda label, model: paired.get((label, model), "—"))
        lines += [PAIRED_METHOD, ""]
    if ignored:
        lines += [
            f"{NO_COVARIATES} ran without covariates the dataset has: the model cannot take them ("
            + "; ".join(f"{model} on {dataset}: {what}" for (dataset, model), what in ignored.items())
            + ").",
            "",
        ]
    return "\n".join(lines)


#: how the paired table's intervals are made (:func:`~pararnn_ts.forecast.paired.paired_difference`)
PAIRED_METHOD = (
    "Each interval is a two-level bootstrap: every draw resamples, with replacement, each model's seeds "
    "(independently) and the windows (the same windows for both models), and takes the difference of the two "
    "models' mean_wQL on that draw; the interval is the draws' 2.5 and 97.5 percentiles. It widens with how much "
    "the difference hangs on a few windows and with how much the seeds disagree. The row's label gives the windows "
    "and seeds behind it; a cell of fewer seeds says so."
)


def ignored_covariates(rows: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """``{(dataset, model): what}`` of the runs whose ``covariates`` column says they ignored some
    (``"ignored: feat_dynamic_real"``); rows from before that column record none."""
    marked = {}
    for row in rows:
        value = str(row.get("covariates") or "")
        if value.startswith("ignored"):
            marked[row["dataset"], row["model"]] = value.partition(":")[2].strip() or "covariates"
    return marked


def describe(bench: Benchmark, quick: bool, rows: list[dict[str, Any]]) -> str:
    """The results' header: the seeds the tables average (:func:`seeds_averaged`), the budget, and the machines
    and torch threads the ``rows`` record (a resumed file may hold rows of several runs; rows from before the
    ``cpu`` column count as "not recorded")."""
    trainer = {**TRAINER_DEFAULTS, **bench.trainer_kwargs, **(QUICK_TRAINER if quick else {})}
    model_args = {**bench.model_args, **(QUICK_MODEL_ARGS if quick else {})}
    cpus = sorted({row.get("cpu") or "not recorded" for row in rows})
    threads = sorted({int(row["threads"]) for row in rows})
    return (
        f"# Forecast benchmark{' (--quick smoke run)' if quick else ''}\n\n"
        f"split {bench.split}; {seeds_averaged(rows, bench.seeds)}; cpu {' / '.join(cpus)}; torch threads "
        f"{' / '.join(map(str, threads))}; max_epochs {trainer.get('max_epochs')}; "
        f"model_args {model_args}; per-dataset model_args "
        + "; ".join(f"{d.name} {d.model_args}" for d in bench.datasets if d.model_args)
    )


def seeds_averaged(rows: list[dict[str, Any]], asked: list[int]) -> str:
    """The seeds the tables average over, as the ``rows`` hold them (a ``--resume`` keeps rows of other seeds
    than this invocation ``asked`` for): ``"seeds [0, 1, 2]"`` when every (dataset, model) has the same, else
    per model (per model and dataset where a model's differ between datasets); ``asked`` is named when the
    rows hold others."""
    per_pair: dict[tuple[str, str], set[int]] = {}
    for row in rows:
        per_pair.setdefault((row.get("dataset", ""), row.get("model", "")), set()).add(int(row["seed"]))
    if not per_pair:
        return f"seeds {list(asked)}"
    groups: dict[tuple[int, ...], list[str]] = {}
    for model in dict.fromkeys(model for _, model in per_pair):
        own = {dataset: seeds for (dataset, name), seeds in per_pair.items() if name == model}
        if len({tuple(sorted(seeds)) for seeds in own.values()}) == 1:
            groups.setdefault(tuple(sorted(next(iter(own.values())))), []).append(model)
        else:
            for dataset, seeds in own.items():
                groups.setdefault(tuple(sorted(seeds)), []).append(f"{model} on {dataset}")
    every = sorted(set().union(*per_pair.values()))
    if len(groups) == 1:
        text = f"seeds {every}"
    else:
        text = "seeds averaged " + "; ".join(f"{list(seeds)} for {', '.join(names)}" for seeds, names in groups.items())
    return text if every == sorted(asked) else f"{text} (this invocation asked for {list(asked)})"


def results_markdown(rows: list[dict[str, Any]], windows: list[dict[str, Any]], bench: Benchmark, quick: bool) -> str:
    return markdown_tables(rows, bench.timing_reference, describe(bench, quick, rows), windows, bench.paired_reference)
