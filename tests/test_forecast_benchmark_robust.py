"""The benchmark runner when things go wrong or change: killed writes, damaged files, NaN forecasts, missing or
repeated arguments, other code on --resume; and what its rows and header record (provenance, covariates, seeds)."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_forecast_benchmark import ROOT, change_config, naive_config, read_csv, write_config

from pararnn_ts import cli
from pararnn_ts.forecast import benchmark, benchmark_config
from pararnn_ts.forecast.benchmark_report import describe

NAIVE = {"name": "SeasonalNaive", "class_path": "gluonts.model.seasonal_naive.SeasonalNaivePredictor"}


def run(config: str, out: Path, *more: str) -> list[dict]:
    return benchmark.main(["--config", config, "--output-dir", str(out), *more])


# 1. python -m pararnn_ts.forecast.benchmark


def test_python_dash_m_is_the_pararnn_ts_benchmark_command(tmp_path):
    """It did nothing and exited 0 (its ``__main__`` block was lost); now it runs the command, refusals included."""
    missing = tmp_path / "nope.yaml"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PARARNN_TS_TRACEBACK", None)
    done = subprocess.run(
        [sys.executable, "-m", "pararnn_ts.forecast.benchmark", "--config", str(missing), "--output-dir", "x"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"error: benchmark config '{missing}' does not exist" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "x").exists()


# 2. atomic writes, damaged files


def test_a_run_killed_while_writing_results_keeps_the_earlier_rows_and_resumes(tmp_path, monkeypatch, count_runs):
    """A kill while ``results.csv`` is written (here: an interrupt inside the CSV writer, after the window losses of
    the run are written) leaves the file of the previous run; ``--resume`` reruns only the lost run, and drops the
    window losses of the run that ``results.csv`` does not hold instead of doubling them."""
    config, out = naive_config(tmp_path), tmp_path / "out"
    real = csv.DictWriter.writerows

    def killed(self, rows):
        rows = list(rows)
        if "mean_wQL" in self.fieldnames and len(rows) == 2:  # results.csv of the second run
            raise KeyboardInterrupt
        return real(self, rows)

    monkeypatch.setattr(csv.DictWriter, "writerows", killed)
    with pytest.raises(KeyboardInterrupt):
        run(config, out, "--seeds", "0", "1")
    monkeypatch.setattr(csv.DictWriter, "writerows", real)
    assert [row["seed"] for row in read_csv(out / "results.csv")] == ["0"]
    assert not list(out.glob(".*.tmp"))  # the temporary file is removed
    count_runs.clear()
    run(config, out, "--seeds", "0", "1", "--resume")
    assert count_runs == [("toy", "SeasonalNaive", 1)]
    windows = read_csv(out / "window_losses.csv")
    assert [(w["seed"], w["window"]) for w in windows] == [(s, str(w)) for s in "01" for w in range(4)]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda text: text[: text.rindex(",")], r"line 3: the row ends before column '\w+' \(the file was cut short"),
        (lambda text: text.replace(",0,", ",zero,", 1), r"line 2: column 'seed' is 'zero', not an int"),
        (lambda text: text.rstrip("\n") + ",1,2\n", r"line 3: \d+ fields, the header has \d+"),
        (lambda text: "", r"no header \(an empty file\)"),
    ],
    ids=["truncated", "unparsable", "extra-fields", "empty"],
)
def test_resume_refuses_a_damaged_results_file_naming_it_and_the_row(tmp_path, count_runs, damage, message):
    config, out = naive_config(tmp_path), tmp_path / "out"
    run(config, out, "--seeds", "0", "1")
    path = out / "results.csv"
    path.write_text(damage(path.read_text()))
    count_runs.clear()
    with pytest.raises(ValueError, match=f"{re.escape(str(path))}(, |: ){message}.*--overwrite"):
        run(config, out, "--seeds", "0", "1", "--resume")
    assert count_runs == []


def test_result_files_are_written_as_a_plain_write_would_make_them(tmp_path):
    from pararnn_ts.forecast.csv_rows import write_text

    (tmp_path / "plain").write_text("x")
    write_text(tmp_path / "atomic", "x")
    assert (tmp_path / "atomic").stat().st_mode == (tmp_path / "plain").stat().st_mode
    assert (tmp_path / "atomic").read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == [
        "atomic",
        "plain",
    ]


# 3. provenance


def git(folder: Path, *args: str) -> str:
    command = ["git", "-c", "user.email=a@b", "-c", "user.name=a", "-C", str(folder), *args]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()


def test_code_commit_names_the_checkout_marks_a_dirty_tree_and_is_unknown_elsewhere(tmp_path):
    assert benchmark.code_commit(tmp_path) == "unknown"  # not a git checkout
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "code.py").write_text("a = 1\n")
    git(repo, "add", "code.py")
    git(repo, "commit", "-q", "-m", "x")
    sha = git(repo, "rev-parse", "HEAD")
    assert benchmark.code_commit(repo) == sha
    (repo / "untracked.txt").write_text("not code")
    assert benchmark.code_commit(repo) == sha
    (repo / "code.py").write_text("a = 2\n")
    first = benchmark.code_commit(repo)
    (repo / "code.py").write_text("a = 3\n")
    assert first.startswith(f"{sha}+dirty.") and benchmark.code_commit(repo).startswith(f"{sha}+dirty.")
    assert benchmark.code_commit(repo) != first  # two edited trees are told apart
    (repo / "inner").mkdir()
    assert benchmark.code_commit(repo / "inner") == "unknown"  # inside a checkout that is not the package's


def test_rows_record_the_commit_and_library_versions_and_resume_warns_about_other_code(
    tmp_path, monkeypatch, count_runs
):
    import gluonts
    import lightning
    import torch

    config, out = naive_config(tmp_path), tmp_path / "out"
    run(config, out)
    (row,) = read_csv(out / "results.csv")
    now = benchmark.provenance()
    assert {key: row[key] for key in benchmark.PROVENANCE} == now
    assert (now["torch"], now["gluonts"], now["lightning"]) == (
        torch.__version__,
        gluonts.__version__,
        lightning.__version__,
    )
    assert now["commit"] == benchmark.code_commit(ROOT)

    other = {**now, "commit": "0123abc", "torch": "2.0.0"}
    monkeypatch.setattr(benchmark, "provenance", lambda: other)
    run(config, out, "--resume", "--seeds", "0", "1")  # the kept row is of this code: no warning
    monkeypatch.setattr(benchmark, "provenance", lambda: now)
    message = (
        r"(?s)--resume: 1 kept runs of .*results.csv were made by other code or libraries than this run "
        rf"\(commit {re.escape(now['commit'])}, torch .*\n  1 by commit 0123abc, torch 2.0.0$"
    )
    with pytest.warns(UserWarning, match=message):
        run(config, out, "--resume", "--seeds", "0", "1", "2")
    assert [r["commit"] for r in read_csv(out / "results.csv")] == [now["commit"], "0123abc", now["commit"]]


def test_kept_rows_from_before_the_provenance_columns_load_and_are_warned_about_once(tmp_path, count_runs):
    config, out = naive_config(tmp_path), tmp_path / "out"
    run(config, out)
    rows = read_csv(out / "results.csv")
    old_columns = [c for c in rows[0] if c not in (*benchmark.PROVENANCE, "covariates")]
    with (out / "results.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, old_columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    with pytest.warns(UserWarning) as caught:
        run(config, out, "--resume", "--seeds", "0", "1")
    messages = [str(w.message) for w in caught if "record no commit or library versions" in str(w.message)]
    assert len(messages) == 1 and messages[0].startswith("--resume: 1 kept runs of")
    kept, new = read_csv(out / "results.csv")
    assert kept["commit"] == "" and new["commit"] == benchmark.provenance()["commit"]
    assert kept["covariates"] == new["covariates"] == "none"  # the model's class and data decide it


# 4. NaN forecasts


def test_a_nan_forecast_names_the_run_and_keeps_the_finished_rows(tmp_path, monkeypatch, count_runs):
    from gluonts.model.seasonal_naive import SeasonalNaivePredictor

    config, out = naive_config(tmp_path), tmp_path / "out"
    real = SeasonalNaivePredictor.predict
    calls = []

    def diverged(self, dataset, **kwargs):
        calls.append(1)
        for forecast in real(self, dataset, **kwargs):
            if len(calls) == 2:  # the second run, seed 1
                forecast.samples = np.full_like(forecast.samples, np.nan)
            yield forecast

    monkeypatch.setattr(SeasonalNaivePredictor, "predict", diverged)
    with pytest.raises(ValueError, match=r"toy × SeasonalNaive seed 1: 4 of 4 forecasts contain NaN.*--resume"):
        run(config, out, "--seeds", "0", "1")
    assert [row["seed"] for row in read_csv(out / "results.csv")] == ["0"]
    monkeypatch.setattr(SeasonalNaivePredictor, "predict", real)
    count_runs.clear()
    run(config, out, "--seeds", "0", "1", "--resume")
    assert count_runs == [("toy", "SeasonalNaive", 1)]


# 5. the seeds the header names


def test_the_header_names_the_seeds_the_tables_average(tmp_path, count_runs):
    config, out = naive_config(tmp_path), tmp_path / "out"
    run(config, out, "--seeds", "0", "1")
    run(config, out, "--resume", "--seeds", "0")
    assert count_runs == [("toy", "SeasonalNaive", 0), ("toy", "SeasonalNaive", 1)]
    assert "split test; seeds [0, 1] (this invocation asked for [0]); cpu" in (out / "results.md").read_text()

    bench = benchmark_config.load_benchmark(config)
    bench.seeds = [0, 1]
    rows = [
        {"dataset": d, "model": m, "seed": s, "threads": 1}
        for d, m, seeds in [
            ("a", "M", (0, 1)),
            ("b", "M", (0, 1)),
            ("a", "N", (0,)),
            ("a", "P", (0, 1)),
            ("b", "P", (1,)),
        ]
        for s in seeds
    ]
    assert "split test; seeds averaged [0, 1] for M, P on a; [0] for N; [1] for P on b; cpu" in describe(
        bench, False, rows
    )
    assert "split test; seeds [0, 1]; cpu" in describe(bench, False, [r for r in rows if r["model"] == "M"])


# 6. repeated seeds, models, datasets


@pytest.mark.parametrize(
    ("more", "message"),
    [
        (["--seeds", "0", "1", "0"], r"--seeds \[0, 1, 0\]: 0 given more than once"),
        (["--models", "SeasonalNaive", "SeasonalNaive"], r"--models \['SeasonalNaive', 'SeasonalNaive'\]: "),
        (["--datasets", "toy", "toy"], r"--datasets \['toy', 'toy'\]: 'toy' given more than once"),
    ],
    ids=["seeds", "models", "datasets"],
)
def test_repeated_seeds_models_or_datasets_are_refused(tmp_path, count_runs, more, message):
    config, out = naive_config(tmp_path), tmp_path / "out"
    with pytest.raises(ValueError, match=message):
        run(config, out, *more)
    assert count_runs == [] and not out.exists()


def test_repeated_config_seeds_are_refused(tmp_path):
    config = naive_config(tmp_path)
    change_config(config, seeds=[0, 0])
    with pytest.raises(ValueError, match=r"benchmark.seeds \[0, 0\]: 0 given more than once"):
        benchmark_config.load_benchmark(config)


# 7. a missing config


def test_a_missing_config_is_one_line_naming_it(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(cli.TRACEBACK_ENV, raising=False)
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ValueError, match=f"benchmark config '{missing}' does not exist"):
        benchmark_config.load_benchmark(missing)
    with pytest.raises(ValueError, match=f"benchmark config '{tmp_path}' is a folder"):
        benchmark_config.load_benchmark(tmp_path)
    with pytest.raises(SystemExit) as exited:
        cli.console(["benchmark", "--config", str(missing), "--output-dir", str(tmp_path / "out")])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: benchmark config '{missing}' does not exist") and "Traceback" not in err


# 8. no output folder before the first result


def test_no_output_folder_is_made_when_the_data_fails_and_overwrite_keeps_results_until_a_new_one(tmp_path, count_runs):
    good = yaml.safe_load(Path(naive_config(tmp_path)).read_text())["benchmark"]["datasets"][0]
    bad = {**good, "name": "bad", "init_args": {**good["init_args"], "freq": "fortnightly"}}
    config, out = naive_config(tmp_path), tmp_path / "out"
    change_config(config, datasets=[good, bad])
    with pytest.raises(ValueError, match="dataset 'bad'"):
        run(config, out)
    assert not out.exists()
    run(config, out, "--datasets", "toy")
    before = (out / "results.csv").read_text()
    with pytest.raises(ValueError, match="dataset 'bad'"):
        run(config, out, "--overwrite")
    assert (out / "results.csv").read_text() == before and (out / "plots" / "toy__SeasonalNaive.png").exists()
    run(config, out, "--overwrite", "--datasets", "toy", "--seeds", "1")
    assert [row["seed"] for row in read_csv(out / "results.csv")] == ["1"]


# 9. the ParaRNN kernels are built before the fit is timed


PARA = {
    "name": "ParaGRU",
    "class_path": "pararnn_ts.forecast.ParaRNNEstimator",
    "init_args": {"cell": "gru", "hidden_size": 8, "num_layers": 1, "num_parallel_samples": 10},
}


def test_the_kernel_build_is_not_counted_in_the_first_fit(tmp_path, monkeypatch, count_runs):
    """A fresh install builds the fused CPU kernels on their first use (about 30 s, here 3 s of sleep): that
    happens before the fit's clock starts, and only when a ParaRNN forecaster is in the run."""
    from pararnn_ts.ops import cpu

    built = []
    real = cpu._build

    def slow_build():
        built.append(time.perf_counter())
        time.sleep(3)
        return real()

    monkeypatch.setattr(cpu, "_extension", None)
    monkeypatch.setattr(cpu, "_failure", None)
    monkeypatch.setattr(cpu, "_build", slow_build)
    run(naive_config(tmp_path), tmp_path / "naive")
    assert built == []  # no ParaRNN model: nothing built

    config = write_config(tmp_path, models=[PARA])
    (row,) = run(config, tmp_path / "out")
    assert len(built) == 1 and 0 < row["fit_s"] < 3, row["fit_s"]


