"""``ParaRNNForecaster``: the LightningModule ``pararnn-ts fit`` trains on a :class:`ForecastDataModule`.

Only model hyper-parameters are arguments; frequency, horizon and covariate counts come from the
data: :meth:`~ParaRNNForecaster.configure_model` builds the network from ``trainer.datamodule.data``
(loaded in the data module's ``setup``), and checkpoints carry those sizes, so that
``load_from_checkpoint`` and ``--ckpt_path`` rebuild the same network. The test loop forecasts
the official test windows, scores them with :func:`pararnn_ts.forecast.metrics.score`, logs
``test_MASE``, ``test_mean_wQL``, ``test_sMAPE``, ``test_coverage_80``, prints them as a Markdown
table and writes ``test_metrics.json`` and ``forecasts.png`` to the trainer's log folder. The predict loop
forecasts the data module's :class:`~pararnn_ts.forecast.datamodule.PredictItem` s (past each series' end, or
the test windows) and writes ``forecasts.csv``, ``forecast_samples.npz`` (see
:mod:`pararnn_ts.forecast.predictions`) and ``forecasts.png`` there. Under DDP every process forecasts every
window (sample paths depend on the order they are drawn in), the scores are the global-zero process's, and it
alone writes the files.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Literal

import numpy as np
import torch
from gluonts.model.forecast import Forecast
from gluonts.torch.model.predictor import PyTorchPredictor
from gluonts.transform import InstanceSplitter, Transformation

from ..cells.factory import CellSpec, record_cell, refuse_builtin_settings, resolve_cell
from ..core.cell import Mode
from ..outputs import gathered, results_folder
from .data import ForecastData, seasonality_of
from .datamodule import PredictItem
from .estimator import ParaRNNEstimator
from .lightning_module import ForecastTrainingModule
from .metrics import DEFAULT_QUANTILES, score, split_windows
from .module import ParaRNNForecastModel
from .plots import plot_forecasts
from .predictions import FORECASTS_FILE, SAMPLES_FILE, write_forecasts

#: the checkpoint entry holding :func:`data_sizes`
CHECKPOINT_KEY = "forecast_data_sizes"
#: the entry of :func:`data_sizes` holding the static categories' values
CATEGORIES = "categories"
METRICS_FILE = "test_metrics.json"
PLOT_FILE = "forecasts.png"


def data_sizes(data: ForecastData, context_length: int | None = None) -> dict[str, Any]:
    """What the network depends on in the data: frequency, horizon, covariate counts, the number of static reals when
    there are any, each static category's values in code order where the data names them
    (``ForecastData.categories``), and the data module's ``context_length`` when it sets one (the last three are
    absent otherwise, so earlier checkpoints still match)."""
    sizes = {
        "freq": data.freq,
        "prediction_length": data.prediction_length,
        "num_feat_dynamic_real": data.num_feat_dynamic_real,
        "cardinality": list(data.cardinality),
    }
    if data.num_feat_static_real:
        sizes["num_feat_static_real"] = data.num_feat_static_real
    if data.categories:
        sizes[CATEGORIES] = {column: list(values) for column, values in data.categories.items()}
    return sizes if context_length is None else {**sizes, "context_length": context_length}


def size_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The entries of :func:`data_sizes` in which ``saved`` and ``current`` differ; the categories' values count only
    where both have them (checkpoints saved before they were, and data that gives codes, have none)."""
    keys = saved.keys() | current.keys()
    if CATEGORIES not in saved or CATEGORIES not in current:
        keys -= {CATEGORIES}
    return sorted(key for key in keys if saved.get(key) != current.get(key))


def codes_within(current: dict[str, Any], saved: dict[str, Any]) -> bool:
    """Whether data of :func:`data_sizes` ``current``, whose static categories are codes (not named values), differs
    from ``saved`` only in holding fewer codes of some category: a network built for ``saved`` reads it."""
    counts, trained = current["cardinality"], saved["cardinality"]
    others = {key for key in current.keys() | saved.keys() if current.get(key) != saved.get(key)} - {"cardinality"}
    return (
        CATEGORIES not in current
        and not others
        and counts != trained
        and len(counts) == len(trained)
        and all(n <= m for n, m in zip(counts, trained, strict=True))
    )


