"""``ForecastDataModule``: a forecasting dataset's train / validation / test splits for the Lightning CLI.

The data module loads the data and splits it; how entries become batches (the transformation and
the instance splitters) belongs to the model, so the loaders ask ``trainer.lightning_module`` for
them (:class:`~pararnn_ts.forecast.cli_module.ParaRNNForecaster` provides ``transformation`` and
``instance_splitter(mode)``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Generic, Literal, NamedTuple, TypeVar

import lightning.pytorch as pl
import numpy as np
from gluonts.dataset.split import slice_data_entry
from gluonts.transform import Transformation
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from .data import ForecastData, ForecastDataset
from .estimator import training_batches, validation_batches
from .metrics import split_windows

Entry = dict[str, Any]
Item = TypeVar("Item")
PredictSplit = Literal["future", "test"]


def holdout_windows(entries: list[Entry], prediction_length: int, windows: int) -> tuple[list[Entry], list[Entry]]:
    """Split each series into training data and ``windows`` validation windows of ``prediction_length`` at its end.

    Training entries end before the first held-out window (series with nothing left are dropped);
    validation entries end at each window's end, their last ``prediction_length`` steps being the
    window (windows with no step before them are dropped).
    """
    train, validation = [], []
    held_out = windows * prediction_length
    for entry in entries:
        length = len(entry["target"])
        if length > held_out:
            train.append(slice_data_entry(entry, slice(None, length - held_out)))
        for window in range(windows):
            end = length - window * prediction_length
            if end > prediction_length:
                validation.append(slice_data_entry(entry, slice(None, end)))
    return train, validation


class WorkerTrainingBatches(IterableDataset):
    """Training batches made in DataLoader workers, each from its own share of the series.

    Each worker streams its share forever (the stream goes on across epochs: use persistent
    workers) and yields its part of the ``num_batches_per_epoch`` batches of an epoch.
    """

    def __init__(
        self,
        entries: list[Entry],
        transformation: Transformation,
        splitter: Transformation,
        batch_size: int,
        num_batches_per_epoch: int,
    ) -> None:
        self.entries, self.transformation, self.splitter = entries, transformation, splitter
        self.batch_size, self.num_batches_per_epoch = batch_size, num_batches_per_epoch
        self.batches = None

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        worker = get_worker_info()  # only ever iterated in a DataLoader worker
        if self.batches is None:
            np.random.seed(worker.seed % 2**32)  # GluonTS's samplers draw from numpy's global generator
            share = self.entries[worker.id :: worker.num_workers]
            count = self.num_batches_per_epoch // worker.num_workers
            count += worker.id < self.num_batches_per_epoch % worker.num_workers
            data = list(self.transformation.apply(share, is_train=True))
            self.batches = training_batches(data, self.splitter, self.batch_size, count)
        return iter(self.batches)

    def __len__(self) -> int:
        return self.num_batches_per_epoch


class EntryBatches(Generic[Item]):
    """Items (data entries) in lists of ``batch_size``: sized and iterable, but no list (Lightning reads a list
    as many loaders)."""

    def __init__(self, entries: Sequence[Item], batch_size: int) -> None:
        self.entries, self.batch_size = entries, batch_size

    def __iter__(self) -> Iterator[list[Item]]:
        return (list(self.entries[i : i + self.batch_size]) for i in range(0, len(self.entries), self.batch_size))

    def __len__(self) -> int:
        return -(-len(self.entries) // self.batch_size)


class PredictItem(NamedTuple):
    """What ``predict`` forecasts: the ``prediction_length`` steps after ``history``'s target (its covariates
    cover them), and their ``actual`` values ``(H,)`` where the data holds them (``None`` past the data's end)."""

    history: Entry
    actual: np.ndarray | None


def series_histories(entries: list[Entry]) -> list[Entry]:
    """Each series' whole history: of the entries sharing an ``item_id``, the longest (entries without one
    stand alone), in order of first appearance."""
    longest: dict[Any, Entry] = {}
    for index, entry in enumerate(entries):
        key = entry.get("item_id", ("#", index))
        if key not in longest or len(entry["target"]) >= len(longest[key]["target"]):
            longest[key] = entry
    return list(longest.values())


class ForecastDataModule(pl.LightningDataModule):
    """Train, validation and test splits of a :class:`~pararnn_ts.forecast.data.ForecastDataset`.

    ``setup`` loads the data once (``self.data``, a :class:`~pararnn_ts.forecast.data.ForecastData`).
    Validation holds out the last ``validation_windows`` horizons of each training series
    (:func:`holdout_windows`); training sees what comes before them. The test split is the
    dataset's official one, served as lists of ``batch_size`` raw test entries for the module's
    test step to forecast and score. ``predict`` serves lists of :class:`PredictItem`.

    Args:
        dataset: the dataset spec, e.g. ``FCompDataset("tourism", "quarterly")``.
        batch_size: windows per training / validation batch, series per test batch.
        num_batches_per_epoch: training batches per epoch (windows are drawn at random from an endless stream).
        num_workers: DataLoader processes making training batches (0: in the main process).
        validation_windows: horizons held out at the end of each training series (0: no validation).
        context_length: the context a forecaster reads on this data unless its own ``context_length`` is set
            (the dataset's usual setting, as the benchmark's per-dataset ``model_args``); ``None``: the
            forecaster's multiple of the horizon.
        predict_split: what ``pararnn-ts predict`` forecasts: ``"future"``, the ``prediction_length`` steps after
            each series' end (its longest test entry; data with dynamic covariates cannot, as they end with the
            series); ``"test"``, the official test windows, as the test step scores them.
    """

    def __init__(
        self,
        dataset: ForecastDataset,
        batch_size: int = 32,
        num_batches_per_epoch: int = 50,
        num_workers: int = 0,
        validation_windows: int = 1,
        context_length: int | None = None,
        predict_split: PredictSplit = "future",
    ) -> None:
        super().__init__()
        if not isinstance(dataset, ForecastDataset):
            raise TypeError(f"ForecastDataModule: dataset must be a ForecastDataset spec, got {type(dataset).__name__}")
        for name, value in (("batch_size", batch_size), ("num_batches_per_epoch", num_batches_per_epoch)):
            if value < 1:
                raise ValueError(f"ForecastDataModule: {name} must be >= 1, got {value}")
        for name, value in (("num_workers", num_workers), ("validation_windows", validation_windows)):
            if value < 0:
                raise ValueError(f"ForecastDataModule: {name} must be >= 0, got {value}")
        if context_length is not None and context_length < 1:
            raise ValueError(f"ForecastDataModule: context_length must be >= 1 (or None), got {context_length}")
        if predict_split not in ("future", "test"):
            raise ValueError(f'ForecastDataModule: predict_split must be "future" or "test", got {predict_split!r}')
        self.dataset, self.context_length, self.predict_split = dataset, context_length, predict_split
        self.batch_size, self.num_batches_per_epoch = batch_size, num_batches_per_epoch
        self.num_workers, self.validation_windows = num_workers, validation_windows
        self.data: ForecastData | None = None
        self.train_entries: list[Entry] = []
        self.val_entries: list[Entry] = []

    def setup(self, stage: str | None = None) -> None:
        if self.data is None:
            self.load()
        if stage == "predict":
            self.check_predict_split()  # before any batch (pararnn-ts predict calls it before the run starts)

    def load(self) -> None:
        """Load the data and cut the training and validation entries."""
        self.data = self.dataset.load()
        self.train_entries, self.val_entries = holdout_windows(
            self.data.train, self.data.prediction_length, self.validation_windows
        )
        if not self.train_entries:
            raise ValueError(
                f"{self.data.name}: no series is longer than validation_windows={self.validation_windows} horizons "
                f"of {self.data.prediction_length}; lower validation_windows"
            )

    def _module(self) -> Any:
        module = self.trainer.lightning_module if self.trainer is not None else None
        if module is None or getattr(module, "transformation", None) is None:
            raise RuntimeError(
                "ForecastDataModule's loaders need the model's transformation and instance splitters: use it "
                "through a Trainer with a ParaRNNForecaster (or a module with .transformation and .instance_splitter)"
            )
        return module

    def train_dataloader(self) -> Any:
        module = self._module()
        if self.num_workers > 0:
            splitter = module.instance_splitter("training")
            batches = WorkerTrainingBatches(
                self.train_entries, module.transformation, splitter, self.batch_size, self.num_batches_per_epoch
            )
            workers = min(self.num_workers, len(self.train_entries))  # each worker needs a series
            return DataLoader(batches, batch_size=None, num_workers=workers, persistent_workers=True)
        data = list(module.transformation.apply(self.train_entries, is_train=True))  # once, not every cycle
        return training_batches(data, module.instance_splitter("training"), self.batch_size, self.num_batches_per_epoch)

    def val_dataloader(self) -> Any:
        if not self.val_entries:
            return []
        module = self._module()
        data = list(module.transformation.apply(self.val_entries, is_train=True))
        return validation_batches(data, module.instance_splitter("validation"), self.batch_size)

    def test_dataloader(self) -> EntryBatches[Entry]:
        return EntryBatches(self.data.test, self.batch_size)

    def predict_dataloader(self) -> EntryBatches[PredictItem]:
        return EntryBatches(self.predict_items(), self.batch_size)

    def predict_items(self) -> list[PredictItem]:
        """The forecasts ``predict`` makes, as ``predict_split`` says (the data must be set up)."""
        self.check_predict_split()
        data = self.data
        if self.predict_split == "test":
            histories, actuals = split_windows(data.test, data.prediction_length)
            return [PredictItem(history, actual) for history, actual in zip(histories, actuals, strict=True)]
        return [PredictItem(history, None) for history in series_histories(data.test)]

    def check_predict_split(self) -> None:
        """Raise ``ValueError`` if the data cannot serve ``predict_split``: ``"future"`` needs covariates past
        the series' ends, which no dataset here holds. Loads the data if it is not loaded yet."""
        if self.data is None:
            self.load()
        data = self.data
        if self.predict_split == "future" and data.num_feat_dynamic_real:
            raise ValueError(
                f"{data.name} has {data.num_feat_dynamic_real} dynamic covariates, which end where its series end, "
                "so the steps after them cannot be forecast here: predict the test windows instead "
                "(--data.init_args.predict_split=test), or call ParaRNNForecaster.load_from_checkpoint(path)"
                ".predictor().predict(entries) with entries whose feat_dynamic_real reaches prediction_length steps "
                "past the target"
            )
