"""Forecast metrics against direct formulas, and the benchmark runner end to end on a tiny JSON lines dataset."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pararnn_ts.forecast import benchmark, benchmark_config
from pararnn_ts.forecast.benchmark_config import load_benchmark
from pararnn_ts.forecast.benchmark_report import describe
from pararnn_ts.forecast.data import JsonLinesDataset
from pararnn_ts.forecast.metrics import score, split_windows, window_quantile_losses
from pararnn_ts.outputs import cpu_name

ROOT = Path(__file__).resolve().parents[1]
NAIVE = "gluonts.model.seasonal_naive.SeasonalNaivePredictor"
QUANTILES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def pinball(y: np.ndarray, prediction: np.ndarray, q: float) -> np.ndarray:
    """Twice the pinball loss, written by cases (GluonTS writes it as one product)."""
    return 2 * np.where(y >= prediction, q * (y - prediction), (1 - q) * (prediction - y))


def reference_scores(inputs: list[np.ndarray], labels: np.ndarray, quantiles: dict[float, np.ndarray], season: int):
    """The four metrics by their textbook formulas, over the observed (non-NaN) actuals: MASE, sMAPE and coverage
    averaged per window, then over the windows (as GluonTS's ``Evaluator``), wQL a ratio of sums."""
    observed = ~np.isnan(labels)
    scale = np.array([np.mean(np.abs(x[season:] - x[:-season])) for x in inputs])[:, None]
    y, median = labels[observed], quantiles[0.5]

    def window_mean(points: np.ndarray) -> float:
        return np.mean([row[seen].mean() for row, seen in zip(points, observed, strict=True)])

    return {
        "MASE": window_mean(np.abs(labels - median) / scale),
        "mean_wQL": np.mean([pinball(y, quantiles[q][observed], q).sum() / np.abs(y).sum() for q in QUANTILES]),
        "sMAPE": window_mean(2 * np.abs(labels - median) / (np.abs(labels) + np.abs(median))),
        "coverage_80": window_mean((quantiles[0.1] <= labels) & (labels <= quantiles[0.9])),
    }


def hand_built_forecasts():
    """Two windows of quantile forecasts (one actual missing, one on the interval's edge): ``(forecasts, entries,
    horizon, season, history, labels, quantiles)``, ``quantiles`` ``{q: (2, horizon)}``."""
    from gluonts.model.forecast import QuantileForecast

    rng = np.random.default_rng(0)
    horizon, season = 4, 3
    history = [rng.uniform(5, 15, 12), rng.uniform(50, 80, 9)]
    labels = np.array([[10.0, 12.0, np.nan, 9.0], [60.0, 55.0, 70.0, 65.0]])
    spread = np.linspace(-2, 2, len(QUANTILES))[:, None]
    centres = np.array([[11.0, 11.0, 11.0, 11.0], [62.0, 58.0, 66.0, 64.0]])
    arrays = [centres[i] + (1 + i) * 3 * spread for i in range(2)]
    arrays[0][0, 3] = 9.0  # an actual exactly on the interval's lower edge counts as inside
    start = pd.Period("2020-01", freq="M")
    entries = [
        {"start": start, "target": np.concatenate([h, y]).astype(np.float32), "item_id": str(i)}
        for i, (h, y) in enumerate(zip(history, labels, strict=True))
    ]
    forecasts = [
        QuantileForecast(a, start_date=start + len(h), forecast_keys=[str(q) for q in QUANTILES])
        for a, h in zip(arrays, history, strict=True)
    ]
    quantiles = {q: np.stack([a[k] for a in arrays]) for k, q in enumerate(QUANTILES)}
    return forecasts, entries, horizon, season, history, labels, quantiles


def test_score_matches_the_formulas_on_a_hand_built_forecast():
    forecasts, entries, horizon, season, history, labels, quantiles = hand_built_forecasts()
    got = score(forecasts, entries, horizon, season)
    inputs = [h.astype(np.float32).astype(np.float64) for h in history]
    want = reference_scores(inputs, labels.astype(np.float32).astype(np.float64), quantiles, season)
    assert got.keys() == want.keys()
    for name in want:
        assert got[name] == pytest.approx(want[name], rel=1e-6), name


def test_window_losses_are_each_windows_share_of_mean_wql():
    forecasts, entries, horizon, season, _, labels, quantiles = hand_built_forecasts()
    loss, size = window_quantile_losses(forecasts, entries, horizon)
    labels = labels.astype(np.float32).astype(np.float64)
    for window in range(2):
        observed = ~np.isnan(labels[window])
        y = labels[window][observed]
        want = np.mean([pinball(y, quantiles[q][window][observed], q).sum() for q in QUANTILES])
        assert loss[window] == pytest.approx(want, rel=1e-6)
        assert size[window] == pytest.approx(np.abs(y).sum(), rel=1e-6)
    assert loss.sum() / size.sum() == pytest.approx(score(forecasts, entries, horizon, season)["mean_wQL"], rel=1e-6)


def test_seasonal_naive_scores_match_a_direct_computation(tmp_path):
    from gluonts.model.seasonal_naive import SeasonalNaivePredictor

    data = JsonLinesDataset(synthetic_jsonl(tmp_path), "D", 7, seasonality=7).load()
    inputs, labels = split_windows(data.test, 7)
    forecasts = list(SeasonalNaivePredictor(prediction_length=7, season_length=7).predict(inputs))
    got = score(forecasts, data.test, 7, 7)
    naive = np.stack([entry["target"][-7:] for entry in inputs]).astype(np.float64)
    history = [entry["target"].astype(np.float64) for entry in inputs]
    want = reference_scores(history, labels, dict.fromkeys(QUANTILES, naive), 7)
    for name in want:
        assert got[name] == pytest.approx(want[name], rel=1e-6), name


def test_score_refuses_mismatched_forecasts(tmp_path):
    from gluonts.model.seasonal_naive import SeasonalNaivePredictor

    data = JsonLinesDataset(synthetic_jsonl(tmp_path), "D", 7).load()
    inputs, _ = split_windows(data.test, 7)
    forecasts = list(SeasonalNaivePredictor(prediction_length=5, season_length=7).predict(inputs))
    with pytest.raises(ValueError, match="not prediction_length=7"):
        score(forecasts, data.test, 7, 7)
    with pytest.raises(ValueError, match="3 forecasts for 4 test windows"):
        score(forecasts[:3], data.test, 5, 7)


def synthetic_jsonl(folder: Path, count: int = 4, length: int = 40) -> str:
    rng = np.random.default_rng(1)
    path = folder / "toy.jsonl"
    with path.open("w") as file:
        for i in range(count):
            t = np.arange(length)
            target = 10 + i + 3 * np.sin(2 * np.pi * t / 7) + 0.3 * rng.standard_normal(length)
            file.write(
                json.dumps({"start": "2022-01-03", "target": target.round(3).tolist(), "item_id": f"s{i}"}) + "\n"
            )
    return str(path)


def write_config(folder: Path, seeds=(0,), models: list[dict] | None = None, datasets: list[dict] | None = None) -> str:
    toy = {
        "name": "toy",
        "class_path": "pararnn_ts.forecast.data.JsonLinesDataset",
        "init_args": {"path": synthetic_jsonl(folder), "freq": "D", "prediction_length": 7, "seasonality": 7},
        "model_args": {"context_length": 14},
    }
    default_models = [
        {"name": "SeasonalNaive", "class_path": "gluonts.model.seasonal_naive.SeasonalNaivePredictor"},
        {
            "name": "DeepAR",
            "class_path": "gluonts.torch.DeepAREstimator",
            "init_args": {"hidden_size": 4, "num_layers": 1, "lags_seq": [1, 7], "num_parallel_samples": 20},
        },
    ]
    config = {
        "benchmark": {
            "seeds": list(seeds),
            "threads": 1,
            "trainer_kwargs": {"max_epochs": 1},
            "model_args": {"batch_size": 4, "num_batches_per_epoch": 2},
            "datasets": datasets or [toy],
            "models": models or default_models,
        }
    }
    if any(model["name"] == "DeepAR" for model in config["benchmark"]["models"]):
        config["benchmark"]["timing_reference"] = "DeepAR"
        config["benchmark"]["paired_reference"] = "DeepAR"
    path = folder / "bench.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as file:
        return list(csv.DictReader(file))


def test_runner_end_to_end_then_resume_then_refuse_then_overwrite(tmp_path, count_runs):
    config, out = write_config(tmp_path), tmp_path / "out"
    benchmark.main(["--config", config, "--output-dir", str(out)])
    rows = read_csv(out / "results.csv")
    assert [(r["dataset"], r["model"], r["seed"]) for r in rows] == [
        ("toy", "SeasonalNaive", "0"),
        ("toy", "DeepAR", "0"),
    ]
    deepar = rows[1]
    assert {r["cpu"] for r in rows} == {cpu_name()} and f"cpu {cpu_name()}; torch threads 1;" in markdown_of(out)
    assert deepar["epochs"] == "1" and float(deepar["epoch_s"]) > 0 and float(deepar["fit_s"]) > 0
    assert all(np.isfinite(float(r[m])) for r in rows for m in ("MASE", "mean_wQL", "sMAPE", "coverage_80"))
    markdown = (out / "results.md").read_text()
    assert "## MASE" in markdown and "## epoch time relative to DeepAR" in markdown and "**" in markdown
    assert "## mean_wQL minus DeepAR's, paired" in markdown and "toy (4 windows, 1 seed; largest" in markdown
    assert {p.name for p in (out / "plots").iterdir()} == {"toy__SeasonalNaive.png", "toy__DeepAR.png"}
    windows = read_csv(out / "window_losses.csv")
    for row in rows:  # each run's windows add up to its mean_wQL
        own = [w for w in windows if (w["model"], w["seed"]) == (row["model"], row["seed"])]
        assert [int(w["window"]) for w in own] == [0, 1, 2, 3]
        wql = sum(float(w["loss"]) for w in own) / sum(float(w["size"]) for w in own)
        assert wql == pytest.approx(float(row["mean_wQL"]), rel=1e-6)

    count_runs.clear()
    benchmark.main(["--config", config, "--output-dir", str(out), "--resume", "--seeds", "0", "1"])
    assert count_runs == [("toy", "SeasonalNaive", 1), ("toy", "DeepAR", 1)]
    resumed = read_csv(out / "results.csv")
    assert resumed[:2] == rows and len(resumed) == 4
    assert read_csv(out / "window_losses.csv")[:8] == windows and len(read_csv(out / "window_losses.csv")) == 16
    assert "± " in (out / "results.md").read_text()

    with pytest.raises(FileExistsError, match="--resume to continue"):
        benchmark.main(["--config", config, "--output-dir", str(out)])
    with pytest.raises(ValueError, match="pass one of them"):
        benchmark.main(["--config", config, "--output-dir", str(out), "--resume", "--overwrite"])
    benchmark.main(["--config", config, "--output-dir", str(out), "--overwrite", "--models", "SeasonalNaive"])
    assert [r["model"] for r in read_csv(out / "results.csv")] == ["SeasonalNaive"]
    assert {w["model"] for w in read_csv(out / "window_losses.csv")} == {"SeasonalNaive"}
    assert {p.name for p in (out / "plots").iterdir()} == {"toy__SeasonalNaive.png"}


def markdown_of(out: Path) -> str:
    return (out / "results.md").read_text()


def change_config(path: str, **changes) -> None:
    """Replace keys of the config's ``benchmark:`` mapping."""
    config = yaml.safe_load(Path(path).read_text())
    config["benchmark"].update(changes)
    Path(path).write_text(yaml.safe_dump(config))


def naive_config(folder: Path) -> str:
    """A config of the toy dataset and SeasonalNaive only (no training)."""
    config = write_config(folder, models=[{"name": "SeasonalNaive", "class_path": NAIVE}])
    toy = yaml.safe_load(Path(config).read_text())["benchmark"]["datasets"][0]
    change_config(config, model_args={}, datasets=[{**toy, "model_args": {}}])
    return config


def test_resume_refuses_kept_runs_made_with_other_settings(tmp_path, count_runs):
    config, out = write_config(tmp_path), tmp_path / "out"
    change_config(config, trainer_kwargs={"max_epochs": 2})  # the full budget differs from --quick's
    args = ["--config", config, "--output-dir", str(out)]
    benchmark.main([*args, "--quick"])
    rows, count_runs[:] = read_csv(out / "results.csv"), []
    assert len({r["settings"] for r in rows}) == 2 and all(len(r["settings"]) == 12 for r in rows)
    quick_made = json.loads((out / "settings.json").read_text())[rows[1]["settings"]]
    assert quick_made["model_kwargs"]["trainer_kwargs"]["max_epochs"] == 1

    refusal = r"(?s)1 kept runs of .* toy × DeepAR seeds \[0\]: made with --quick \(.*max_epochs 1 → 2\).*--overwrite"
    with pytest.raises(ValueError, match=refusal):
        benchmark.main([*args, "--resume"])
    with pytest.raises(ValueError, match=refusal):  # a kept seed also counts when other seeds are asked for
        benchmark.main([*args, "--resume", "--seeds", "1"])
    change_config(config, model_args={"batch_size": 8, "num_batches_per_epoch": 2})
    with pytest.raises(ValueError, match=r"DeepAR seeds \[0\]: model_kwargs.batch_size 4 → 8\n"):
        benchmark.main([*args, "--quick", "--resume"])
    assert count_runs == [] and read_csv(out / "results.csv") == rows and "--quick smoke" in markdown_of(out)

    benchmark.main([*args, "--resume", "--models", "SeasonalNaive"])  # a predictor's settings have no budget
    change_config(config, model_args={"batch_size": 4, "num_batches_per_epoch": 2})
    benchmark.main([*args, "--quick", "--resume", "--seeds", "0", "1"])  # the same settings: resumed
    assert count_runs == [("toy", "SeasonalNaive", 1), ("toy", "DeepAR", 1)]
    (out / "settings.json").unlink()
    with pytest.raises(ValueError, match=r"DeepAR seeds \[0, 1\]: made with --quick \(fingerprint .* does not hold"):
        benchmark.main([*args, "--resume"])


def test_resume_keeps_rows_from_before_the_settings_column_and_warns(tmp_path, count_runs):
    config, out = naive_config(tmp_path), tmp_path / "out"
    benchmark.main(["--config", config, "--output-dir", str(out)])
    # the columns of a results.csv written before the cpu, settings and provenance columns
    old_columns = "dataset,model,seed,MASE,mean_wQL,sMAPE,coverage_80,fit_s,epochs,epoch_s,predict_s,threads"
    old_columns = old_columns.split(",")
    old = [{key: row[key] for key in old_columns} for row in read_csv(out / "results.csv")]
    with (out / "results.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, old_columns)
        writer.writeheader()
        writer.writerows(old)
    (out / "settings.json").unlink()
    with pytest.warns(UserWarning, match="1 kept runs of .* record no settings") as caught:
        benchmark.main(["--config", config, "--output-dir", str(out), "--resume", "--seeds", "0", "1"])
    assert len([w for w in caught if "record no settings" in str(w.message)]) == 1
    assert count_runs == [("toy", "SeasonalNaive", 0), ("toy", "SeasonalNaive", 1)]
    kept, new = read_csv(out / "results.csv")
    assert kept["settings"] == "" and new["settings"] in json.loads((out / "settings.json").read_text())


def test_the_header_names_every_machine_and_thread_count_its_rows_record(tmp_path):
    bench = load_benchmark(write_config(tmp_path))
    rows = [
        {"cpu": "CPU A", "threads": "2", "seed": 0},
        {"threads": "1", "seed": 0},
        {"cpu": "CPU A", "threads": "1", "seed": 0},
    ]
    assert "cpu CPU A / not recorded; torch threads 1 / 2;" in describe(bench, False, rows)


def test_validation_split_runs_are_labelled_and_kept_apart_from_test_runs(tmp_path, count_runs):
    config, out = write_config(tmp_path), tmp_path / "out"
    only = ["--config", config, "--output-dir", str(out), "--models", "SeasonalNaive"]
    benchmark.main([*only, "--split", "validation"])
    assert "split validation" in (out / "results.md").read_text()
    benchmark.main([*only, "--resume"])
    rows = read_csv(out / "results.csv")
    assert [(r["dataset"], r["model"]) for r in rows] == [("toy_validation", "SeasonalNaive"), ("toy", "SeasonalNaive")]
    (out / "results.md").unlink()
    benchmark.main([*only, "--resume"])  # nothing to run: the tables are written from the kept rows
    assert "| toy_validation |" in (out / "results.md").read_text() and len(count_runs) == 2
    assert rows[0]["MASE"] != rows[1]["MASE"]  # other windows: the 7 steps before the test windows
    assert {p.name for p in (out / "plots").iterdir()} == {
        "toy_validation__SeasonalNaive.png",
        "toy__SeasonalNaive.png",
    }


def test_a_model_runs_only_on_the_datasets_it_names(tmp_path, count_runs):
    data = {"path": synthetic_jsonl(tmp_path), "freq": "D", "prediction_length": 7, "seasonality": 7}
    datasets = [
        {"name": name, "class_path": "pararnn_ts.forecast.data.JsonLinesDataset", "init_args": data}
        for name in ("toy", "toy2")
    ]
    naive = "gluonts.model.seasonal_naive.SeasonalNaivePredictor"
    models = [{"name": "Naive", "class_path": naive}, {"name": "Only2", "class_path": naive, "datasets": ["toy2"]}]
    config, out = Path(write_config(tmp_path, models=models, datasets=datasets)), tmp_path / "out"
    settings = yaml.safe_load(config.read_text())
    del settings["benchmark"]["model_args"]  # no model here trains
    config.write_text(yaml.safe_dump(settings))
    benchmark.main(["--config", str(config), "--output-dir", str(out)])
    assert count_runs == [("toy", "Naive", 0), ("toy2", "Naive", 0), ("toy2", "Only2", 0)]
    count_runs.clear()
    benchmark.main(["--config", str(config), "--output-dir", str(out), "--resume"])
    assert count_runs == []
    toy_row = next(line for line in (out / "results.md").read_text().splitlines() if line.startswith("| toy |"))
    assert toy_row.count("|") == 4  # dataset, Naive, and Only2's empty cell


BAD_MODELS = [
    ({"name": "Para", "class_path": "pararnn_ts.forecast.NoSuchEstimator"}, r"model 'Para': cannot import"),
    ({"name": "Typo", "class_path": "gluonts.torch.DeepAREstimator", "init_args": {"hiden_size": 3}}, "no argument"),
    (
        {"name": "Fixed", "class_path": "gluonts.torch.DeepAREstimator", "init_args": {"freq": "h"}},
        "come from the dataset",
    ),
    ({"name": "Data", "class_path": "pararnn_ts.forecast.data.VicElecDataset"}, "neither a GluonTS Estimator"),
    (
        {"name": "Where", "class_path": "gluonts.torch.DeepAREstimator", "overrides": {"elsewhere": {}}},
        "unknown dataset 'elsewhere'",
    ),
    (
        {"name": "Only", "class_path": "gluonts.torch.DeepAREstimator", "datasets": ["toy", "elsewhere"]},
        r"datasets names unknown datasets \['elsewhere'\]",
    ),
    ({"name": "OnlyNone", "class_path": "gluonts.torch.DeepAREstimator", "datasets": "toy"}, "non-empty list"),
    (
        {
            "name": "TrainerTypo",
            "class_path": "gluonts.torch.DeepAREstimator",
            "overrides": {"toy": {"trainer_kwargs": {"gradient_clip": 1.0}}},
        },
        r"model 'TrainerTypo' overrides\['toy'\].trainer_kwargs: .* no argument 'gradient_clip' \(did you mean "
        "'gradient_clip_val'",
    ),
    (
        {"name": "PatchTST", "class_path": "gluonts.torch.PatchTSTEstimator"},
        r"(?s)model 'PatchTST' on dataset 'toy'.*patch_len.*field required",
    ),
]


@pytest.mark.parametrize(("bad", "message"), BAD_MODELS, ids=[b["name"] for b, _ in BAD_MODELS])
def test_bad_model_entries_fail_before_any_training(tmp_path, count_runs, bad, message):
    good = {"name": "SeasonalNaive", "class_path": "gluonts.model.seasonal_naive.SeasonalNaivePredictor"}
    config = write_config(tmp_path, models=[good, bad])
    with pytest.raises(ValueError, match=message):
        benchmark.main(["--config", config, "--output-dir", str(tmp_path / "out")])
    assert count_runs == [] and not (tmp_path / "out" / "results.csv").exists()


BAD_SETTINGS = [
    ({"model_args": {"batch_sise": 4}}, r"benchmark.model_args: no model of the config takes \['batch_sise'\]"),
    ({"epochs": 3}, r"unknown benchmark keys \['epochs'\]"),
    ({"seeds": 0}, "seeds must be a non-empty list of ints"),
    ({"threads": 0}, "threads must be a positive int"),
    ({"timing_reference": "LSTM"}, "timing_reference 'LSTM' is not a model"),
    ({"paired_reference": "LSTM"}, "paired_reference 'LSTM' is not a model"),
    ({"num_samples": 0}, "num_samples must be a positive int"),
    ({"num_samples": True}, "num_samples must be a positive int"),
    (
        {"trainer_kwargs": {"max_epoch": 3}},
        r"benchmark.trainer_kwargs: lightning.pytorch.Trainer takes no argument 'max_epoch' \(did you mean "
        r"'max_epochs'.*fix the name",
    ),
]


@pytest.mark.parametrize(("change", "message"), BAD_SETTINGS, ids=[next(iter(c)) for c, _ in BAD_SETTINGS])
def test_bad_benchmark_settings_are_refused(tmp_path, change, message):
    path = Path(write_config(tmp_path))
    config = yaml.safe_load(path.read_text())
    config["benchmark"].update(change)
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match=message):
        benchmark_config.load_benchmark(path)


def test_a_trainer_kwargs_typo_is_refused_before_any_folder_is_made_even_without_estimators(tmp_path, count_runs):
    config, out = naive_config(tmp_path), tmp_path / "out"
    change_config(config, trainer_kwargs={"max_epoch": 3})
    with pytest.raises(ValueError, match="takes no argument 'max_epoch'"):
        benchmark.main(["--config", config, "--output-dir", str(out)])
    assert count_runs == [] and not out.exists()


@pytest.mark.parametrize("threads", ["0", "-2", "two"])
def test_threads_must_be_a_positive_int(tmp_path, capsys, count_runs, threads):
    config = naive_config(tmp_path)
    with pytest.raises(SystemExit):
        benchmark.main(["--config", config, "--output-dir", str(tmp_path / "out"), "--threads", threads])
    assert f"argument --threads: must be a positive integer, got '{threads}'" in capsys.readouterr().err
    assert count_runs == [] and not (tmp_path / "out").exists()


def test_help_names_the_default_output_dir_and_when_it_is_refused(capsys):
    with pytest.raises(SystemExit):
        benchmark.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: runs/forecast_benchmark)" in text and "refused unless --resume or --overwrite" in text