class ParaRNNForecaster(ForecastTrainingModule):
    """A ParaRNN probabilistic forecaster for the Lightning CLI (network built from the data's sizes).

    Args:
        cell: ``gru`` (ParaGRU), ``lstm`` (ParaLSTM), or a user cell: in a config
            ``cell: {class_path: my_cells.MyCell, init_args: {...}}`` (its own arguments, without ``input_size`` and
            ``hidden_size``: each layer calls it as ``cell(hidden_size, hidden_size)``), in Python a ParaCell subclass
            or a ``functools.partial`` of one; its output must be ``hidden_size`` wide. ``num_heads`` and ``mode``
            configure the built-in cells only and keep their defaults with a user cell. Checkpoints record it as its
            ``{class_path, init_args}`` (see :mod:`pararnn_ts.cells.factory`).
        hidden_size, num_layers, num_heads, dropout, distribution, quantiles, copula_rank, lags_seq,
            scaling, num_parallel_samples, mode, naive_offset, naive_drift, naive_gate, seasonality,
            context_loss_weight, quantile_grid_samples, loss_weighting, nonnegative_pred_samples: as in
            :class:`~pararnn_ts.forecast.estimator.ParaRNNEstimator` (``lags_seq`` and ``seasonality`` default to the
            data's frequency).
        context_length: steps read before the horizon; ``None``: the data module's ``context_length`` if it
            sets one, else ``ceil(context_length_multiple · H)``.
        context_length_multiple: context in horizons when ``context_length`` is not given.
        lr, weight_decay, lr_schedule, patience, ema_decay: see :class:`ForecastTrainingModule`; the defaults
            are the estimator's (chosen on the validation split: ``experiments/forecast/validation.yaml``).
    """

    #: the files ``test`` and ``predict`` write to the run's folder (``pararnn-ts`` refuses to replace them)
    RESULT_FILES = {"test": (METRICS_FILE, PLOT_FILE), "predict": (FORECASTS_FILE, SAMPLES_FILE, PLOT_FILE)}

    def __init__(
        self,
        cell: CellSpec = "gru",
        hidden_size: int = 40,
        num_layers: int = 2,
        num_heads: int = 1,
        dropout: float = 0.1,
        context_length: int | None = None,
        context_length_multiple: float = 2.0,
        distribution: Literal["student_t", "normal", "johnson_su", "negative_binomial", "quantile"] = "student_t",
        quantiles: list[float] | None = None,
        copula_rank: int = 4,
        lags_seq: list[int] | None = None,
        scaling: bool = True,
        lr: float = 1e-2,
        weight_decay: float = 1e-8,
        lr_schedule: Literal["plateau", "cosine", "none"] = "plateau",
        patience: int = 10,
        ema_decay: float | None = 0.995,
        num_parallel_samples: int = 100,
        mode: Mode = "auto",
        naive_offset: bool | None = None,
        naive_drift: Literal["full", "learned"] | None = None,
        naive_gate: bool | list[str] | None = None,
        seasonality: int | None = None,
        context_loss_weight: float = 1.0,
        quantile_grid_samples: bool = True,
        loss_weighting: Literal["uniform", "scale"] = "uniform",
        nonnegative_pred_samples: bool = False,
    ) -> None:
        super().__init__(
            lr=lr, weight_decay=weight_decay, lr_schedule=lr_schedule, patience=patience, ema_decay=ema_decay
        )
        if context_length is not None and context_length < 1:
            raise ValueError(f"ParaRNNForecaster: context_length must be >= 1 (or None), got {context_length}")
        if not context_length_multiple > 0:
            raise ValueError(f"ParaRNNForecaster: context_length_multiple must be > 0, got {context_length_multiple}")
        self.cell_spec = resolve_cell(cell, "ParaRNNForecaster")  # hparams hold it as a config names it
        refuse_builtin_settings("ParaRNNForecaster", self.cell_spec, num_heads=(num_heads, 1), mode=(mode, "auto"))
        self.save_hyperparameters()
        record_cell(self.hparams, "ParaRNNForecaster")
        self.estimator: ParaRNNEstimator | None = None
        self.transformation: Transformation | None = None
        self.data_sizes: dict[str, Any] | None = None
        self.test_forecasts: list[Forecast] = []
        self.test_entries: list[dict[str, Any]] = []
        self.predicted: list[tuple[PredictItem, Forecast]] = []
        # (batch number, ...) of this process's batches of a test or predict loop, gathered at its end
        self._test_batches: list[tuple[int, list[Forecast], list[dict[str, Any]]]] = []
        self._predict_batches: list[tuple[int, list[tuple[PredictItem, Forecast]]]] = []

    def setup(self, stage: str) -> None:
        """Code the data's static categories as the network was trained when it is built already
        (``load_from_checkpoint``; see :meth:`code_categories`); refuse a ``--trainer.precision`` that cannot train
        on the data (:func:`check_precision`) before the run."""
        if self.model is not None:
            self.code_categories(self.data_sizes.get(CATEGORIES))
        data = getattr(self.trainer.datamodule, "data", None)
        if stage in ("fit", "validate") and isinstance(data, ForecastData):
            check_precision(self.trainer.precision, data)

    def code_categories(self, categories: dict[str, list[str]] | None) -> bool:
        """Load the data module's data again with its static categories coded by ``categories`` (each one's values in
        the network's code order) when it names them and codes them otherwise, through its dataset's
        ``category_values`` (:class:`~pararnn_ts.forecast.csv_data.CsvDataset`'s): a file holding some of the
        values then codes them as in training, one holding others is refused. True if it did."""
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        data = getattr(datamodule, "data", None)
        if (
            not categories
            or not isinstance(data, ForecastData)
            or data.categories in ({}, categories)
            or not hasattr(datamodule.dataset, "category_values")
        ):
            return False
        datamodule.dataset.category_values = categories
        datamodule.load()
        return True

    def configure_model(self) -> None:
        """Build the network (once) from the sizes of ``trainer.datamodule.data``.

        Without a trainer (``load_from_checkpoint``) there is no data: :meth:`on_load_checkpoint` builds it.
        """
        if self.model is not None or self._trainer is None:
            return
        if not isinstance(getattr(self.trainer.datamodule, "data", None), ForecastData):
            raise ValueError(
                "ParaRNNForecaster builds its network from the data: train it with a ForecastDataModule "
                "(data: class_path: pararnn_ts.forecast.datamodule.ForecastDataModule)"
            )
        self.build(self.data_module_sizes())

    def data_module_sizes(self) -> dict[str, Any]:
        """:func:`data_sizes` of the trainer's data module's data."""
        datamodule = self.trainer.datamodule
        return data_sizes(datamodule.data, getattr(datamodule, "context_length", None))

    def build(self, sizes: dict[str, Any]) -> None:
        """Make the network, the transformation and the instance splitters for data of ``sizes``."""
        hp = self.hparams
        horizon = sizes["prediction_length"]
        self.estimator = ParaRNNEstimator(
            freq=sizes["freq"],
            prediction_length=horizon,
            context_length=hp.context_length
            or sizes.get("context_length")
            or math.ceil(hp.context_length_multiple * horizon),
            cell=self.cell_spec,
            hidden_size=hp.hidden_size,
            num_layers=hp.num_layers,
            num_heads=hp.num_heads,
            dropout=hp.dropout,
            distribution=hp.distribution,
            quantiles=hp.quantiles,
            copula_rank=hp.copula_rank,
            lags_seq=hp.lags_seq,
            scaling=hp.scaling,
            num_feat_dynamic_real=sizes["num_feat_dynamic_real"],
            num_feat_static_real=sizes.get("num_feat_static_real", 0),
            num_feat_static_cat=len(sizes["cardinality"]),
            cardinality=sizes["cardinality"] or None,
            lr=hp.lr,
            weight_decay=hp.weight_decay,
            lr_schedule=hp.lr_schedule,
            patience=hp.patience,
            ema_decay=hp.ema_decay,
            num_parallel_samples=hp.num_parallel_samples,
            mode=hp.mode,
            naive_offset=hp.naive_offset,
            naive_drift=hp.naive_drift,
            naive_gate=hp.naive_gate,
            seasonality=hp.seasonality,
            context_loss_weight=hp.context_loss_weight,
            quantile_grid_samples=hp.quantile_grid_samples,
            loss_weighting=hp.loss_weighting,
            nonnegative_pred_samples=hp.nonnegative_pred_samples,
        )
        self.set_model(ParaRNNForecastModel(**self.estimator.model_kwargs()))
        self.transformation = self.estimator.create_transformation()
        self.data_sizes = dict(sizes)

    def instance_splitter(self, mode: str) -> InstanceSplitter:
        """Windows of ``past_length + H`` steps: ``mode`` is ``"training"``, ``"validation"`` or ``"test"``."""
        return self.estimator._create_instance_splitter(self, mode)

    def predictor(self) -> PyTorchPredictor:
        """A GluonTS predictor of this module's weights, on its device. Its network is the estimator's
        (GluonTS-serializable) module holding them, so ``predictor().serialize(path)`` works as for the estimator's
        predictors."""
        net = self.estimator.create_lightning_module()
        net.load_state_dict(self.state_dict())
        net.to(device=self.device, dtype=next(self.parameters()).dtype)
        return self.estimator.create_predictor(self.transformation, net.eval(), device=str(self.device))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = self.data_sizes

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        sizes = checkpoint.get(CHECKPOINT_KEY)
        if sizes is None:
            raise ValueError(f"this checkpoint has no {CHECKPOINT_KEY!r}: it was not saved by a ParaRNNForecaster")
        if self.model is None:
            self.build(sizes)
            return
        if self.code_categories(sizes.get(CATEGORIES)):
            self.build(self.data_module_sizes())  # for the data as now coded: the checkpoint's cardinality
        elif self._trainer is not None and self._trainer.state.fn != "fit" and codes_within(self.data_sizes, sizes):
            self.build({**self.data_sizes, "cardinality": sizes["cardinality"]})  # data with some of the codes
        differ = size_differences(sizes, self.data_sizes)
        if differ:
            saved, current = (", ".join(f"{key}={of.get(key)!r}" for key in differ) for of in (sizes, self.data_sizes))
            raise ValueError(
                f"the checkpoint's network was built for data with {saved}, this data has {current}: predict, test "
                f"or resume on the dataset it was trained on, or on data of the same {', '.join(differ)}"
            )

    def forecast(
        self, predictor: PyTorchPredictor, entries: list[dict[str, Any]], num_samples: int | None = None
    ) -> list[Forecast]:
        """``predictor``'s forecasts of ``entries`` (``num_samples`` paths each; ``None``: ``num_parallel_samples``):
        the network runs in the parameters' dtype (the trainer's mixed-precision autocast is off here) and the
        samples come in at least float32 (see :attr:`~pararnn_ts.forecast.module.ParaRNNForecastModel.head_dtype`):
        GluonTS turns them into NumPy arrays, which have no bfloat16."""
        with torch.autocast(self.device.type, enabled=False):
            return list(predictor.predict(entries, num_samples=num_samples))

    def forecast_batch(
        self, predictor: PyTorchPredictor, entries: list[dict[str, Any]], index: int, num_samples: int | None = None
    ) -> list[Forecast]:
        """:meth:`forecast` of batch number ``index`` of a test or predict loop, its sample paths drawn from the
        random state seeded by the run's seed and ``index`` (the global state is left as it was): the same in
        whichever process forecasts the batch, so a DDP run forecasts as one process does."""
        cuda = self.device.index if self.device.type == "cuda" else None  # Lightning's module device has an index
        with torch.random.fork_rng(devices=[] if cuda is None else [cuda]):
            run_seed = int(os.environ.get("PL_GLOBAL_SEED", 0))  # the run's seed (Lightning's seed_everything)
            seed = int(np.random.SeedSequence([run_seed, index]).generate_state(1)[0])
            torch.default_generator.manual_seed(seed)  # torch.manual_seed would reseed every CUDA device for good
            if cuda is not None:
                torch.cuda.default_generators[cuda].manual_seed(seed)
            return self.forecast(predictor, entries, num_samples)

    def on_test_epoch_start(self) -> None:
        self.test_forecasts, self.test_entries, self._test_batches = [], [], []
        self._test_predictor = self.predictor()

    def test_step(self, batch: list[dict[str, Any]], batch_idx: int) -> None:
        """Forecast the last ``H`` steps of each official test entry in ``batch`` (GluonTS data entries)."""
        inputs, _ = split_windows(batch, self.data_sizes["prediction_length"])
        index = batch_number(self.trainer.test_dataloaders, batch_idx)
        self._test_batches.append((index, self.forecast_batch(self._test_predictor, inputs, index), batch))

    def on_test_epoch_end(self) -> None:
        # under DDP each process forecast its share of the batches: every process gets them all, in order
        for _, forecasts, entries in in_order(gathered(self.trainer, self._test_batches)):
            self.test_forecasts.extend(forecasts)
            self.test_entries.extend(entries)
        horizon = self.data_sizes["prediction_length"]
        data = getattr(self.trainer.datamodule, "data", None)
        seasonality = getattr(data, "seasonality", None) or seasonality_of(self.data_sizes["freq"])
        metrics = {
            f"test_{name}": float(value)
            for name, value in score(self.test_forecasts, self.test_entries, horizon, seasonality).items()
        }
        metrics = self.trainer.strategy.broadcast(metrics)  # every process logs the scores the first one writes
        self.log_dict(metrics, sync_dist=True, reduce_fx="max")  # the same in every process: max keeps them exact
        folder = results_folder(self.trainer)
        if folder is not None:
            (folder / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
            inputs, actuals = split_windows(self.test_entries, horizon)
            plot_forecasts(inputs, self.test_forecasts, folder / PLOT_FILE, actuals=actuals)
            name = getattr(data, "name", "test")
            table = markdown_table(metrics, title=name)
            print(f"\n{table}\n\nwrote {folder / METRICS_FILE} and {folder / PLOT_FILE}")
        self._test_predictor = None

    def on_predict_epoch_start(self) -> None:
        self.predicted, self._predict_batches = [], []
        self._predict_predictor = self.predictor()

    def predict_step(self, batch: list[PredictItem], batch_idx: int) -> list[Forecast]:
        """Forecast the ``H`` steps after each item's ``history`` in ``batch`` (``PredictItem`` s)."""
        index = batch_number(self.trainer.predict_dataloaders, batch_idx)
        num_samples = getattr(self.trainer.datamodule, "predict_num_samples", None)
        forecasts = self.forecast_batch(self._predict_predictor, [item.history for item in batch], index, num_samples)
        self._predict_batches.append((index, list(zip(batch, forecasts, strict=True))))
        return forecasts

    def on_predict_epoch_end(self) -> None:
        # under DDP each process forecast its share of the batches; the first one writes them all, in order
        batches = in_order(gathered(self.trainer, self._predict_batches))
        self.predicted = [pair for _, pairs in batches for pair in pairs]
        folder = results_folder(self.trainer)
        if folder is not None and self.predicted:
            items, forecasts = zip(*self.predicted, strict=True)
            known = all(item.actual is not None for item in items)
            actuals = [item.actual for item in items] if known else None
            data = getattr(self.trainer.datamodule, "data", None)  # stamped where the data's own timestamps fall
            stamps = {"anchors": data.anchors, "time_zone": data.time_zone} if isinstance(data, ForecastData) else {}
            quantiles = getattr(self.trainer.datamodule, "predict_quantiles", DEFAULT_QUANTILES)
            table, samples = write_forecasts(forecasts, folder, actuals, quantiles=quantiles, **stamps)
            plot_forecasts([item.history for item in items], forecasts, folder / PLOT_FILE, actuals=actuals)
            print(
                f"\nwrote {len(forecasts)} forecasts to {table}, their sample paths to {samples}, a plot to "
                f"{folder / PLOT_FILE}"
            )
        self._predict_predictor = None


def batch_number(loader: Any, batch_idx: int) -> int:
    """The number among all batches of this process's batch ``batch_idx`` of ``loader`` (its ``indices``, as
    :class:`~pararnn_ts.forecast.datamodule.EntryBatches` has; ``batch_idx`` for a loader without)."""
    indices = getattr(loader, "indices", None)
    return batch_idx if indices is None else indices[batch_idx]


def in_order(batches: list[tuple]) -> list[tuple]:
    """``(number, ...)`` records of batches gathered from every process, each number once, in number order (with
    fewer batches than processes every process forecast them all)."""
    return sorted({batch[0]: batch for batch in reversed(batches)}.values(), key=lambda batch: batch[0])


def check_precision(precision: str, data: ForecastData) -> None:
    """A ``ValueError`` naming ``--trainer.precision`` when ``precision`` cannot train on ``data``: ``"16-true"``
    casts every training batch to float16 (Lightning's true half precision), whose largest value is 65504, so
    larger targets, covariates or static reals would become inf. Other precisions fit any float32 data (the network
    runs in their dtype, the scale, distributions and losses in at least float32)."""
    if precision != "16-true" or not data.train:
        return
    largest = max(
        float(np.nanmax(np.abs(values), initial=0.0))
        for entry in data.train
        for values in (
            entry["target"],
            entry.get("feat_dynamic_real", np.zeros(0)),
            entry.get("feat_static_real", np.zeros(0)),
        )
    )
    limit = float(torch.finfo(torch.float16).max)
    if largest > limit:
        raise ValueError(
            f"--trainer.precision 16-true casts every training batch to float16, whose largest value is {limit:.0f}, "
            f"and {data.name!r} has values up to {largest:.4g}: use --trainer.precision bf16-true (bfloat16 has "
            "float32's range), bf16-mixed or 32-true"
        )


def markdown_table(metrics: dict[str, float], title: str = "metric") -> str:
    """``| title | value |`` rows of ``metrics`` (4 significant digits)."""
    rows = [f"| {title} | value |", "|---|---|"]
    rows += [f"| {name} | {value:.4g} |" for name, value in metrics.items()]
    return "\n".join(rows)
