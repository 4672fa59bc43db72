"""``ForecastDataModule``: a forecasting dataset's train / validation / test splits for the Lightning CLI.

The data module loads the data and splits it; how entries become batches (the transformation and
the instance splitters) belongs to the model, so the loaders ask ``trainer.lightning_module`` for
them (:class:`~pararnn_ts.forecast.cli_module.ParaRNNForecaster` provides ``transformation`` and
``instance_splitter(mode)``).
"""

from __future__ import annotations

import copy
import inspect
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, Literal, NamedTuple, TypeVar

import lightning.pytorch as pl
import numpy as np
import torch
from gluonts.dataset.split import slice_data_entry
from gluonts.transform import Transformation
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..loaders import ResumablePasses
from .data import ForecastData, ForecastDataset
from .estimator import training_batches, validation_batches
from .metrics import DEFAULT_QUANTILES, split_windows

Entry = dict[str, Any]
Item = TypeVar("Item")
PredictSplit = Literal["future", "test"]


def holdout_windows(entries: list[Entry], prediction_length: int, windows: int) -> tuple[list[Entry], list[Entry]]:
    """Split each series into training data and ``windows`` validation windows of ``prediction_length`` at its end.

    Training entries end before the first held-out window; validation entries end at each window's end, their last
    ``prediction_length`` steps being the window (windows with no step before them are dropped). A series with no
    step before its windows is trained on whole and not validated.
    """
    train, validation = [], []
    held_out = windows * prediction_length
    for entry in entries:
        length = len(entry["target"])
        if length <= held_out:
            train.append(entry)
            continue
        train.append(slice_data_entry(entry, slice(None, length - held_out)))
        for window in range(windows):
            end = length - window * prediction_length
            if end > prediction_length:
                validation.append(slice_data_entry(entry, slice(None, end)))
    return train, validation


class TrainingEpoch:
    """The epoch whose batches a training loader draws.

    Lightning's fit loop calls ``set_epoch(epoch)`` on ``loader.sampler`` before each epoch (as for a
    ``DistributedSampler``), so :class:`EpochTrainingBatches` carries one of these as ``sampler``. It is
    held in shared memory: DataLoader workers, persistent ones too, read the epoch the main process set.
    A ``fixed`` one stays at ``epoch`` (``--trainer.overfit_batches``: every epoch the same batches).
    """

    def __init__(self, epoch: int = 0, fixed: bool = False) -> None:
        self.value = torch.full((), epoch, dtype=torch.int64).share_memory_()
        self.fixed = fixed

    @property
    def epoch(self) -> int:
        return int(self.value)

    def set_epoch(self, epoch: int) -> None:
        if not self.fixed:
            self.value.fill_(epoch)


def with_numpy_state(state: tuple, items: Iterator[Item]) -> Iterator[Item]:
    """``items``, each made while numpy's global generator is in ``state`` (carried from item to item);
    between items the global generator is as it was, neither read nor moved on."""
    while True:
        outer = np.random.get_state()
        np.random.set_state(state)
        try:
            item = next(items, None)
            state = np.random.get_state()
        finally:
            np.random.set_state(outer)
        if item is None:
            return
        yield item


def epoch_batches(
    data: list[Entry],
    splitter: Transformation,
    batch_size: int,
    num_batches: int,
    seed: int,
    epoch: int,
    stream: int = 0,
) -> Iterator[dict[str, Tensor]]:
    """The ``num_batches`` training batches of ``epoch``: a function of ``(seed, epoch, stream)`` and the arguments.

    The transformed entries are cycled in an order shuffled per epoch, and a fresh copy of ``splitter``
    (its instance sampler may keep running statistics) cuts windows from them; GluonTS's samplers draw
    from numpy's global generator, which is swapped for one seeded by ``(seed, epoch, stream)`` while a
    batch is made (:func:`with_numpy_state`). ``stream`` tells apart the DataLoader workers of an epoch.
    """
    order_seed, window_seed = np.random.SeedSequence([seed, epoch, stream]).spawn(2)
    order = np.random.default_rng(order_seed).permutation(len(data))
    batches = training_batches([data[i] for i in order], copy.deepcopy(splitter), batch_size, num_batches)
    state = np.random.RandomState(np.random.MT19937(window_seed)).get_state()
    return with_numpy_state(state, iter(batches))


def training_stream(rank: int, workers: int = 0, worker: int = 0) -> int:
    """The :func:`epoch_batches` stream of DataLoader worker ``worker`` of ``workers`` (0: batches made in the main
    process) in the process of global rank ``rank``: each its own, and rank 0's those of a single-process fit."""
    return rank * max(workers, 1) + worker


