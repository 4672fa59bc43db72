"""``ParaRNNEstimator``: a ParaRNN forecaster as a GluonTS estimator (transformation, splitters, loaders, predictor).

The data pipeline is DeepAR's, after a check of each entry's covariates (:class:`CheckEntries`): missing targets
are imputed and flagged, calendar features plus the log age (and any ``feat_dynamic_real`` rows) are stacked into
``time_feat``, series without static features get dummy ones (a zero category of cardinality 1, a zero real), and
an instance splitter cuts ``past_length = context_length + max(lags_seq)`` steps of past (``+ seasonality`` where
that is longer, with the seasonal-naive offset) and ``prediction_length`` of future.
"""

# No ``from __future__ import annotations``: GluonTS's ``@validated()`` reads the annotations at runtime.

import functools
import itertools
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pandas as pd
import torch
from gluonts.core.component import validated
from gluonts.dataset.common import DataEntry, Dataset
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
    MapTransformation,
    RemoveFields,
    SetField,
    TestSplitSampler,
    Transformation,
    ValidationSplitSampler,
    VstackFeatures,
)

from ..cells.factory import portable_cell, refuse_builtin_settings
from ..core.cell import Mode
from ..nn.distribution_heads import DISTRIBUTION_HEADS, check_quantiles
from .lightning_module import (
    LR_SCHEDULES,
    MODEL_INPUT_NAMES,
    ForecastTrainingModule,
    ParaRNNLightningModule,
    check_ema_decay,
)
from .module import LOSS_WEIGHTINGS, NAIVE_DRIFTS, gate_terms

PREDICTION_INPUT_NAMES = list(MODEL_INPUT_NAMES)
TRAINING_INPUT_NAMES = [*PREDICTION_INPUT_NAMES, "future_target", "future_observed_values"]
DISTRIBUTIONS = tuple(DISTRIBUTION_HEADS)
SPLITTER_MODES = ("training", "validation", "test")
#: the shortest default context: ``max(2 * prediction_length, MIN_CONTEXT_LENGTH)``
MIN_CONTEXT_LENGTH = 8
#: the value that stands in for missing targets (flagged in ``observed_values``); in every distribution's support
IMPUTED_VALUE = 0.0
#: the file in which GluonTS's ``PyTorchPredictor.serialize`` saves the network's weights
NET_STATE_FILE = "prediction-net-state.pt"
#: the optional fields of the data, each with the argument that makes the estimator read it
FIELD_ARGUMENTS = {
    FieldName.FEAT_DYNAMIC_REAL: "num_feat_dynamic_real",
    FieldName.FEAT_STATIC_CAT: "num_feat_static_cat",
    FieldName.FEAT_STATIC_REAL: "num_feat_static_real",
}
#: fields of the data the estimator cannot read, each with what to do instead
UNSUPPORTED_FIELDS = {
    FieldName.PAST_FEAT_DYNAMIC_REAL: "covariates known only in the past are not supported; give those known over "
    "the forecast horizon too as feat_dynamic_real",
    FieldName.FEAT_DYNAMIC_CAT: "categorical covariates are not supported; give them as feat_dynamic_real rows "
    "(e.g. one-hot)",
}


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


class ParaRNNPredictor(PyTorchPredictor):
    """GluonTS's ``PyTorchPredictor`` whose :meth:`deserialize` restores the network in the dtype it was saved in:
    GluonTS's rebuilds it in float32, so a network trained in bfloat16 or float64 (``trainer_kwargs={"precision":
    "bf16-true"}`` or ``"64-true"``) would forecast differently once reloaded."""

    @classmethod
    def deserialize(cls, path: Path, device: str | torch.device | None = None) -> "ParaRNNPredictor":
        predictor = super().deserialize(path, device=device)
        net = predictor.prediction_net
        state = torch.load(Path(path) / NET_STATE_FILE, map_location="cpu", weights_only=True)
        saved = saved_parameter_dtype(net, state)
        if saved != next(net.parameters()).dtype:
            net.to(saved).load_state_dict(state)  # again: float64 weights lost digits on their way into float32
        return predictor


