"""``ParaRNNEstimator``: a ParaRNN forecaster as a GluonTS estimator (transformation, splitters, loaders, predictor).

The data pipeline is DeepAR's: missing targets are imputed and flagged, calendar features plus the
log age (and any ``feat_dynamic_real`` rows) are stacked into ``time_feat``, series without static
features get dummy ones (a zero category of cardinality 1, a zero real), and an instance splitter
cuts ``past_length = context_length + max(lags_seq)`` steps of past (``+ seasonality`` where that is longer, with
the seasonal-naive offset) and ``prediction_length`` of future.
"""

# No ``from __future__ import annotations``: GluonTS's ``@validated()`` reads the annotations at runtime.

import functools
import itertools
from collections.abc import Iterable, Iterator
from typing import Any, get_args

import torch
from gluonts.core.component import validated
from gluonts.dataset.common import Dataset
from gluonts.dataset.field_names import FieldName
from gluonts.dataset.loader import as_stacked_batches
from gluonts.itertools import Cyclic
from gluonts.model.forecast_generator import SampleForecastGenerator
from gluonts.time_feature import TimeFeature, time_features_from_frequency_str
from gluonts.torch.model.estimator import PyTorchLightningEstimator
from gluonts.torch.model.predictor import PyTorchPredictor
from gluonts.transform import (
    AddAgeFeature,
    AddObservedValuesIndicator,
    AddTimeFeatures,
    AsNumpyArray,
    Chain,
    DummyValueImputation,
    ExpectedNumInstanceSampler,
    InstanceSampler,
    InstanceSplitter,
    RemoveFields,
    SetField,
    TestSplitSampler,
    Transformation,
    ValidationSplitSampler,
    VstackFeatures,
)

from ..core.cell import Mode
from ..nn.distribution_heads import DISTRIBUTION_HEADS
from .lightning_module import (
    LR_SCHEDULES,
    MODEL_INPUT_NAMES,
    ForecastTrainingModule,
    ParaRNNLightningModule,
    check_ema_decay,
)
from .module import LOSS_WEIGHTINGS, NAIVE_DRIFTS, RNN_CELLS, gate_terms

PREDICTION_INPUT_NAMES = list(MODEL_INPUT_NAMES)
TRAINING_INPUT_NAMES = [*PREDICTION_INPUT_NAMES, "future_target", "future_observed_values"]
DISTRIBUTIONS = tuple(DISTRIBUTION_HEADS)
SPLITTER_MODES = ("training", "validation", "test")
#: the shortest default context: ``max(2 * prediction_length, MIN_CONTEXT_LENGTH)``
MIN_CONTEXT_LENGTH = 8
#: the value that stands in for missing targets (flagged in ``observed_values``); in every distribution's support
IMPUTED_VALUE = 0.0


def frequency_time_features(freq: str) -> list[TimeFeature]:
    """GluonTS's calendar features for ``freq``; a ``ValueError`` naming ``freq`` when pandas or GluonTS lack it."""
    try:
        return time_features_from_frequency_str(freq)
    except (ValueError, RuntimeError) as error:
        raise ValueError(
            f"freq={freq!r} is not a frequency GluonTS knows; use a pandas offset alias such as 'h', 'D', 'W', "
            f"'M', 'Q', 'Y' or '30min' ({error})"
        ) from None


def default_context_length(prediction_length: int) -> int:
    """Twice the horizon, at least :data:`MIN_CONTEXT_LENGTH` steps."""
    return max(2 * prediction_length, MIN_CONTEXT_LENGTH)