def process_rank(trainer: Any) -> tuple[int, int]:
    """``(global_rank, world_size)`` of ``trainer``'s process (``(0, 1)`` without a distributed trainer)."""
    return getattr(trainer, "global_rank", 0), getattr(trainer, "world_size", 1)


class WorkerTrainingBatches(IterableDataset):
    """Training batches made in DataLoader workers, each from its own share of the series.

    Each worker transforms its share once (use persistent workers), then yields its part of the
    ``num_batches_per_epoch`` batches of each epoch, drawn by :func:`epoch_batches` with the epoch the
    main process set on ``epoch`` and the worker's :func:`training_stream` in the process of global ``rank``.
    """

    def __init__(
        self,
        entries: list[Entry],
        transformation: Transformation,
        splitter: Transformation,
        batch_size: int,
        num_batches_per_epoch: int,
        seed: int = 0,
        epoch: TrainingEpoch | None = None,
        rank: int = 0,
    ) -> None:
        self.entries, self.transformation, self.splitter = entries, transformation, splitter
        self.batch_size, self.num_batches_per_epoch, self.seed = batch_size, num_batches_per_epoch, seed
        self.epoch = TrainingEpoch() if epoch is None else epoch
        self.rank = rank
        self.data: list[Entry] | None = None

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        worker = get_worker_info()  # only ever iterated in a DataLoader worker
        if self.data is None:
            self.data = list(self.transformation.apply(self.entries[worker.id :: worker.num_workers], is_train=True))
        count = self.num_batches_per_epoch // worker.num_workers
        count += worker.id < self.num_batches_per_epoch % worker.num_workers
        stream = training_stream(self.rank, worker.num_workers, worker.id)
        return epoch_batches(self.data, self.splitter, self.batch_size, count, self.seed, self.epoch.epoch, stream)

    def __len__(self) -> int:
        return self.num_batches_per_epoch


class EpochTrainingBatches(ResumablePasses):
    """The training loader: ``num_batches`` batches per epoch, epoch ``e``'s made by ``make_epoch(e)``, in
    resumable passes (:class:`~pararnn_ts.loaders.ResumablePasses`). Its :attr:`sampler`, a
    :class:`TrainingEpoch`, carries a pass's epoch to the DataLoader workers of ``workers`` (the DataLoader
    that ``make_epoch`` passes over, if any).
    """

    def __init__(
        self,
        make_epoch: Callable[[int], Iterator[dict[str, Tensor]]],
        num_batches: int,
        sampler: TrainingEpoch,
        workers: DataLoader | None = None,
    ) -> None:
        self.make_epoch, self.num_batches, self.sampler, self.workers = make_epoch, num_batches, sampler, workers

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        return self.passes()

    def epoch_batches(self, epoch: int) -> Iterator[dict[str, Tensor]]:
        return self.make_epoch(epoch)

    def __len__(self) -> int:
        return self.num_batches

    # When a fit ends, Lightning stops the worker processes of a loader's ``_iterator`` (``CombinedLoader.reset``),
    # as it would the DataLoader's: persistent workers left to the garbage collector can hold it up for seconds.
    @property
    def _iterator(self) -> Any:
        return None if self.workers is None else self.workers._iterator

    @_iterator.setter
    def _iterator(self, value: Any) -> None:
        if self.workers is not None:
            self.workers._iterator = value