def saved_parameter_dtype(net: torch.nn.Module, state: dict[str, torch.Tensor]) -> torch.dtype:
    """The dtype of ``net``'s first parameter in its saved ``state``: the network's dtype when it was saved."""
    name, _ = next(iter(net.named_parameters()))
    return state[name].dtype


def series_label(entry: DataEntry, index: int) -> str:
    """``series 3 (item_id 'b')``: the entry's position in its dataset, from 0, and its item_id where it has one."""
    item_id = entry.get(FieldName.ITEM_ID)
    return f"series {index}" if item_id is None else f"series {index} (item_id {item_id!r})"


def feature_count(field: str, value: Any) -> int:
    """How many features a series' ``field`` holds: rows of ``feat_dynamic_real`` (a 1-D one is one row), values of
    a static field."""
    return len(np.atleast_2d(value) if field == FieldName.FEAT_DYNAMIC_REAL else np.atleast_1d(value))


def required_field(entry: DataEntry, field: str, argument: str, count: int, series: str) -> Any:
    """``entry[field]``; a ``ValueError`` naming the series and ``argument`` where the entry lacks it."""
    value = entry.get(field)
    if value is None:
        raise ValueError(
            f"ParaRNNEstimator: {series} has no {field}, but {argument}={count}: give every series its {count} "
            f"{field} feature(s), or set {argument}=0"
        )
    return value


def check_feature_count(values: np.ndarray, ndim: int, field: str, argument: str, count: int, series: str) -> None:
    """A ``ValueError`` unless ``values`` (a series' ``field``) has ``ndim`` axes, ``count`` features on the first."""
    if values.ndim != ndim or len(values) != count:
        features = "rows (one per covariate, over time)" if ndim == 2 else "values"
        raise ValueError(
            f"ParaRNNEstimator: {field} of {series} has shape {values.shape}, but {argument}={count}: give every "
            f"series {count} {features}, or set {argument} to the number the data has"
        )


def covariate_length_error(series: str, length: int, target: int, prediction_length: int, is_train: bool) -> str:
    """The error for a ``feat_dynamic_real`` of ``length`` steps beside a target of ``target``: in training it covers
    the target's steps, to forecast those and the ``prediction_length`` after them."""
    if is_train:
        expected, need = target, f"training and validation covariates cover the target's {target} steps"
    else:
        expected = target + prediction_length
        need = (
            f"to forecast, covariates cover the target's {target} steps and the prediction_length={prediction_length} "
            f"steps after it, {expected} in all"
        )
    fix = f"cut it to feat_dynamic_real[:, :{expected}]" if length > expected else "give it values for those steps"
    return f"ParaRNNEstimator: feat_dynamic_real of {series} has {length} steps, but {need}: {fix}"


