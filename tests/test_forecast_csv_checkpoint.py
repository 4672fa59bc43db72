"""A CSV file's static categories through a checkpoint: it keeps each one's values, and ``predict`` / ``test`` code
another file's as in training (a file with fewer of them forecasts, one with others is refused, naming them);
checkpoints saved before they were kept work as before."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import TINY_FORECASTER, forecast_config

from pararnn_ts.cli import main
from pararnn_ts.forecast.cli_module import CHECKPOINT_KEY, ParaRNNForecaster
from pararnn_ts.forecast.csv_data import CsvDataset
from pararnn_ts.forecast.datamodule import ForecastDataModule
from pararnn_ts.forecast.predictions import FORECASTS_FILE

H = 3
#: each store's region; the north store's level differs, so the region's embedding matters
STORES = {"a": "north", "b": "south", "c": "south"}

pytestmark = pytest.mark.usefixtures("bare_argv")


def write_sales(path: Path, stores: dict[str, str]) -> Path:
    """Daily sales of ``stores`` (name: region), 30 days each."""
    days = pd.date_range("2024-01-01", periods=30, freq="D").strftime("%Y-%m-%d")
    rows = [
        {"date": day, "store": store, "sales": 10.0 * (1 + "abc".index(store[0])) + i % 7, "region": region}
        for store, region in stores.items()
        for i, day in enumerate(days)
    ]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny ``fit`` on :data:`STORES`' sales: its folder and its last checkpoint."""
    folder = tmp_path_factory.mktemp("csv_categories")
    dataset = {
        "class_path": "pararnn_ts.forecast.csv_data.CsvDataset",
        "init_args": {
            "path": str(write_sales(folder / "sales.csv", STORES)),
            "freq": "D",
            "prediction_length": H,
            "timestamp_column": "date",
            "target_column": "sales",
            "item_id_column": "store",
            "feat_static_cat_columns": ["region"],
        },
    }
    config = forecast_config(dataset)
    (folder / "sales.yaml").write_text(yaml.safe_dump(config))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setattr(sys, "argv", ["pararnn-ts"])
        main(["fit", "-c", "sales.yaml", *TINY_FORECASTER])
    return folder, folder / "runs" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"


def predict(folder: Path, checkpoint: Path, sales: Path) -> pd.DataFrame:
    """``pararnn-ts predict`` of ``sales`` with ``checkpoint``: its ``forecasts.csv``."""
    runs = folder / "runs" / "lightning_logs"
    before = set(runs.glob("version_*"))
    data_path = f"--data.init_args.dataset.init_args.path={sales}"
    main(["predict", "-c", str(folder / "sales.yaml"), *TINY_FORECASTER, data_path, f"--ckpt_path={checkpoint}"])
    (version,) = set(runs.glob("version_*")) - before
    return pd.read_csv(version / FORECASTS_FILE)


def test_the_checkpoint_keeps_each_static_categorys_values(trained):
    _, checkpoint = trained
    sizes = torch.load(checkpoint, weights_only=False)[CHECKPOINT_KEY]
    assert sizes["categories"] == {"region": ["north", "south"]} and sizes["cardinality"] == [2]


def test_a_file_with_some_of_the_values_forecasts_as_the_whole_file_does(trained, monkeypatch):
    folder, checkpoint = trained
    monkeypatch.chdir(folder)
    whole = predict(folder, checkpoint, folder / "sales.csv")
    south = predict(folder, checkpoint, write_sales(folder / "south.csv", {"b": "south", "c": "south"}))
    assert south["item_id"].unique().tolist() == ["b", "c"]  # "south" keeps its code, 1, and its embedding
    pd.testing.assert_frame_equal(south, whole[whole["item_id"] != "a"].reset_index(drop=True))


def test_values_the_model_never_saw_are_refused(trained, monkeypatch):
    folder, checkpoint = trained
    monkeypatch.chdir(folder)
    renamed = write_sales(folder / "renamed.csv", {"a": "east", "b": "south", "c": "west"})
    with pytest.raises(ValueError, match=r"'region' has value\(s\) \['east', 'west'\] that the model does not know"):
        predict(folder, checkpoint, renamed)


def test_a_checkpoint_without_the_values_works_as_before(trained, monkeypatch, tmp_path):
    folder, checkpoint = trained
    monkeypatch.chdir(folder)
    saved = torch.load(checkpoint, weights_only=False)
    del saved[CHECKPOINT_KEY]["categories"]  # as checkpoints were saved before
    torch.save(saved, tmp_path / "old.ckpt")
    assert len(predict(folder, tmp_path / "old.ckpt", folder / "sales.csv")) == len(STORES) * H
    south = write_sales(folder / "south_old.csv", {"b": "south", "c": "south"})
    with pytest.raises(ValueError, match=r"cardinality=\[2\], this data has cardinality=\[1\]"):
        predict(folder, tmp_path / "old.ckpt", south)


def test_a_network_loaded_from_its_checkpoint_codes_the_data_as_in_training(trained, tmp_path):
    folder, checkpoint = trained
    path = write_sales(tmp_path / "south.csv", {"c": "south"})
    dataset = CsvDataset(str(path), "D", H, "date", "sales", "store", feat_static_cat_columns=["region"])
    datamodule = ForecastDataModule(dataset, batch_size=4)
    model = ParaRNNForecaster.load_from_checkpoint(checkpoint)
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    (forecasts,) = trainer.predict(model, datamodule=datamodule)
    assert [entry["feat_static_cat"].tolist() for entry in datamodule.data.test] == [[1]]
    assert datamodule.data.cardinality == [2] and np.isfinite(forecasts[0].samples).all()