def test_dataset_model_args_may_not_set_the_horizon(tmp_path):
    path = Path(write_config(tmp_path))
    config = yaml.safe_load(path.read_text())
    config["benchmark"]["datasets"][0]["model_args"] = {"prediction_length": 3}
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match=r"dataset 'toy' model_args: \['prediction_length'\] come from the dataset"):
        benchmark_config.load_benchmark(path)


def test_an_unimportable_model_can_be_filtered_out(tmp_path, count_runs):
    models = [
        {"name": "SeasonalNaive", "class_path": "gluonts.model.seasonal_naive.SeasonalNaivePredictor"},
        {"name": "Para", "class_path": "pararnn_ts.forecast.NoSuchEstimator"},
    ]
    config = write_config(tmp_path, models=models)
    benchmark.main(["--config", config, "--output-dir", str(tmp_path / "out"), "--models", "SeasonalNaive"])
    assert count_runs == [("toy", "SeasonalNaive", 0)]
    with pytest.raises(ValueError, match=r"--models \['Nope'\]: not in the config"):
        benchmark.main(["--config", config, "--output-dir", str(tmp_path / "o2"), "--models", "Nope"])


def test_a_bad_dataset_fails_before_any_training(tmp_path, count_runs):
    good = yaml.safe_load(Path(write_config(tmp_path)).read_text())["benchmark"]["datasets"][0]
    bad = {**good, "name": "bad", "init_args": {**good["init_args"], "freq": "fortnightly"}}
    config = write_config(tmp_path, datasets=[good, bad])
    with pytest.raises(ValueError, match=r"dataset 'bad'.*'fortnightly' is not a pandas period frequency"):
        benchmark.main(["--config", config, "--output-dir", str(tmp_path / "out")])
    assert count_runs == []