class CheckEntries(Transformation):
    """Checks each entry's covariates against the estimator's settings, so that a bad series fails with an error
    naming the field, the series (its index and item_id) and the fix, not in NumPy or the network: present where
    the settings use them, of their shape, finite, categories within ``cardinality``, and ``feat_dynamic_real``
    as long as the target (``is_train``) or the target and the horizon (to forecast). In training, each field the
    settings leave unused warns once.

    A ``start`` period of another frequency than ``freq`` is refused; a training series without an observed value
    warns (once), as it adds nothing to the loss.

    Args:
        prediction_length: steps ``feat_dynamic_real`` reaches beyond the target to forecast.
        num_feat_dynamic_real, num_feat_static_real: features each series has.
        cardinality: the categories of each ``feat_static_cat`` value (empty: no categorical feature is used).
        freq: the estimator's ``freq`` (``None``: not checked).
    """

    @validated()
    def __init__(
        self,
        prediction_length: int,
        num_feat_dynamic_real: int,
        num_feat_static_real: int,
        cardinality: list[int],
        freq: str | None = None,
    ) -> None:
        self.prediction_length = prediction_length
        self.freq = freq
        self.counts = {
            FieldName.FEAT_DYNAMIC_REAL: num_feat_dynamic_real,
            FieldName.FEAT_STATIC_CAT: len(cardinality),
            FieldName.FEAT_STATIC_REAL: num_feat_static_real,
        }
        self.cardinality = cardinality
        self.warned: set[str] = set()  # the fields warned about: once per transformation, i.e. per training

    def __call__(self, data_it: Iterable[DataEntry], is_train: bool) -> Iterator[DataEntry]:
        for index, entry in enumerate(data_it):
            series = series_label(entry, index)
            self.check_start(entry, series)
            if is_train:
                self.warn_unused(entry, series)
                self.warn_unobserved(entry, series)
            if self.counts[FieldName.FEAT_DYNAMIC_REAL]:
                self.check_dynamic(entry, series, is_train)
            if self.cardinality:
                self.check_categories(entry, series)
            if self.counts[FieldName.FEAT_STATIC_REAL]:
                self.check_static_real(entry, series)
            yield entry

    def values(self, entry: DataEntry, field: str, series: str, ndim: int, dtype: type = np.float64) -> np.ndarray:
        """``entry[field]`` as an array of ``dtype``, checked to be there with the features the settings say."""
        count = self.counts[field]
        values = np.asarray(required_field(entry, field, FIELD_ARGUMENTS[field], count, series), dtype=dtype)
        values = np.atleast_2d(values) if ndim == 2 else values
        check_feature_count(values, ndim, field, FIELD_ARGUMENTS[field], count, series)
        return values

    def check_dynamic(self, entry: DataEntry, series: str, is_train: bool) -> None:
        values = self.values(entry, FieldName.FEAT_DYNAMIC_REAL, series, ndim=2)
        target = len(entry[FieldName.TARGET])
        if values.shape[1] != (target if is_train else target + self.prediction_length):
            raise ValueError(covariate_length_error(series, values.shape[1], target, self.prediction_length, is_train))
        missing = np.flatnonzero(~np.isfinite(values).all(axis=0))
        if missing.size:
            raise ValueError(
                f"ParaRNNEstimator: feat_dynamic_real of {series} has NaN or inf at {missing.size} time steps (the "
                f"first: step {missing[0]}): covariates, unlike the target, may not have missing values; fill them "
                "in (e.g. forward-fill)"
            )

    def check_categories(self, entry: DataEntry, series: str) -> None:
        values = self.values(entry, FieldName.FEAT_STATIC_CAT, series, ndim=1, dtype=int)  # as AsNumpyArray reads it
        for i, (value, count) in enumerate(zip(values.tolist(), self.cardinality, strict=True)):
            if not 0 <= value < count:
                fix = (
                    "categories are numbered from 0"
                    if value < 0
                    else f"train with cardinality[{i}] >= {value + 1} (a network has no embedding for a category it "
                    "was not built with), or map the value to a known category"
                )
                raise ValueError(
                    f"ParaRNNEstimator: feat_static_cat of {series} is {values.tolist()}: its value {value} (feature "
                    f"{i}) lies outside 0 .. {count - 1}, the categories of cardinality[{i}]={count}; {fix}"
                )

    def check_static_real(self, entry: DataEntry, series: str) -> None:
        values = self.values(entry, FieldName.FEAT_STATIC_REAL, series, ndim=1)
        if not np.isfinite(values).all():
            raise ValueError(
                f"ParaRNNEstimator: feat_static_real of {series} is {values.tolist()}: NaN or inf; fill it in"
            )

    def check_start(self, entry: DataEntry, series: str) -> None:
        """Refuse a ``start`` period whose frequency is not ``freq`` (calendar features and lags would be read at the
        wrong times, and forecasts stamped on them)."""
        start = entry.get(FieldName.START)
        if self.freq is None or not isinstance(start, pd.Period):
            return
        try:
            expected = pd.Period(start.start_time, freq=self.freq).freq
        except ValueError:  # an alias pandas has for offsets, not periods ("ME"): GluonTS checks it
            return
        if start.freq != expected:
            raise ValueError(
                f"ParaRNNEstimator: the start of {series} is {start} of freq {start.freqstr!r}, but freq="
                f"{self.freq!r}; give the estimator the data's freq, or start the series with a period of freq="
                f"{self.freq!r} (values at another frequency need resampling first)"
            )

    def warn_unobserved(self, entry: DataEntry, series: str) -> None:
        """Warn, once, where a training series has no observed value (all NaN)."""
        if "unobserved" in self.warned or not np.isnan(np.asarray(entry[FieldName.TARGET], dtype=float)).all():
            return
        self.warned.add("unobserved")
        warnings.warn(
            f"ParaRNNEstimator: the training data's {series} has no observed value (all NaN), so it adds nothing to "
            "the loss; drop it (warned once)",
            UserWarning,
            stacklevel=2,
        )

    def warn_unused(self, entry: DataEntry, series: str) -> None:
        """Warn, once per field, where a training entry has a field that the settings leave unused."""
        for field in sorted(entry.keys() - self.warned):
            value = entry[field]
            if value is None or not np.size(value):
                continue
            if field in UNSUPPORTED_FIELDS:
                message = f"the training data's {field} (from {series} on) is ignored: {UNSUPPORTED_FIELDS[field]}"
            elif field in FIELD_ARGUMENTS and self.counts[field] == 0:
                count, argument = feature_count(field, value), FIELD_ARGUMENTS[field]
                cardinality = " and cardinality (each one's number of categories)" if argument.endswith("cat") else ""
                message = (
                    f"{argument}=0 leaves the training data's {field} unused ({series} has {count} feature(s)): set "
                    f"{argument}={count}{cardinality} to use it"
                )
            else:
                continue
            self.warned.add(field)
            warnings.warn(f"ParaRNNEstimator: {message}", UserWarning, stacklevel=2)


