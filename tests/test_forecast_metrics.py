"""``score`` against GluonTS: bit-for-bit the pooled ``gluonts.ev`` metrics on fully observed windows, GluonTS's
``Evaluator`` (per-series averages) with missing actuals, and windows of zero seasonal error counted, not hidden;
test windows with no actual at all (rows of future covariates) are told about by the data module."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from gluonts.model.forecast import SampleForecast

from pararnn_ts.forecast.data import JsonLinesDataset, write_json_lines
from pararnn_ts.forecast.datamodule import ForecastDataModule
from pararnn_ts.forecast.metrics import DEFAULT_QUANTILES, score, split_windows

H, SEASON = 6, 4


def windows(targets: list[np.ndarray]) -> list[dict]:
    return [
        {"start": pd.Period("2020-01-01", freq="D"), "target": np.asarray(t, dtype=np.float32), "item_id": f"s{i}"}
        for i, t in enumerate(targets)
    ]


def noisy_forecasts(entries: list[dict], seed: int = 0) -> list[SampleForecast]:
    """Sample forecasts around each window's actuals (or 10 where missing), off by a different amount per window."""
    rng = np.random.default_rng(seed)
    made = []
    for i, entry in enumerate(entries):
        actual = np.nan_to_num(entry["target"][-H:], nan=10.0)
        samples = actual + (i + 1) * rng.normal(1.0, 1.0, size=(50, H))
        start = entry["start"] + len(entry["target"]) - H
        made.append(SampleForecast(samples.astype(np.float32), start_date=start, item_id=entry["item_id"]))
    return made


def random_targets(count: int, seed: int = 1, length: int = 30) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [10 + np.cumsum(rng.normal(0, 1, length)) for _ in range(count)]


def pooled_gluonts_ev(forecasts: list, entries: list[dict]) -> dict[str, float]:
    """The definition ``score`` had before it averaged per window: ``gluonts.ev``'s means over all points."""
    from collections import ChainMap

    from gluonts.ev.aggregations import Mean
    from gluonts.ev.metrics import MASE, SMAPE, DirectMetric
    from gluonts.ev.ts_stats import seasonal_error
    from gluonts.model.evaluation import BatchForecast

    from pararnn_ts.forecast.metrics import interval_coverage

    inputs, labels = split_windows(entries, H)
    errors = [seasonal_error(np.ma.masked_invalid(e["target"].astype(np.float64)), SEASON, -1) for e in inputs]
    data = ChainMap(
        {"label": np.ma.masked_invalid(labels), "seasonal_error": np.ma.stack(errors)}, BatchForecast(forecasts)
    )
    metrics = {
        "MASE": MASE()(axis=None),
        "sMAPE": SMAPE()(axis=None),
        "coverage_80": DirectMetric(name="coverage_80", stat=interval_coverage, aggregate=Mean(axis=None)),
    }
    return {name: float(metric.update(data).get()) for name, metric in metrics.items()}