def test_arguments_are_layered_and_quick_shrinks_the_budget(tmp_path):
    models = [
        {"name": "SeasonalNaive", "class_path": "gluonts.model.seasonal_naive.SeasonalNaivePredictor"},
        {
            "name": "DeepAR",
            "class_path": "gluonts.torch.DeepAREstimator",
            "init_args": {"trainer_kwargs": {"gradient_clip_val": 1.0}},
            "overrides": {"toy": {"context_length": 21}},
        },
    ]
    bench = benchmark_config.load_benchmark(write_config(tmp_path, models=models))
    (dataset,) = bench.datasets
    naive, deepar = bench.models
    data = dataset.cls(**dataset.init_args).load()
    assert benchmark.build_model(naive, dataset, data, bench).season_length == 7
    built = benchmark.build_model(deepar, dataset, data, bench)
    assert (built.context_length, built.prediction_length, built.freq, built.batch_size) == (21, 7, "D", 4)
    assert built.trainer_kwargs["gradient_clip_val"] == 1.0 and built.trainer_kwargs["accelerator"] == "cpu"
    quick = benchmark.build_model(deepar, dataset, data, bench, quick=True)
    assert quick.trainer_kwargs["max_epochs"] == 1 and quick.num_batches_per_epoch == 2


def test_a_config_can_start_from_a_base_config(tmp_path):
    base = Path(write_config(tmp_path, seeds=(0, 1)))
    (tmp_path / "variants").mkdir()
    child = tmp_path / "variants" / "child.yaml"
    deepar = yaml.safe_load(base.read_text())["benchmark"]["models"][1:]
    child.write_text(yaml.safe_dump({"benchmark": {"base": "../bench.yaml", "seeds": [3], "models": deepar}}))
    bench = benchmark_config.load_benchmark(child)
    assert bench.seeds == [3] and [m.name for m in bench.models] == ["DeepAR"]
    assert [d.name for d in bench.datasets] == ["toy"] and bench.model_args["batch_size"] == 4  # from the base
    child.write_text(yaml.safe_dump({"benchmark": {"base": "bench.yaml"}}))
    with pytest.raises(ValueError, match=r"base 'bench.yaml' is not a file \(a base path is relative"):
        benchmark_config.load_benchmark(child)
    config = yaml.safe_load(base.read_text())
    config["benchmark"]["base"] = "variants/child.yaml"
    base.write_text(yaml.safe_dump(config))
    child.write_text(yaml.safe_dump({"benchmark": {"base": "../bench.yaml"}}))
    with pytest.raises(ValueError, match="leads back to a config"):
        benchmark_config.load_benchmark(child)