class AppendZeroRows(MapTransformation):
    """Appends ``rows`` rows of zeros to ``time_feat`` (F, T): time-feature inputs that are always 0, and so change
    nothing, where fewer ``time_features`` than ``freq``'s are given (the network reads at least that many)."""

    @validated()
    def __init__(self, rows: int) -> None:
        self.rows = rows

    def map_transform(self, data: DataEntry, is_train: bool) -> DataEntry:
        features = data[FieldName.FEAT_TIME]
        zeros = np.zeros((self.rows, features.shape[1]), dtype=features.dtype)
        data[FieldName.FEAT_TIME] = np.concatenate([features, zeros])
        return data


class ValidationBatches:
    """The batches of :func:`validation_batches`, each pass; a ``ValueError`` naming ``validation_data`` where a
    pass has none (Lightning would fail later, with ``val_loss`` missing for the plateau schedule)."""

    def __init__(self, batches: Iterable[dict[str, torch.Tensor]], data: Dataset, prediction_length: int) -> None:
        self.batches, self.data, self.prediction_length = batches, data, prediction_length

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        empty = True
        for batch in self.batches:
            empty = False
            yield batch
        if empty:
            lengths = [len(entry[FieldName.TARGET]) for entry in self.data]
            raise ValueError(
                f"ParaRNNEstimator: validation_data gives no validation window: the validation_sampler (by default "
                f"the last prediction_length={self.prediction_length} steps of each series at least that long) cut "
                f"none from its {len(lengths)} series, the longest of {max(lengths, default=0)} steps; give longer "
                "series, or train without validation_data"
            )


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
        windows_or_error(instances, data),
        batch_size=batch_size,
        shuffle_buffer_length=shuffle_buffer_length,
        field_names=TRAINING_INPUT_NAMES,
        output_type=torch.tensor,
    )
    return EpochOfBatches(batches, num_batches_per_epoch)