class ParaRNNSampleForecastGenerator(SampleForecastGenerator):
    """GluonTS's ``SampleForecastGenerator`` that honours ``predictor.predict(data, num_samples=N)``: the network
    draws ``N`` paths in one call (on the quantile grid of ``N`` levels, see ``quantile_grid_samples``), where
    GluonTS's repeats the network's ``num_parallel_samples`` paths and cuts them to ``N`` (a repeated grid, or a
    random part of it). Without ``num_samples``: ``num_parallel_samples`` paths."""

    @validated()
    def __init__(self) -> None:
        pass

    def __call__(
        self,
        inference_data_loader: Iterable[dict[str, Any]],
        prediction_net: torch.nn.Module,
        input_names: list[str],
        output_transform: Any,
        num_samples: int | None,
        **kwargs: Any,
    ) -> Iterator[Any]:
        net = prediction_net
        if num_samples:
            if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
                raise ValueError(f"predict: num_samples must be a positive int (or None), got {num_samples!r}")
            net = functools.partial(prediction_net, num_parallel_samples=num_samples)
        yield from super().__call__(inference_data_loader, net, input_names, output_transform, num_samples, **kwargs)


class EpochOfBatches:
    """``num_batches`` batches per pass over an endless stream; sized, so Lightning knows an epoch's length."""

    def __init__(self, batches: Iterable[dict[str, torch.Tensor]], num_batches: int) -> None:
        self.stream = iter(batches)
        self.num_batches = num_batches

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return itertools.islice(self.stream, self.num_batches)

    def __len__(self) -> int:
        return self.num_batches


def training_batches(
    data: Dataset,
    splitter: Transformation,
    batch_size: int,
    num_batches_per_epoch: int,
    shuffle_buffer_length: int | None = None,
) -> EpochOfBatches:
    """Training batches of ``TRAINING_INPUT_NAMES`` tensors, cut by ``splitter`` from transformed entries drawn forever.

    Each epoch continues the stream where the last one stopped (GluonTS's convention).
    """
    instances = splitter.apply(Cyclic(data).stream(), is_train=True)
    batches = as_stacked_batches(
        instances,
        batch_size=batch_size,
        shuffle_buffer_length=shuffle_buffer_length,
        field_names=TRAINING_INPUT_NAMES,
        output_type=torch.tensor,
    )
    return EpochOfBatches(batches, num_batches_per_epoch)


def validation_batches(data: Dataset, splitter: Transformation, batch_size: int) -> Iterable[dict[str, torch.Tensor]]:
    """One pass of batches over the windows ``splitter`` cuts from transformed entries (the same every pass)."""
    instances = splitter.apply(data, is_train=True)
    return as_stacked_batches(
        instances, batch_size=batch_size, field_names=TRAINING_INPUT_NAMES, output_type=torch.tensor
    )


def _check_positive(**values: int | float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"ParaRNNEstimator: {name} must be > 0, got {value!r}")