def evaluator(forecasts: list, entries: list[dict]) -> dict[str, float]:
    """GluonTS's ``Evaluator`` on the same forecasts (per-series metrics, then their mean)."""
    from gluonts.evaluation import Evaluator

    series = [
        pd.DataFrame(e["target"], index=pd.period_range(e["start"], periods=len(e["target"]), freq="D"))
        for e in entries
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # x / 0 of the zero-scale series, pandas deprecations
        agg, _ = Evaluator(quantiles=DEFAULT_QUANTILES, seasonality=SEASON, num_workers=0)(
            iter(series), iter(forecasts), num_series=len(series)
        )
    return {
        "MASE": agg["MASE"],
        "mean_wQL": agg["mean_wQuantileLoss"],
        "sMAPE": agg["sMAPE"],
        "coverage_80": agg["Coverage[0.9]"] - agg["Coverage[0.1]"],
    }


def test_fully_observed_windows_score_bit_for_bit_as_the_pooled_means():
    """Where every window has all its actuals the per-window average is the plain mean over the points, to the bit
    (the committed benchmark results rest on it), 0 / 0 sMAPE points (actual and median 0) left out as before."""
    targets = random_targets(5)
    targets[1][-3:] = 0.0
    entries = windows(targets)
    forecasts = noisy_forecasts(entries)
    forecasts[1].samples[:, -1] = 0.0  # sMAPE's 0 / 0 at the last step
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning either
        scored = score(forecasts, entries, H, SEASON)
    before = pooled_gluonts_ev(forecasts, entries)
    assert set(scored) == {"MASE", "mean_wQL", "sMAPE", "coverage_80"}
    assert {name: scored[name] for name in before} == before


def test_missing_actuals_average_per_window_as_gluonts_evaluator():
    """MASE, sMAPE and coverage average each window's observed points, then the windows (a window with one
    observed actual weighs as much as a full one), as GluonTS's ``Evaluator``; wQL is its ratio of sums."""
    targets = random_targets(4)
    targets[0][-H:-2] = np.nan  # 2 observed actuals
    targets[2][-1] = np.nan  # 5
    targets[3][-H:] = np.nan  # none: left out
    entries = windows(targets)
    forecasts = noisy_forecasts(entries)
    scored = score(forecasts, entries, H, SEASON)
    expected = evaluator(forecasts, entries)
    for name, value in expected.items():
        assert scored[name] == pytest.approx(value, rel=1e-6), name
    assert abs(pooled_gluonts_ev(forecasts, entries)["MASE"] - scored["MASE"]) > 0.05  # pooling would differ


def test_windows_of_zero_seasonal_error_are_left_out_of_mase_counted_and_warned():
    """A constant or all-zero past has seasonal error 0 (the Evaluator's MASE is inf): MASE averages the other
    windows, says how many it left out, and warns naming the count and why."""
    targets = random_targets(4)
    targets[1] = np.full(30, 5.0)
    targets[3] = np.zeros(30)
    entries = windows(targets)
    forecasts = noisy_forecasts(entries)
    with pytest.warns(UserWarning, match=r"MASE leaves out 2 of 4 test windows whose input has a seasonal error of 0"):
        scored = score(forecasts, entries, H, SEASON)
    assert scored["MASE_excluded_windows"] == 2
    assert np.isinf(evaluator(forecasts, entries)["MASE"])
    scaled = [0, 2]
    assert scored["MASE"] == pytest.approx(
        evaluator([forecasts[i] for i in scaled], [entries[i] for i in scaled])["MASE"]
    )
    assert scored["sMAPE"] == pytest.approx(evaluator(forecasts, entries)["sMAPE"])


def future_rows(path, covariates: bool) -> JsonLinesDataset:
    """Three daily series, the first two ending with ``H`` rows of an empty target (with a covariate when
    ``covariates``): the usual way to give known future covariates."""
    entries = windows(random_targets(3))
    for entry in entries[:2]:
        entry["target"][-H:] = np.nan
    rng = np.random.default_rng(2)
    for entry in entries if covariates else []:
        entry["feat_dynamic_real"] = rng.normal(size=(1, len(entry["target"])))
    return JsonLinesDataset(str(write_json_lines(entries, path)), "D", H)


def test_test_windows_without_an_actual_are_warned_about(tmp_path):
    """Their metrics would be NaN (all of them when no window has an actual): the warning names the count, the
    likely cause and ``predict_split=test``, which forecasts those rows."""
    datamodule = ForecastDataModule(future_rows(tmp_path / "future.jsonl", covariates=False))
    datamodule.setup("test")
    warned = r"2 of 3 test windows have no observed actual.*empty target at the end.*predict_split=test"
    with pytest.warns(UserWarning, match=warned):
        datamodule.test_dataloader()


def test_predicting_the_future_with_covariates_says_how_rows_of_future_covariates_are_forecast(tmp_path):
    datamodule = ForecastDataModule(future_rows(tmp_path / "future.jsonl", covariates=True))
    told = (
        rf"end each series with {H} rows of covariates and an empty target and forecast them as the test windows "
        r"\(--data.init_args.predict_split=test\) \(this data has such rows: 2 of its test windows have no actual\)"
    )
    with pytest.raises(ValueError, match=told):
        datamodule.setup("predict")