def windows_or_error(instances: Iterable[DataEntry], data: Dataset) -> Iterator[DataEntry]:
    """``instances``, the training windows cut from ``data``; a ``ValueError`` with the series' lengths where GluonTS
    gives up on cutting any (its "maximum number of idle transformation calls")."""
    try:
        yield from instances
    except Exception as error:
        if not str(error).startswith("Reached maximum number of idle transformation"):
            raise
        lengths = [len(entry[FieldName.TARGET]) for entry in data]
        raise ValueError(
            "ParaRNNEstimator: training_data gives no training window: the train_sampler (by default windows whose "
            "prediction_length steps lie within the series) cut none from its series "
            f"({len(lengths)}, the longest of {max(lengths, default=0)} steps); give series longer than "
            "prediction_length, or lower it"
        ) from error


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


def _check_cardinality(num_feat_static_cat: int, cardinality: list[int] | None) -> None:
    """One positive category count per categorical feature; none (or GluonTS's dummy ``[1]``) without them."""
    if num_feat_static_cat == 0:
        if cardinality not in (None, [], [1]):
            raise ValueError(
                f"ParaRNNEstimator: cardinality={cardinality} counts the categories of {len(cardinality)} "
                f"categorical feature(s), but num_feat_static_cat=0 uses none: set "
                f"num_feat_static_cat={len(cardinality)} to use the data's feat_static_cat, or drop cardinality"
            )
        return
    if cardinality is None or len(cardinality) != num_feat_static_cat:
        raise ValueError(
            f"ParaRNNEstimator: num_feat_static_cat={num_feat_static_cat} needs cardinality with one count per "
            f"feature, got cardinality={cardinality}"
        )
    if any(count < 1 for count in cardinality):
        raise ValueError(
            f"ParaRNNEstimator: cardinality must count each feature's categories (values 0 .. count - 1), at least 1 "
            f"each, got {cardinality}"
        )


def _check_heads(hidden_size: int, num_heads: int) -> None:
    """``num_heads`` divides ``hidden_size``; else a ``ValueError`` that names the nearest sizes that it divides."""
    if hidden_size % num_heads:
        below = hidden_size // num_heads * num_heads
        sizes = " or ".join(str(size) for size in (below, below + num_heads) if size > 0)
        raise ValueError(
            f"ParaRNNEstimator: hidden_size={hidden_size} must be divisible by num_heads={num_heads} (each head "
            f"has hidden_size / num_heads units): use hidden_size={sizes}, or another num_heads"
        )


