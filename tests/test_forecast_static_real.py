"""Static real features (GluonTS's ``feat_static_real``) from a CSV file, a JSON lines file and through ``pararnn-ts``:
each series' numbers reach the network (its inputs at every step), a checkpoint rebuilds it, and files that give a
series no number, or several, are refused naming their lines."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import TINY_FORECASTER, forecast_config
from gluonts.itertools import select

from pararnn_ts.cli import main
from pararnn_ts.forecast.cli_module import CHECKPOINT_KEY, ParaRNNForecaster, data_sizes
from pararnn_ts.forecast.csv_data import CsvDataset
from pararnn_ts.forecast.data import ForecastDataset, JsonLinesDataset, write_json_lines
from pararnn_ts.forecast.datamodule import ForecastDataModule
from pararnn_ts.forecast.lightning_module import MODEL_INPUT_NAMES
from pararnn_ts.forecast.predictions import FORECASTS_FILE

H = 3
#: each store's size, on which its sales level depends
SIZES = {"a": 1.0, "b": 2.0, "c": 3.0}


def sales_rows(sizes: dict[str, float], days: int = 30) -> list[dict]:
    """Daily sales of each store (name: size), in the file's order: store by store, day by day."""
    dates = pd.date_range("2024-01-01", periods=days, freq="D").strftime("%Y-%m-%d")
    return [
        {"date": day, "store": store, "sales": 10.0 * size + i % 7, "size": size}
        for store, size in sizes.items()
        for i, day in enumerate(dates)
    ]


def write_csv(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def sales_dataset(path: Path, **kwargs) -> CsvDataset:
    options = {"timestamp_column": "date", "target_column": "sales", "item_id_column": "store"}
    return CsvDataset(str(path), "D", H, **(options | {"feat_static_real_columns": ["size"]} | kwargs))


def test_each_series_number_is_its_feat_static_real_in_csv_and_json_lines(tmp_path):
    data = sales_dataset(write_csv(tmp_path / "sales.csv", sales_rows(SIZES))).load()
    assert data.num_feat_static_real == 1
    for split in (data.train, data.test):
        assert {entry["item_id"]: entry["feat_static_real"].tolist() for entry in split} == {
            store: [size] for store, size in SIZES.items()
        }
        assert all(entry["feat_static_real"].dtype == np.float32 for entry in split)
    # The same series as GluonTS JSON lines (one test window: its entries are the whole series) load alike.
    again = JsonLinesDataset(str(write_json_lines(data.test, tmp_path / "sales.jsonl")), "D", H).load()
    assert again.num_feat_static_real == 1
    for split in ("train", "test"):
        for x, y in zip(getattr(data, split), getattr(again, split), strict=True):
            np.testing.assert_array_equal(x["feat_static_real"], y["feat_static_real"])
            np.testing.assert_array_equal(x["target"], y["target"])


def changed(rows: list[dict], lines: list[int], **values) -> list[dict]:
    """``rows`` with ``values`` on the file's ``lines`` (the header is line 1)."""
    return [{**row, **values} if number + 2 in lines else row for number, row in enumerate(rows)]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            changed(sales_rows(SIZES), [40, 41], size=2.5),
            r"series 'b': static real 'size' changes within the series: 2 on line 32, 2.5 on lines \[40, 41\]; "
            r"a static real holds one number per series \(a changing one is a covariate",
        ),
        (
            changed(sales_rows(SIZES), [5, 70], size=None),
            r"static real 'size' is empty or NA on lines \[5, 70\]; fill it",
        ),
        (changed(sales_rows(SIZES), [9], size="big"), r"'size' is not a number on lines \[9\] \(e.g. 'big'\)"),
    ],
)
def test_a_static_real_that_is_empty_or_changes_within_a_series_is_refused_naming_the_lines(tmp_path, rows, message):
    with pytest.raises(ValueError, match=message):
        sales_dataset(write_csv(tmp_path / "bad.csv", rows)).load()