# 11. models that cannot take the dataset's covariates


def covariate_config(folder: Path) -> str:
    """The toy dataset with one dynamic real feature per series."""
    config = naive_config(folder)
    toy = yaml.safe_load(Path(config).read_text())["benchmark"]["datasets"][0]
    path = folder / "covariates.jsonl"
    with path.open("w") as file:
        for line in Path(toy["init_args"]["path"]).read_text().splitlines():
            series = json.loads(line)
            series["feat_dynamic_real"] = [np.linspace(0, 1, len(series["target"])).round(3).tolist()]
            file.write(json.dumps(series) + "\n")
    change_config(config, datasets=[{**toy, "init_args": {**toy["init_args"], "path": str(path)}}])
    return config


def test_a_model_that_cannot_take_the_covariates_is_marked(tmp_path, count_runs):
    out = tmp_path / "out"
    run(covariate_config(tmp_path), out)
    (row,) = read_csv(out / "results.csv")
    assert row["covariates"] == "ignored: feat_dynamic_real"
    markdown = (out / "results.md").read_text()
    assert "| toy | **" in markdown and "**†" in markdown
    assert "† ran without covariates the dataset has: the model cannot take them (SeasonalNaive on toy: " in markdown


def test_covariates_used_or_ignored_by_the_benchmark_models_on_vic_elec(tmp_path):
    """On vic_elec's two dynamic reals: DLinear and SimpleFeedForward take none, TFT takes them through its
    override (dynamic_dims), DeepAR, PatchTST and ours through num_feat_dynamic_real; static features likewise."""
    bench = benchmark_config.load_benchmark(ROOT / "experiments" / "forecast" / "benchmark.yaml")
    vic_elec = next(d for d in bench.datasets if d.name == "vic_elec")
    toy = yaml.safe_load(Path(write_config(tmp_path)).read_text())["benchmark"]["datasets"][0]
    data = benchmark_config.DatasetSpec("toy", benchmark_config.import_class(toy["class_path"], "toy"), {})
    data = data.cls(**toy["init_args"]).load()
    covariates = {
        model.name: benchmark.covariates_of(model, vic_elec, dataclasses.replace(data, num_feat_dynamic_real=2), bench)
        for model in bench.models
    }
    assert covariates["DLinear"] == covariates["SimpleFeedForward"] == "ignored: feat_dynamic_real"
    assert covariates["SeasonalNaive"] == "ignored: feat_dynamic_real"
    assert {covariates[m] for m in ("DeepAR", "PatchTST", "TFT", "ParaGRU", "ParaLSTM")} == {"used"}
    pedestrian = next(d for d in bench.datasets if d.name == "pedestrian")
    tft = next(m for m in bench.models if m.name == "TFT")
    assert benchmark.covariates_of(tft, pedestrian, dataclasses.replace(data, num_feat_dynamic_real=2), bench) == (
        "ignored: feat_dynamic_real"  # no dynamic_dims override there
    )
    static = dataclasses.replace(data, cardinality=[3], num_feat_static_real=1)
    deepar = next(m for m in bench.models if m.name == "DeepAR")
    assert benchmark.covariates_of(deepar, pedestrian, static, bench) == "used"
    assert benchmark.covariates_of(tft, pedestrian, static, bench) == "ignored: feat_static_cat, feat_static_real"
    assert benchmark.covariates_of(deepar, pedestrian, data, bench) == "none"