class ParaRNNEstimator(PyTorchLightningEstimator):
    """GluonTS estimator of a :class:`~pararnn_ts.forecast.module.ParaRNNForecastModel`: train, then predict.

    ``estimator.train(train_entries, validation_entries)`` returns a ``PyTorchPredictor`` that works
    with ``make_evaluation_predictions`` / ``gluonts.model.evaluate_model`` and serializes with
    ``predictor.serialize(path)`` / ``Predictor.deserialize(path)``.

    Args:
        freq: pandas frequency of the data (``"M"``, ``"Q"``, ``"h"``, ``"30min"``, ...).
        prediction_length: horizon ``H``.
        context_length: steps the network reads before the horizon (default
            :func:`default_context_length`); lags reach ``max(lags_seq)`` further back.
        cell, hidden_size, num_layers, num_heads, dropout, copula_rank, lags_seq, scaling, mode: of the network.
        distribution: ``"student_t"``, ``"normal"``, ``"johnson_su"``, ``"negative_binomial"`` (counts: training
            refuses targets that are not non-negative integers) or ``"quantile"``.
        quantiles: levels of the ``"quantile"`` head (only with it).
        naive_offset, naive_drift, naive_gate, seasonality, context_loss_weight, quantile_grid_samples,
            loss_weighting: of the network (the seasonal-naive location offset, its drift, its gated mix with the
            last value and, with ``naive_gate=["last", "level"]``, the last season's mean, its season length, the
            weight of the context steps' one-step-ahead loss, quantile-grid sample paths, and ``"uniform"`` or
            ``"scale"``: series weighted equally in the training loss, or by their mean scale, as in wQL).
        nonnegative_pred_samples: clip the forecast's sample paths at 0 (data that cannot be negative).
        num_feat_dynamic_real, num_feat_static_real, num_feat_static_cat, cardinality, embedding_dimension:
            covariates in the data (``cardinality``: one count per categorical feature).
        time_features: calendar features (default: GluonTS's for ``freq``).
        lr, weight_decay: of AdamW (``lr`` 1e-2 by default, chosen on the validation split). lr_schedule,
            patience, ema_decay (a moving average of the weights, which then forecasts; ``None``: the last
            weights): see :class:`~pararnn_ts.forecast.lightning_module.ForecastTrainingModule`.
        batch_size: windows per training batch (and series per prediction batch).
        num_batches_per_epoch: training batches per epoch.
        num_parallel_samples: sample paths per forecast; ``predictor.predict(data, num_samples=N)`` (and
            ``make_evaluation_predictions(..., num_samples=N)``) draws ``N`` instead, in one call of the network.
        trainer_kwargs: for ``lightning.pytorch.Trainer`` (default ``max_epochs=100, gradient_clip_val=10``).
        train_sampler, validation_sampler: where windows are cut (default: about one random window per
            series and epoch; the last window of each validation series).
    """

    @validated()
    def __init__(
        self,
        freq: str,
        prediction_length: int,
        context_length: int | None = None,
        cell: str = "gru",
        hidden_size: int = 40,
        num_layers: int = 2,
        num_heads: int = 1,
        dropout: float = 0.1,
        distribution: str = "student_t",
        quantiles: list[float] | None = None,
        copula_rank: int = 4,
        num_feat_dynamic_real: int = 0,
        num_feat_static_real: int = 0,
        num_feat_static_cat: int = 0,
        cardinality: list[int] | None = None,
        embedding_dimension: list[int] | None = None,
        lags_seq: list[int] | None = None,
        time_features: list[TimeFeature] | None = None,
        scaling: bool = True,
        lr: float = 1e-2,
        weight_decay: float = 1e-8,
        lr_schedule: str = "plateau",
        patience: int = 10,
        ema_decay: float | None = 0.995,
        batch_size: int = 32,
        num_batches_per_epoch: int = 50,
        num_parallel_samples: int = 100,
        trainer_kwargs: dict[str, Any] | None = None,
        train_sampler: InstanceSampler | None = None,
        validation_sampler: InstanceSampler | None = None,
        mode: str = "auto",
        naive_offset: bool | None = None,
        naive_drift: str | None = None,
        naive_gate: bool | list[str] | None = None,
        seasonality: int | None = None,
        context_loss_weight: float = 1.0,
        quantile_grid_samples: bool = True,
        loss_weighting: str = "uniform",
        nonnegative_pred_samples: bool = False,
    ) -> None:
        super().__init__(trainer_kwargs={"max_epochs": 100, "gradient_clip_val": 10.0, **(trainer_kwargs or {})})
        default_time_features = frequency_time_features(freq)
        context_length = default_context_length(prediction_length) if context_length is None else context_length
        _check_positive(
            prediction_length=prediction_length,
            context_length=context_length,
            hidden_size=hidden_size,
            num_layers=num_layers,
            num_heads=num_heads,
            batch_size=batch_size,
            num_batches_per_epoch=num_batches_per_epoch,
            num_parallel_samples=num_parallel_samples,
            lr=lr,
        )
        if cell not in RNN_CELLS:
            raise ValueError(f"ParaRNNEstimator: cell={cell!r} is not one of {tuple(RNN_CELLS)}")
        if mode not in get_args(Mode):
            raise ValueError(f"ParaRNNEstimator: mode={mode!r} is not one of {get_args(Mode)}")
        if distribution not in DISTRIBUTIONS:
            raise ValueError(f"ParaRNNEstimator: distribution={distribution!r} is not one of {DISTRIBUTIONS}")
        if quantiles is not None and distribution != "quantile":
            raise ValueError("ParaRNNEstimator: quantiles are levels of distribution='quantile'; drop them or set it")
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"ParaRNNEstimator: lr_schedule={lr_schedule!r} is not one of {LR_SCHEDULES}")
        if not 0 <= dropout < 1:
            raise ValueError(f"ParaRNNEstimator: dropout must lie in [0, 1), got {dropout}")
        check_ema_decay(ema_decay, owner="ParaRNNEstimator: ")
        if loss_weighting not in LOSS_WEIGHTINGS:
            raise ValueError(f"ParaRNNEstimator: loss_weighting={loss_weighting!r} is not one of {LOSS_WEIGHTINGS}")
        if naive_drift not in NAIVE_DRIFTS:
            raise ValueError(f"ParaRNNEstimator: naive_drift={naive_drift!r} is not one of {NAIVE_DRIFTS}")
        if naive_gate is not None:
            try:
                gate_terms(naive_gate)
            except ValueError as error:
                raise ValueError(f"ParaRNNEstimator: {error}") from None
        if loss_weighting == "scale" and not scaling:
            raise ValueError("ParaRNNEstimator: loss_weighting='scale' weights series by their mean scale: set scaling")
        counts = {
            "context_loss_weight": context_loss_weight,
            "weight_decay": weight_decay,
            "num_feat_dynamic_real": num_feat_dynamic_real,
            "num_feat_static_real": num_feat_static_real,
            "num_feat_static_cat": num_feat_static_cat,
        }
        for name, value in counts.items():
            if value < 0:
                raise ValueError(f"ParaRNNEstimator: {name} must be >= 0, got {value}")
        if num_feat_static_cat > 0 and (cardinality is None or len(cardinality) != num_feat_static_cat):
            raise ValueError(
                f"ParaRNNEstimator: num_feat_static_cat={num_feat_static_cat} needs cardinality with one count per "
                f"feature, got cardinality={cardinality}"
            )
        dummy = num_feat_static_cat == 0 and embedding_dimension in ([], [1])  # GluonTS's dummy, as for cardinality
        if (
            embedding_dimension is not None
            and not dummy
            and (len(embedding_dimension) != num_feat_static_cat or any(d < 1 for d in embedding_dimension))
        ):
            raise ValueError(
                f"ParaRNNEstimator: embedding_dimension must list one positive size per categorical feature "
                f"(num_feat_static_cat={num_feat_static_cat}, cardinality={cardinality}), got {embedding_dimension}; "
                "or leave it None (min(50, (cardinality + 1) // 2) each)"
            )
        if isinstance(copula_rank, bool) or not isinstance(copula_rank, int) or copula_rank < 0:
            raise ValueError(
                f"ParaRNNEstimator: copula_rank must be an int >= 0 (0: independent horizon steps), got {copula_rank!r}"
            )
        if lags_seq is not None and (not lags_seq or min(lags_seq) < 1):
            raise ValueError(
                f"ParaRNNEstimator: lags_seq must be positive lags (1 = the previous step), got {lags_seq}"
            )

        self.freq, self.prediction_length, self.context_length = freq, prediction_length, context_length
        self.cell, self.hidden_size, self.num_layers, self.num_heads = cell, hidden_size, num_layers, num_heads
        self.dropout, self.distribution, self.quantiles = dropout, distribution, quantiles
        self.copula_rank = copula_rank
        self.num_feat_dynamic_real = num_feat_dynamic_real
        self.num_feat_static_real = num_feat_static_real
        self.num_feat_static_cat = num_feat_static_cat
        # Like DeepAR: data without static features gets dummy ones (a category of cardinality 1, a zero real).
        self.cardinality = list(cardinality) if num_feat_static_cat > 0 else [1]
        self.embedding_dimension = embedding_dimension
        self.lags_seq, self.scaling, self.mode = lags_seq, scaling, mode
        self.naive_offset, self.seasonality, self.context_loss_weight = naive_offset, seasonality, context_loss_weight
        self.naive_drift, self.naive_gate = naive_drift, naive_gate
        self.quantile_grid_samples, self.loss_weighting = quantile_grid_samples, loss_weighting
        self.nonnegative_pred_samples = nonnegative_pred_samples
        self.time_features = default_time_features if time_features is None else time_features
        self.extra_time_features = len(self.time_features) - len(default_time_features)
        if num_feat_dynamic_real + self.extra_time_features < 0:
            raise ValueError(
                f"ParaRNNEstimator: the network expects at least the {len(default_time_features)} calendar features "
                f"of freq={freq!r}, got {len(self.time_features)} time_features"
            )
        self.lr, self.weight_decay, self.lr_schedule, self.patience = lr, weight_decay, lr_schedule, patience
        self.ema_decay = ema_decay
        self.batch_size, self.num_batches_per_epoch = batch_size, num_batches_per_epoch
        self.num_parallel_samples = num_parallel_samples
        self.train_sampler = train_sampler or ExpectedNumInstanceSampler(
            num_instances=1.0, min_future=prediction_length
        )
        self.validation_sampler = validation_sampler or ValidationSplitSampler(min_future=prediction_length)

    def model_kwargs(self) -> dict[str, Any]:
        """The arguments of the network (:class:`~pararnn_ts.forecast.module.ParaRNNForecastModel`)."""
        return {
            "freq": self.freq,
            "context_length": self.context_length,
            "prediction_length": self.prediction_length,
            # The network counts freq's calendar features + age + this many rows of time_feat.
            "num_feat_dynamic_real": self.num_feat_dynamic_real + self.extra_time_features,
            # With 0 the network accepts (and ignores) the dummy static columns of create_transformation.
            "num_feat_static_real": self.num_feat_static_real,
            "num_feat_static_cat": self.num_feat_static_cat,
            "cardinality": self.cardinality,
            "embedding_dimension": self.embedding_dimension,
            "cell": self.cell,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "dropout": self.dropout,
            "lags_seq": self.lags_seq,
            "scaling": self.scaling,
            "distribution": self.distribution,
            "quantiles": self.quantiles,
            "copula_rank": self.copula_rank,
            "num_parallel_samples": self.num_parallel_samples,
            "mode": self.mode,
            "naive_offset": self.naive_offset,
            "naive_drift": self.naive_drift,
            "naive_gate": self.naive_gate,
            "seasonality": self.seasonality,
            "context_loss_weight": self.context_loss_weight,
            "quantile_grid_samples": self.quantile_grid_samples,
            "loss_weighting": self.loss_weighting,
            "nonnegative_pred_samples": self.nonnegative_pred_samples,
        }

    def create_transformation(self) -> Transformation:
        """Entry-wise: dummy static features, imputed target + observed flags, and ``time_feat`` (F, T + H)."""
        removed = [FieldName.FEAT_STATIC_REAL] if self.num_feat_static_real == 0 else []
        removed += [FieldName.FEAT_DYNAMIC_REAL] if self.num_feat_dynamic_real == 0 else []
        dummies = [SetField(output_field=FieldName.FEAT_STATIC_CAT, value=[0])] if self.num_feat_static_cat == 0 else []
        if self.num_feat_static_real == 0:
            dummies.append(SetField(output_field=FieldName.FEAT_STATIC_REAL, value=[0.0]))
        dynamic = [FieldName.FEAT_DYNAMIC_REAL] if self.num_feat_dynamic_real > 0 else []
        return Chain(
            [
                RemoveFields(field_names=removed),
                *dummies,
                AsNumpyArray(field=FieldName.FEAT_STATIC_CAT, expected_ndim=1, dtype=int),
                AsNumpyArray(field=FieldName.FEAT_STATIC_REAL, expected_ndim=1),
                AsNumpyArray(field=FieldName.TARGET, expected_ndim=1),
                AddObservedValuesIndicator(
                    target_field=FieldName.TARGET,
                    output_field=FieldName.OBSERVED_VALUES,
                    imputation_method=DummyValueImputation(IMPUTED_VALUE),
                ),
                AddTimeFeatures(
                    start_field=FieldName.START,
                    target_field=FieldName.TARGET,
                    output_field=FieldName.FEAT_TIME,
                    time_features=self.time_features,
                    pred_length=self.prediction_length,
                ),
                AddAgeFeature(
                    target_field=FieldName.TARGET,
                    output_field=FieldName.FEAT_AGE,
                    pred_length=self.prediction_length,
                    log_scale=True,
                ),
                VstackFeatures(
                    output_field=FieldName.FEAT_TIME, input_fields=[FieldName.FEAT_TIME, FieldName.FEAT_AGE, *dynamic]
                ),
                AsNumpyArray(FieldName.FEAT_TIME, expected_ndim=2),
            ]
        )

    def _create_instance_splitter(self, module: ForecastTrainingModule, mode: str) -> InstanceSplitter:
        """Cuts ``module.model.past_length`` steps of past and ``prediction_length`` of future at sampled points.

        ``mode``: ``"training"`` (``train_sampler``), ``"validation"`` (``validation_sampler``) or ``"test"``
        (the end of each series).
        """
        if mode not in SPLITTER_MODES:
            raise ValueError(f"mode={mode!r} is not one of {SPLITTER_MODES}")
        sampler = {"training": self.train_sampler, "validation": self.validation_sampler, "test": TestSplitSampler()}
        return InstanceSplitter(
            target_field=FieldName.TARGET,
            is_pad_field=FieldName.IS_PAD,
            start_field=FieldName.START,
            forecast_start_field=FieldName.FORECAST_START,
            instance_sampler=sampler[mode],
            past_length=module.model.past_length,
            future_length=self.prediction_length,
            time_series_fields=[FieldName.FEAT_TIME, FieldName.OBSERVED_VALUES],
            dummy_value=IMPUTED_VALUE,
        )

    def create_training_data_loader(
        self,
        data: Dataset,
        module: ForecastTrainingModule,
        shuffle_buffer_length: int | None = None,
        **kwargs: Any,
    ) -> EpochOfBatches:
        """``num_batches_per_epoch`` batches per epoch from transformed ``data``."""
        splitter = self._create_instance_splitter(module, "training")
        return training_batches(data, splitter, self.batch_size, self.num_batches_per_epoch, shuffle_buffer_length)

    def create_validation_data_loader(
        self, data: Dataset, module: ForecastTrainingModule, **kwargs: Any
    ) -> Iterable[dict[str, torch.Tensor]]:
        """The last window of each transformed entry of ``data`` (with the default ``validation_sampler``)."""
        return validation_batches(data, self._create_instance_splitter(module, "validation"), self.batch_size)

    def create_lightning_module(self) -> ParaRNNLightningModule:
        return ParaRNNLightningModule(
            model_kwargs=self.model_kwargs(),
            lr=self.lr,
            weight_decay=self.weight_decay,
            lr_schedule=self.lr_schedule,
            patience=self.patience,
            ema_decay=self.ema_decay,
        )

    def create_predictor(
        self,
        transformation: Transformation,
        module: ForecastTrainingModule,
        device: str | torch.device = "auto",
    ) -> PyTorchPredictor:
        """Sample forecasts of the ``prediction_length`` steps after each series: ``num_parallel_samples`` paths, or
        ``predict(data, num_samples=N)``'s ``N`` in one draw (:class:`ParaRNNSampleForecastGenerator`)."""
        return PyTorchPredictor(
            input_names=PREDICTION_INPUT_NAMES,
            prediction_net=module,
            batch_size=self.batch_size,
            prediction_length=self.prediction_length,
            input_transform=transformation + self._create_instance_splitter(module, "test"),
            forecast_generator=ParaRNNSampleForecastGenerator(),
            device=device,
        )