def test_a_static_real_column_must_exist_and_have_one_role(tmp_path):
    path = write_csv(tmp_path / "sales.csv", sales_rows(SIZES))
    with pytest.raises(ValueError, match=r"no column\(s\) \['area'\].*feat_static_real_columns"):
        sales_dataset(path, feat_static_real_columns=["area"]).load()
    with pytest.raises(ValueError, match=r"\['size'\] are named for more than one role"):
        sales_dataset(path, feat_dynamic_real_columns=["size"])


def json_series(item_id: str, **extra) -> dict:
    return {"start": "2021-03-01", "target": [float(i % 7 + 1) for i in range(20)], "item_id": item_id, **extra}


@pytest.mark.parametrize(
    ("records", "message"),
    [
        (
            [json_series("a", feat_static_real=[1.0]), json_series("b")],
            r"series differ in their number of .* feat_static_real \(\[0, 1\]\)",
        ),
        ([json_series("a", feat_static_real=[None])], r"series 'a': feat_static_real \[nan\] is not 1 finite number"),
        ([json_series("a", feat_static_real=1.5)], r"line 1: feat_static_real must be a list of numbers, got 1.5"),
        ([json_series("a", feat_static_real=["big"])], r"line 1: feat_static_real holds a value that is not a number"),
    ],
)
def test_json_lines_static_reals_that_do_not_fit_are_refused(tmp_path, records, message):
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    with pytest.raises(ValueError, match=message):
        JsonLinesDataset(str(path), "D", 5).load()


def test_data_sizes_name_static_reals_only_when_there_are_some(tmp_path):
    """Checkpoints of data without static reals hold the sizes they held before (so they still match)."""
    path = write_csv(tmp_path / "sales.csv", sales_rows(SIZES))
    plain = data_sizes(sales_dataset(path, feat_static_real_columns=None).load())
    assert set(plain) == {"freq", "prediction_length", "num_feat_dynamic_real", "cardinality"}
    assert data_sizes(sales_dataset(path).load()) == {**plain, "num_feat_static_real": 1}
    model = ParaRNNForecaster(hidden_size=8, num_layers=1, mode="sequential")
    model.on_load_checkpoint({CHECKPOINT_KEY: plain})  # a checkpoint saved before static reals were
    assert model.model.num_feat_static_real == 0


class InMemory(ForecastDataset):
    def __init__(self, data) -> None:
        self.data = data

    def load(self):
        return self.data


def test_the_forecasters_network_reads_the_static_reals(tmp_path):
    """Built from a CSV file's data as ``pararnn-ts`` builds it, the network gets each series' number in its training
    batches (not the dummy 0 of data without static reals), its loss has a gradient with respect to it, and its
    forecasts change when only the number does."""
    data = sales_dataset(write_csv(tmp_path / "sales.csv", sales_rows(SIZES))).load()
    torch.manual_seed(0)
    module = ParaRNNForecaster(hidden_size=8, num_layers=1, num_parallel_samples=10, mode="sequential")
    module.build(data_sizes(data))
    assert module.model.num_feat_static_real == 1
    datamodule = ForecastDataModule(InMemory(data), batch_size=16, num_batches_per_epoch=1)
    datamodule.trainer = SimpleNamespace(lightning_module=module)
    datamodule.setup("fit")
    (batch,) = list(datamodule.train_dataloader())
    levels = batch["past_target"].amax(1).div(10).floor()  # the store's size (sales are 10 × size + 0..6)
    torch.testing.assert_close(batch["feat_static_real"], levels[:, None])

    reals = batch["feat_static_real"].clone().requires_grad_(True)
    inputs = {**select(MODEL_INPUT_NAMES, batch), "feat_static_real": reals}
    loss = module.model.loss(
        **inputs, future_target=batch["future_target"], future_observed_values=batch["future_observed_values"]
    )
    loss.sum().backward()
    assert (reals.grad.abs() > 0).all()

    (entry,) = [e for e in data.test if e["item_id"] == "a"]
    history = {**entry, "target": entry["target"][:-H]}

    def median(size: float) -> np.ndarray:
        torch.manual_seed(1)
        (forecast,) = module.predictor().predict([{**history, "feat_static_real": np.array([size], np.float32)}])
        return forecast.quantile(0.5)

    np.testing.assert_array_equal(median(1.0), median(1.0))  # the same number: the same forecast
    assert np.abs(median(1.0) - median(4.0)).max() > 1e-3