class EntryBatches(Generic[Item]):
    """Items (data entries) in lists of ``batch_size``: sized and iterable, but no list (Lightning reads a list
    as many loaders).

    Under DDP (``world_size`` processes) the process of ``rank`` takes batches ``rank, rank + world_size, ...`` of
    them all; with fewer batches than processes each takes them all (a process without a batch would skip the
    end of the loop, where the processes meet). ``indices``: the numbers of this process's batches among all.
    """

    def __init__(self, entries: Sequence[Item], batch_size: int, rank: int = 0, world_size: int = 1) -> None:
        self.entries, self.batch_size = entries, batch_size
        count = -(-len(entries) // batch_size)
        self.indices = list(range(rank, count, world_size)) if count >= world_size else list(range(count))

    def __iter__(self) -> Iterator[list[Item]]:
        size = self.batch_size
        return (list(self.entries[i * size : (i + 1) * size]) for i in self.indices)

    def __len__(self) -> int:
        return len(self.indices)


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


PLAIN = (str, int, float, bool, type(None))


def spec_of(dataset: Any) -> Any:
    """``dataset`` as a config names it, in plain values a checkpoint can hold (``torch.load(weights_only=True)``,
    YAML): a mapping as given (the Lightning CLI records its config's ``{class_path, init_args}``), an object as
    its ``class_path`` and the ``__init__`` arguments it keeps as plain attributes of the same name (paths as
    str)."""
    if isinstance(dataset, dict):
        return dataset
    cls = type(dataset)
    parameters = inspect.signature(cls.__init__).parameters
    init_args = {}
    for name, value in vars(dataset).items():
        value = os.fspath(value) if isinstance(value, os.PathLike) else value
        if name in parameters and is_plain(value):
            init_args[name] = value
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": init_args}


def is_plain(value: Any) -> bool:
    """Whether ``value`` is ``None``, a str, number or bool, or a list, tuple or str-keyed dict of such values."""
    if isinstance(value, (list, tuple)):
        return all(is_plain(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(key, str) and is_plain(item) for key, item in value.items())
    return isinstance(value, PLAIN)


def unobserved_windows(data: ForecastData) -> int:
    """How many of ``data``'s test windows have no observed actual (their last ``prediction_length`` target values
    all missing): rows with covariates and an empty target at the end of a series make such windows."""
    return sum(not np.isfinite(entry["target"][-data.prediction_length :]).any() for entry in data.test)


class ForecastDataModule(pl.LightningDataModule):
    """Train, validation and test splits of a :class:`~pararnn_ts.forecast.data.ForecastDataset`.

    ``setup`` loads the data once (``self.data``, a :class:`~pararnn_ts.forecast.data.ForecastData`).
    Validation holds out the last ``validation_windows`` horizons of each training series
    (:func:`holdout_windows`); training sees what comes before them. The test split is the
    dataset's official one, served as lists of ``batch_size`` raw test entries for the module's
    test step to forecast and score. ``predict`` serves lists of :class:`PredictItem`.

    Training windows are drawn at random, epoch ``e``'s from streams seeded by ``(seed, e)`` alone
    (:func:`epoch_batches`): a run resumed from a checkpoint trains on the batches the uninterrupted run
    would have (mid-epoch too, see :class:`EpochTrainingBatches`). With ``--trainer.overfit_batches`` every epoch
    trains on epoch 0's first batches.

    Under DDP each process draws its own training stream (seeded by its rank too, :func:`training_stream`) and
    validates on its share of the validation windows (``val_loss`` is their mean over all processes). Test and
    predict forecast its share of the batches (:class:`EntryBatches`); each batch draws its sample paths from a
    state seeded by its number (``ParaRNNForecaster.forecast_batch``), so they, and the test scores, are those of a
    single process.

    The arguments are saved in checkpoints (``datamodule_hyper_parameters``, the dataset as ``{class_path,
    init_args}``), so that ``pararnn-ts fit --ckpt_path`` warns when a resumed fit's data arguments differ.

    Args:
        dataset: the dataset spec, e.g. ``FCompDataset("tourism", "quarterly")``.
        batch_size: windows per training / validation batch, series per test batch.
        num_batches_per_epoch: training batches per epoch (of windows drawn at random, afresh each epoch).
        num_workers: DataLoader processes making training batches (0: in the main process).
        validation_windows: horizons held out at the end of each training series (0: no validation).
        context_length: the context a forecaster reads on this data unless its own ``context_length`` is set
            (the dataset's usual setting, as the benchmark's per-dataset ``model_args``); ``None``: the
            forecaster's multiple of the horizon.
        predict_split: what ``pararnn-ts predict`` forecasts: ``"future"``, the ``prediction_length`` steps after
            each series' end (its longest test entry; not for data with dynamic covariates, which no row gives
            there); ``"test"``, the official test windows, as the test step scores them: with rows of known
            future covariates and an empty target at the end of each series, those rows are forecast.
        predict_quantiles: the levels ``forecasts.csv`` gives (``q<level>`` columns), each in (0, 1); ``None``:
            0.1, 0.2, ..., 0.9.
        predict_num_samples: sample paths each ``predict`` forecast draws (and ``forecast_samples.npz`` keeps);
            ``None``: the forecaster's ``num_parallel_samples``.
        seed: seeds the training windows (with the epoch); ``None``: the global seed when the training loader is
            made (``torch.initial_seed()``, which ``seed_everything``, the CLI's ``--seed_everything``, sets).
    """

    #: the arguments only ``predict`` reads (a resumed fit does not warn when they differ from the checkpoint's)
    predict_arguments = ("predict_split", "predict_quantiles", "predict_num_samples")

    def __init__(
        self,
        dataset: ForecastDataset,
        batch_size: int = 32,
        num_batches_per_epoch: int = 50,
        num_workers: int = 0,
        validation_windows: int = 1,
        context_length: int | None = None,
        predict_split: PredictSplit = "future",
        predict_quantiles: list[float] | None = None,
        predict_num_samples: int | None = None,
        seed: int | None = None,
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
        if seed is not None and (not isinstance(seed, int) or seed < 0):
            raise ValueError(f"ForecastDataModule: seed must be an int >= 0 (or None), got {seed!r}")
        if predict_split not in ("future", "test"):
            raise ValueError(f'ForecastDataModule: predict_split must be "future" or "test", got {predict_split!r}')
        if predict_quantiles is not None and not (
            predict_quantiles and all(isinstance(q, (int, float)) and 0 < q < 1 for q in predict_quantiles)
        ):
            raise ValueError(
                f"ForecastDataModule: predict_quantiles must be levels in (0, 1), e.g. [0.05, 0.5, 0.95], got "
                f"{predict_quantiles!r}"
            )
        if predict_num_samples is not None and (
            isinstance(predict_num_samples, bool) or not isinstance(predict_num_samples, int) or predict_num_samples < 1
        ):
            raise ValueError(
                f"ForecastDataModule: predict_num_samples must be an int >= 1 (or None), got {predict_num_samples!r}"
            )
        self.save_hyperparameters(logger=False)  # not logged: the forecaster's context_length may differ
        self.hparams["dataset"] = spec_of(self.hparams["dataset"])  # an object outside the Lightning CLI
        self.dataset, self.context_length, self.predict_split = dataset, context_length, predict_split
        self.predict_quantiles = DEFAULT_QUANTILES if predict_quantiles is None else tuple(sorted(predict_quantiles))
        self.predict_num_samples = predict_num_samples
        self.batch_size, self.num_batches_per_epoch = batch_size, num_batches_per_epoch
        self.num_workers, self.validation_windows, self.seed = num_workers, validation_windows, seed
        self.data: ForecastData | None = None
        self.train_entries: list[Entry] = []
        self.val_entries: list[Entry] = []

    def setup(self, stage: str | None = None) -> None:
        if stage == "validate" and self.validation_windows == 0:
            raise ValueError(
                "ForecastDataModule: validation_windows=0 holds out no validation windows, so validate has nothing to "
                "score: pass --data.init_args.validation_windows 1 (or more), or score the test split with test"
            )
        if self.data is None:
            self.load()
        if stage in ("fit", "validate", None):
            self.check_validation_split()
        if stage == "predict":
            self.check_predict_split()  # before any batch (pararnn-ts predict calls it before the run starts)

    def load(self) -> None:
        """Load the data and cut the training and validation entries."""
        self.data = self.dataset.load()
        self.train_entries, self.val_entries = holdout_windows(
            self.data.train, self.data.prediction_length, self.validation_windows
        )

    def check_validation_split(self) -> None:
        """Raise ``ValueError`` if no series is long enough for the validation windows; warn about those that are
        not (they are trained on whole and not validated)."""
        data, windows = self.data, self.validation_windows
        short = [entry for entry in data.train if len(entry["target"]) <= windows * data.prediction_length]
        if windows and len(short) == len(data.train):
            raise ValueError(
                f"{data.name}: no series is longer than validation_windows={windows} horizons of "
                f"{data.prediction_length}; lower validation_windows (0: no validation)"
            )
        if short:
            warnings.warn(
                f"{data.name}: {len(short)} of {len(data.train)} series have no more than validation_windows × "
                f"prediction_length = {windows * data.prediction_length} training values (e.g. "
                f"{short[0].get('item_id')!r}, {len(short[0]['target'])}): they are trained on whole and not "
                "validated",
                stacklevel=2,
            )

    def _module(self) -> Any:
        module = self.trainer.lightning_module if self.trainer is not None else None
        if module is None or getattr(module, "transformation", None) is None:
            raise RuntimeError(
                "ForecastDataModule's loaders need the model's transformation and instance splitters: use it "
                "through a Trainer with a ParaRNNForecaster (or a module with .transformation and .instance_splitter)"
            )
        return module

    def train_dataloader(self) -> EpochTrainingBatches:
        """Each pass draws the batches of the epoch its :class:`TrainingEpoch` holds: the trainer's, or 0 when it
        overfits (``overfit_batches``), in this process's own stream (:func:`training_stream`)."""
        module = self._module()
        splitter = module.instance_splitter("training")
        seed = self.training_seed()
        rank, _ = process_rank(self.trainer)
        epoch = TrainingEpoch(fixed=bool(getattr(self.trainer, "overfit_batches", 0)))
        if self.num_workers > 0:
            batches = WorkerTrainingBatches(
                self.train_entries,
                module.transformation,
                splitter,
                self.batch_size,
                self.num_batches_per_epoch,
                seed=seed,
                epoch=epoch,
                rank=rank,
            )
            workers = min(self.num_workers, len(self.train_entries))  # each worker needs a series
            loader = DataLoader(batches, batch_size=None, num_workers=workers, persistent_workers=True)
            return EpochTrainingBatches(lambda _: iter(loader), self.num_batches_per_epoch, epoch, loader).follow(self)
        data = list(module.transformation.apply(self.train_entries, is_train=True))  # once, not every epoch
        stream = training_stream(rank)

        def make_epoch(_: int) -> Iterator[dict[str, Tensor]]:
            count = self.num_batches_per_epoch
            return epoch_batches(data, splitter, self.batch_size, count, seed, epoch.epoch, stream)

        return EpochTrainingBatches(make_epoch, self.num_batches_per_epoch, epoch).follow(self)

    def training_seed(self) -> int:
        """``seed``, or the global seed (``torch.initial_seed()``) when it is ``None``."""
        return self.seed if self.seed is not None else torch.initial_seed()

    def val_dataloader(self) -> Any:
        """Batches of this process's share of the validation windows: under DDP, every ``world_size``-th entry from
        its rank on (each entry is one window), so that together the processes see each window once."""
        if not self.val_entries:
            return []
        module = self._module()
        rank, world_size = process_rank(self.trainer)
        if len(self.val_entries) < world_size:  # a process without a window would leave the others waiting
            raise ValueError(
                f"{self.data.name}: {len(self.val_entries)} validation windows cannot give each of {world_size} "
                "processes one; raise validation_windows, or fit on fewer devices"
            )
        data = list(module.transformation.apply(self.val_entries[rank::world_size], is_train=True))
        return validation_batches(data, module.instance_splitter("validation"), self.batch_size)

    def test_dataloader(self) -> EntryBatches[Entry]:
        """The test windows, under DDP this process's share of their batches; warns when some have no observed
        actual (they are not scored)."""
        unobserved = unobserved_windows(self.data)
        if unobserved:
            warnings.warn(
                f"{self.data.name}: {unobserved} of {len(self.data.test)} test windows have no observed actual (their "
                f"last {self.data.prediction_length} target values are all empty), so they are not scored, and with "
                "none scored every test metric is NaN. Rows of future covariates with an empty target at the end "
                "of the series do that: forecast them with pararnn-ts predict --data.init_args.predict_split=test, "
                "and test on the data without them",
                stacklevel=2,
            )
        return EntryBatches(self.data.test, self.batch_size, *process_rank(self.trainer))

    def predict_dataloader(self) -> EntryBatches[PredictItem]:
        """The :meth:`predict_items` in batches, under DDP this process's share."""
        return EntryBatches(self.predict_items(), self.batch_size, *process_rank(self.trainer))

    def predict_items(self) -> list[PredictItem]:
        """The forecasts ``predict`` makes, as ``predict_split`` says (the data must be set up)."""
        self.check_predict_split()
        data = self.data
        if self.predict_split == "test":
            histories, actuals = split_windows(data.test, data.prediction_length)
            return [PredictItem(history, actual) for history, actual in zip(histories, actuals, strict=True)]
        histories = series_histories(data.test)
        tested = {history.get("item_id") for history in histories}
        # a series too short for a test window has none: its training entry is the whole series
        untested = [entry for entry in data.train if "item_id" in entry and entry["item_id"] not in tested]
        return [PredictItem(history, None) for history in [*histories, *untested]]

    def check_predict_split(self) -> None:
        """Raise ``ValueError`` if the data cannot serve ``predict_split``: ``"future"`` needs covariates for the
        steps after each series' last row, which no row gives. Loads the data if it is not loaded yet."""
        if self.data is None:
            self.load()
        data = self.data
        if self.predict_split == "future" and data.num_feat_dynamic_real:
            unobserved = unobserved_windows(data)
            here = f" (this data has such rows: {unobserved} of its test windows have no actual)" if unobserved else ""
            raise ValueError(
                f"{data.name} has {data.num_feat_dynamic_real} dynamic covariates, and predict_split=future "
                f"forecasts the {data.prediction_length} steps after each series' last row, where no row gives "
                f"them. To forecast with known future covariates, end each series with {data.prediction_length} "
                "rows of covariates and an empty target and forecast them as the test windows "
                f"(--data.init_args.predict_split=test){here}; or call ParaRNNForecaster.load_from_checkpoint(path)"
                ".predictor().predict(entries) with entries whose feat_dynamic_real reaches prediction_length steps "
                "past the target"
            )