BENCHMARK_CONFIGS = sorted(
    p for p in (ROOT / "experiments").rglob("*.yaml") if "benchmark" in (yaml.safe_load(p.read_text()) or {})
)


@pytest.mark.parametrize("path", BENCHMARK_CONFIGS, ids=[str(p.relative_to(ROOT)) for p in BENCHMARK_CONFIGS])
def test_benchmark_configs_parse_load_and_build(path):
    bench = benchmark_config.load_benchmark(path)
    assert bench.datasets and bench.models and bench.seeds
    for dataset in bench.datasets:
        data = dataset.cls(**benchmark_config.instantiate(dataset.init_args)).load()
        for model in bench.models:
            benchmark.build_model(model, dataset, data, bench)


def test_the_forecast_benchmark_config_is_found():
    assert ROOT / "experiments" / "forecast" / "benchmark.yaml" in BENCHMARK_CONFIGS


def test_num_samples_reaches_the_predictors_that_sample_only():
    from gluonts.model.seasonal_naive import SeasonalNaivePredictor
    from gluonts.torch.model.predictor import PyTorchPredictor

    naive = SeasonalNaivePredictor(prediction_length=3, season_length=1)
    sampling = PyTorchPredictor.__new__(PyTorchPredictor)  # its predict's signature is what is read
    assert benchmark.predict_kwargs(sampling, 1000) == {"num_samples": 1000}
    assert benchmark.predict_kwargs(naive, 1000) == {} and benchmark.predict_kwargs(sampling, None) == {}