@pytest.mark.usefixtures("bare_argv")
def test_pararnn_ts_trains_on_a_csv_files_static_reals_and_forecasts_with_them(tmp_path, monkeypatch):
    """``fit`` on a CSV file with ``feat_static_real_columns``: the checkpoint records the count; ``predict`` of the
    file with one store's size changed, and nothing else, changes that store's forecasts only."""
    dataset = {
        "class_path": "pararnn_ts.forecast.csv_data.CsvDataset",
        "init_args": {
            "path": str(write_csv(tmp_path / "sales.csv", sales_rows(SIZES))),
            "freq": "D",
            "prediction_length": H,
            "timestamp_column": "date",
            "target_column": "sales",
            "item_id_column": "store",
            "feat_static_real_columns": ["size"],
        },
    }
    (tmp_path / "sales.yaml").write_text(yaml.safe_dump(forecast_config(dataset)))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["pararnn-ts"])
    main(["fit", "-c", "sales.yaml", *TINY_FORECASTER])
    runs = tmp_path / "runs" / "lightning_logs"
    checkpoint = runs / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(checkpoint, weights_only=False)[CHECKPOINT_KEY]["num_feat_static_real"] == 1

    def predict(path: Path) -> pd.DataFrame:
        before = set(runs.glob("version_*"))
        main(
            [
                "predict",
                "-c",
                "sales.yaml",
                *TINY_FORECASTER,
                f"--data.init_args.dataset.init_args.path={path}",
                f"--ckpt_path={checkpoint}",
            ]
        )
        (version,) = set(runs.glob("version_*")) - before
        return pd.read_csv(version / FORECASTS_FILE).set_index(["item_id", "timestamp"])

    first, again = predict(tmp_path / "sales.csv"), predict(tmp_path / "sales.csv")
    pd.testing.assert_frame_equal(first, again)  # predict is repeatable
    resized = [{**row, "size": 4.0} if row["store"] == "a" else row for row in sales_rows(SIZES)]  # same sales
    bigger = predict(write_csv(tmp_path / "bigger.csv", resized))
    quantiles = [column for column in first.columns if column.startswith("q")]
    pd.testing.assert_frame_equal(bigger.drop(index="a"), first.drop(index="a"))
    assert (bigger.loc["a", quantiles] - first.loc["a", quantiles]).abs().to_numpy().max() > 1e-3


def test_the_benchmark_gives_each_model_that_takes_them_the_datas_static_reals(tmp_path):
    """``pararnn-ts benchmark`` on data with static reals tells the estimators that take ``num_feat_static_real``
    (without it they drop the field); data without them gives the arguments it gave before."""
    from gluonts.torch import DeepAREstimator, PatchTSTEstimator

    from pararnn_ts.forecast.benchmark import model_kwargs
    from pararnn_ts.forecast.benchmark_config import Benchmark, DatasetSpec, ModelSpec
    from pararnn_ts.forecast.estimator import ParaRNNEstimator

    path = write_csv(tmp_path / "sales.csv", sales_rows(SIZES))
    bench = Benchmark(datasets=[], models=[], seeds=[0], trainer_kwargs={}, model_args={})
    spec = DatasetSpec("sales", CsvDataset, {})
    for cls in (ParaRNNEstimator, DeepAREstimator, PatchTSTEstimator):
        model = ModelSpec(cls.__name__, cls, {})
        with_reals = model_kwargs(model, spec, sales_dataset(path).load(), bench)
        without = model_kwargs(model, spec, sales_dataset(path, feat_static_real_columns=None).load(), bench)
        takes = cls is not PatchTSTEstimator
        assert with_reals.get("num_feat_static_real") == (1 if takes else None)
        assert "num_feat_static_real" not in without
        assert {k: v for k, v in with_reals.items() if k != "num_feat_static_real"} == without