def _check_naive_offset(
    distribution: str, naive_offset: bool | None, naive_drift: str | None, naive_gate: bool | list[str] | None
) -> None:
    """``naive_offset`` only with a head that has a location; ``naive_drift`` and ``naive_gate`` only with it."""
    takes_offset = DISTRIBUTION_HEADS[distribution].takes_offset
    if naive_offset and not takes_offset:
        located = tuple(name for name, head in DISTRIBUTION_HEADS.items() if head.takes_offset)
        raise ValueError(
            f"ParaRNNEstimator: naive_offset=True moves a location, which distribution={distribution!r} has not: "
            f"leave naive_offset None (or False), or use one of {located}"
        )
    offset = takes_offset if naive_offset is None else naive_offset
    for name, value in (("naive_drift", naive_drift), ("naive_gate", naive_gate)):
        if value and not offset:
            raise ValueError(
                f"ParaRNNEstimator: {name}={value!r} changes the seasonal-naive offset, which is off "
                f"(naive_offset={naive_offset}, distribution={distribution!r}): drop {name}, or set naive_offset=True"
            )


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
        cell: ``"gru"`` (ParaGRU), ``"lstm"`` (ParaLSTM), or a user cell: a callable ``cell(input_size,
            hidden_size) → ParaCell`` building each layer's cell, such as a
            :class:`~pararnn_ts.core.cell.ParaCell` subclass (``cell=MyCell``, or
            ``functools.partial(MyCell, mode="parallel")`` with the cell's own arguments), whose output is
            ``hidden_size`` wide. It must be a class importable by name (defined at the top level of a module), or
            a ``functools.partial`` of one with plain keyword arguments: checkpoints and the predictor's
            serialization record it as ``{"class_path", "init_args"}`` (anything else is refused here).
        hidden_size, num_layers, num_heads, dropout, copula_rank, lags_seq, scaling, mode: of the network
            (``num_heads`` and ``mode`` configure the built-in cells only: with a user cell they stay 1 and
            ``"auto"``, and the cell takes its own settings).
        distribution: ``"student_t"``, ``"normal"``, ``"johnson_su"``, ``"negative_binomial"`` (counts: training
            refuses targets that are not non-negative integers) or ``"quantile"``.
        quantiles: levels of the ``"quantile"`` head (only with it): at least 2, increasing, in (0, 1).
        naive_offset, naive_drift, naive_gate, seasonality, context_loss_weight, quantile_grid_samples,
            loss_weighting: of the network (the seasonal-naive location offset, its drift, its gated mix with the
            last value and, with ``naive_gate=["last", "level"]``, the last season's mean, its season length, the
            weight of the context steps' one-step-ahead loss, quantile-grid sample paths, and ``"uniform"`` or
            ``"scale"``: series weighted equally in the training loss, or by their mean scale, as in wQL).
        nonnegative_pred_samples: clip the forecast's sample paths at 0 (data that cannot be negative).
        num_feat_dynamic_real, num_feat_static_real, num_feat_static_cat, cardinality, embedding_dimension:
            covariates in the data (``cardinality``: one count per categorical feature). Each series must have
            those it is told of (``feat_dynamic_real`` over its target in training, and over the
            ``prediction_length`` steps after it too to forecast); training warns of those it is not told of.
        time_features: calendar features (default: GluonTS's for ``freq``), any number: with fewer than ``freq``'s,
            the network's other time-feature inputs are zeros.
        lr, weight_decay: of AdamW (``lr`` 1e-2 by default, chosen on the validation split). lr_schedule,
            patience, ema_decay (a moving average of the weights, which then forecasts; ``None``: the last
            weights): see :class:`~pararnn_ts.forecast.lightning_module.ForecastTrainingModule`.
        batch_size: windows per training batch (and series per prediction batch).
        num_batches_per_epoch: training batches per epoch.
        num_parallel_samples: sample paths per forecast; ``predictor.predict(data, num_samples=N)`` (and
            ``make_evaluation_predictions(..., num_samples=N)``) draws ``N`` instead, in one call of the network.
        trainer_kwargs: for ``lightning.pytorch.Trainer`` (default ``max_epochs=100, gradient_clip_val=10``).
        train_sampler, validation_sampler: where windows are cut (default: at random points, about one per series
            in each pass over the data; an epoch is ``num_batches_per_epoch × batch_size`` windows however many
            series there are; and the last window of each validation series).
    """

    @validated()
    def __init__(
        self,
        freq: str,
        prediction_length: int,
        context_length: int | None = None,
        cell: str | Callable[..., Any] | dict = "gru",
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
        cell = portable_cell(cell, "ParaRNNEstimator")  # as checkpoints and the predictor's serialization record it
        refuse_builtin_settings("ParaRNNEstimator", cell, num_heads=(num_heads, 1), mode=(mode, "auto"))
        if mode not in get_args(Mode):
            raise ValueError(f"ParaRNNEstimator: mode={mode!r} is not one of {get_args(Mode)}")
        if distribution not in DISTRIBUTIONS:
            raise ValueError(f"ParaRNNEstimator: distribution={distribution!r} is not one of {DISTRIBUTIONS}")
        if quantiles is not None:
            if distribution != "quantile":
                raise ValueError(
                    "ParaRNNEstimator: quantiles are levels of distribution='quantile'; drop them or set it"
                )
            try:
                check_quantiles(quantiles)
            except ValueError as error:
                raise ValueError(f"ParaRNNEstimator: {error}") from None
        _check_heads(hidden_size, num_heads)
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
        _check_naive_offset(distribution, naive_offset, naive_drift, naive_gate)
        if seasonality is not None and (isinstance(seasonality, bool) or seasonality < 1):
            raise ValueError(
                f"ParaRNNEstimator: seasonality must be a season length of at least 1 step (or None: freq's), "
                f"got {seasonality!r}"
            )
        if loss_weighting == "scale" and not scaling:
            raise ValueError("ParaRNNEstimator: loss_weighting='scale' weights series by their mean scale: set scaling")
        counts = {
            "context_loss_weight": context_loss_weight,
            "weight_decay": weight_decay,
            "patience": patience,
            "num_feat_dynamic_real": num_feat_dynamic_real,
            "num_feat_static_real": num_feat_static_real,
            "num_feat_static_cat": num_feat_static_cat,
        }
        for name, value in counts.items():
            if value < 0:
                raise ValueError(f"ParaRNNEstimator: {name} must be >= 0, got {value}")
        _check_cardinality(num_feat_static_cat, cardinality)
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
        # the network reads at least freq's number of calendar features: zero rows stand in for those missing
        self.zero_time_features = max(0, -(num_feat_dynamic_real + self.extra_time_features))
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
            "num_feat_dynamic_real": self.num_feat_dynamic_real + self.extra_time_features + self.zero_time_features,
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
        """Entry-wise: checked covariates, dummy static features, imputed target + observed flags, and ``time_feat``
        (F, T + H)."""
        removed = [FieldName.FEAT_STATIC_REAL] if self.num_feat_static_real == 0 else []
        removed += [FieldName.FEAT_DYNAMIC_REAL] if self.num_feat_dynamic_real == 0 else []
        dummies = [SetField(output_field=FieldName.FEAT_STATIC_CAT, value=[0])] if self.num_feat_static_cat == 0 else []
        if self.num_feat_static_real == 0:
            dummies.append(SetField(output_field=FieldName.FEAT_STATIC_REAL, value=[0.0]))
        dynamic = [FieldName.FEAT_DYNAMIC_REAL] if self.num_feat_dynamic_real > 0 else []
        zeros = [AppendZeroRows(self.zero_time_features)] if self.zero_time_features else []
        check = CheckEntries(
            prediction_length=self.prediction_length,
            num_feat_dynamic_real=self.num_feat_dynamic_real,
            num_feat_static_real=self.num_feat_static_real,
            cardinality=self.cardinality if self.num_feat_static_cat else [],
            freq=self.freq,
        )
        return Chain(
            [
                check,
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
                *zeros,
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
        """The last window of each transformed entry of ``data`` (with the default ``validation_sampler``); a
        ``ValueError`` when a pass over them finds none."""
        batches = validation_batches(data, self._create_instance_splitter(module, "validation"), self.batch_size)
        return ValidationBatches(batches, data, self.prediction_length)

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
    ) -> ParaRNNPredictor:
        """Sample forecasts of the ``prediction_length`` steps after each series: ``num_parallel_samples`` paths, or
        ``predict(data, num_samples=N)``'s ``N`` in one draw (:class:`ParaRNNSampleForecastGenerator`)."""
        return ParaRNNPredictor(
            input_names=PREDICTION_INPUT_NAMES,
            prediction_net=module,
            batch_size=self.batch_size,
            prediction_length=self.prediction_length,
            input_transform=transformation + self._create_instance_splitter(module, "test"),
            forecast_generator=ParaRNNSampleForecastGenerator(),
            device=device,
        )
