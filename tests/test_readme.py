"""The README's Python examples run as written (the forecasting one on a smaller budget)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pararnn_ts.cells.oscillator import RotationOscillator
from pararnn_ts.core import Block, ParaCell

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"^```python\n(.*?)^```", README, flags=re.S | re.M)


def block(first_line: str) -> str:
    """The README's Python block that contains ``first_line``."""
    (found,) = [b for b in BLOCKS if first_line in b]
    return found


def test_layers_example_runs(capsys):
    namespace: dict = {}
    exec(block("rnn = ParaGRU("), namespace)
    assert namespace["y"].shape == (8, 1024, 128) and namespace["c"].shape == (8, 128)
    assert "converged=True" in capsys.readouterr().out


def test_own_cell_example_is_the_shipped_cell():
    namespace = {"torch": torch, "nn": nn, "ParaCell": ParaCell, "Block": Block}
    exec(block("class RotationOscillator(ParaCell):"), namespace)
    torch.manual_seed(0)
    shown, shipped = namespace["RotationOscillator"](5, 6), RotationOscillator(5, 6)
    shown.load_state_dict(shipped.state_dict())
    x = torch.randn(2, 13, 5)
    for mode in ("sequential", "parallel"):
        shown.mode = shipped.mode = mode
        torch.testing.assert_close(shown(x)[0], shipped(x)[0])


def test_forecasting_example_runs_and_its_predictor_loads_back(tmp_path, monkeypatch):
    from gluonts.model import Predictor

    code = block("ParaRNNEstimator(")
    budget = '{"max_epochs": 10}'
    assert budget in code
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(code.replace(budget, '{"max_epochs": 1, "limit_train_batches": 2}'), namespace)
    loaded = Predictor.deserialize(tmp_path / "tourism_q_predictor")
    inputs, horizon = namespace["inputs"], namespace["data"].prediction_length
    (first, *_) = loaded.predict(inputs[:1])
    assert first.samples.shape == (100, horizon) and np.isfinite(first.samples).all()
    assert len(namespace["forecasts"]) == len(inputs)


def test_csv_data_example_loads_a_file_with_its_columns(tmp_path):
    import yaml

    from pararnn_ts.forecast.csv_data import CsvDataset

    (config,) = [b for b in re.findall(r"^```yaml\n(.*?)^```", README, flags=re.S | re.M) if "CsvDataset" in b]
    dataset = yaml.safe_load(config)["data"]["init_args"]["dataset"]
    assert dataset["class_path"] == f"{CsvDataset.__module__}.{CsvDataset.__name__}"
    days = list(np.datetime_as_string(np.arange("2024-01-01", "2024-03-01", dtype="datetime64[D]")))
    rows = [
        f"{day},{store},{10.0 + i},{i % 2},{region}"
        for store, region in (("s1", "north"), ("s2", "south"))
        for i, day in enumerate(days)
    ]
    (tmp_path / "sales.csv").write_text("date,store,sales,promo,region\n" + "\n".join(rows) + "\n")
    args = {**dataset["init_args"], "path": str(tmp_path / dataset["init_args"]["path"])}
    data = CsvDataset(**args).load()
    assert [entry["item_id"] for entry in data.test] == ["s1", "s2"] and data.cardinality == [2]
