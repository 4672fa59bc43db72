"""Probabilistic forecasting on ParaRNN cells: the network, its GluonTS estimator and Lightning modules, datasets
that ship in wheels, metrics, and the benchmark runner (``pararnn-ts benchmark``). Needs the ``forecast`` extra."""

from ..extras import require_extra

require_extra("pararnn_ts.forecast", "forecast", ("gluonts", "pandas"))

from .cli_module import ParaRNNForecaster
from .csv_data import CsvDataset, TsDataDataset
from .data import (
    FCompDataset,
    ForecastData,
    ForecastDataset,
    GluonTSRepositoryDataset,
    JsonLinesDataset,
    VicElecDataset,
)
from .datamodule import ForecastDataModule
from .estimator import ParaRNNEstimator
from .lightning_module import ParaRNNLightningModule
from .metrics import score
from .module import ParaRNNForecastModel

__all__ = [
    "CsvDataset",
    "FCompDataset",
    "ForecastData",
    "ForecastDataModule",
    "ForecastDataset",
    "GluonTSRepositoryDataset",
    "JsonLinesDataset",
    "ParaRNNEstimator",
    "ParaRNNForecastModel",
    "ParaRNNForecaster",
    "ParaRNNLightningModule",
    "VicElecDataset",
    "TsDataDataset",
    "score",
]
