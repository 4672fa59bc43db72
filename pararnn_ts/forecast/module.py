"""``ParaRNNForecastModel``: probabilistic forecasts from ParaGRU/ParaLSTM layers in one parallel solve.

The network reads one sequence ``[context | horizon]`` of ``C + H`` steps and never feeds anything
computed from its states back into its inputs, so training and forecasting are both a single
parallel solve per layer:

- context step ``t`` sees the scaled lags ``y_{t−l} / scale`` of every ``l`` in ``lags_seq`` with a
  per-lag "observed" flag, the time features, the static features (embeddings, reals, ``log scale``)
  and a horizon flag 0;
- horizon step ``k`` sees the same, with flag 1, where a lag whose time ``T + k − l`` lies in the
  known past is data (passed, flag 1) and one that lies in the horizon is unknown (0, flag 0).

A distribution head on the horizon part of the last layer's output gives all ``H`` marginals at
once (with ``context_loss_weight > 0`` training also scores the same head's one-step-ahead marginals on
the context steps, whose inputs hold only earlier values: DeepAR's teacher-forced loss, as extra signal);
a Gaussian copula whose correlation comes from the state at the last context step ties the steps into
coherent sample paths (see :mod:`pararnn_ts.nn.copula`). Inputs and their names follow GluonTS's
``DeepARModel``, so the module plugs into GluonTS's data pipeline and predictors.

Precision: the network (input projection, ParaRNN layers, norms) runs in the parameters' dtype, e.g. bfloat16
under ``--trainer.precision bf16-true``; what touches the data or the distributions runs in :attr:`head_dtype
<ParaRNNForecastModel.head_dtype>`, the parameters' dtype upcast to at least float32 (float64 stays float64):
the scale and the scaled lags (cast to the parameters' dtype where they enter the network), the naive offsets,
the heads and the copula (which upcast the features where they read them, see
:class:`~pararnn_ts.nn.distribution_heads.HeadLinear`), the losses and the sample paths.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from gluonts.model import Input, InputSpec
from gluonts.time_feature import get_lags_for_frequency, get_seasonality, time_features_from_frequency_str
from torch import Tensor, nn

from ..cells.factory import BUILTIN_CELLS, CellSpec, build_cell, refuse_builtin_settings, resolve_cell
from ..core.cell import Mode
from ..core.checks import all_finite
from ..nn.copula import GaussianCopula, LowRankGaussianCopula, sample_paths
from ..nn.distribution_heads import (
    DISTRIBUTION_HEADS,
    ForecastDistribution,
    HeadLinear,
    build_head,
    head_dtype,
    not_counts,
)
from ..nn.norms import RMSNorm

#: the built-in cells by name (a ``cell`` may also be a user cell: :mod:`pararnn_ts.cells.factory`)
RNN_CELLS = BUILTIN_CELLS
#: how :meth:`ParaRNNForecastModel.training_loss` weights the series of a batch (see ``loss_weighting``)
LOSS_WEIGHTINGS = ("uniform", "scale")
NAIVE_DRIFTS = (None, "learned", "full")
#: the initial bias of ``naive_gate``: each mixed-in term's weight is ``≈ e^−6 ≈ 0.0025`` before training
NAIVE_GATE_BIAS = -6.0
#: what ``naive_gate`` can mix into the seasonal-naive offset: the last observed value, the last season's mean
NAIVE_GATE_TERMS = ("last", "level")


class ForecastLoss(NamedTuple):
    """Per-series loss terms ``(B,)``; the training loss is ``marginal + copula + context_loss_weight · context``
    (times ``scale / mean(scale)`` with ``loss_weighting="scale"``)."""

    #: observed-weighted sum over the horizon of the marginal loss (NLL or pinball), divided by ``H``
    marginal: Tensor
    #: negative copula log-density of the detached PITs, divided by ``H`` (0 where a horizon value is
    #: missing or without copula)
    copula: Tensor
    #: the same marginal loss on the context steps' one-step-ahead predictions, divided by ``C``
    #: (0 when ``context_loss_weight`` is 0)
    context: Tensor
    #: the series' mean scale over the context (detached; 1 without ``scaling``)
    scale: Tensor

    @property
    def forecast(self) -> Tensor:
        """The forecast's own loss ``marginal + copula`` ``(B,)``: the training loss without the context term."""
        return self.marginal + self.copula


def mean_scale(target: Tensor, observed: Tensor, default_scale: float = 1.0, minimum_scale: float = 1e-10) -> Tensor:
    """Mean absolute observed value per series, ``(B, T)`` → ``(B, 1)``.

    Series with no observed value or only zeros get ``default_scale``; the result is at least ``minimum_scale``.
    """
    count = observed.sum(-1, keepdim=True)
    mean_abs = (target.abs() * observed).sum(-1, keepdim=True) / count.clamp_min(1)
    return torch.where(mean_abs > 0, mean_abs, torch.full_like(mean_abs, default_scale)).clamp_min(minimum_scale)


class ResidualRNNLayer(nn.Module):
    """``x + dropout(cell(RMSNorm(x)))``; ``x`` ``(B, T, hidden)``.

    ``cell``: ``"gru"`` (ParaGRU) or ``"lstm"`` (ParaLSTM) with ``num_heads`` and ``mode``, or a user cell's factory,
    called as ``cell(hidden_size, hidden_size)`` (see :mod:`pararnn_ts.cells.factory`; ``num_heads`` and ``mode`` are
    then unused)."""

    def __init__(self, cell: CellSpec, hidden_size: int, num_heads: int, dropout: float, mode: Mode) -> None:
        super().__init__()
        self.norm = RMSNorm(hidden_size)
        self.cell = build_cell(cell, hidden_size, hidden_size, "ParaRNNForecastModel", num_heads=num_heads, mode=mode)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        y, _ = self.cell(self.norm(x))
        return x + self.dropout(y.to(x.dtype))


class ParaRNNForecastModel(nn.Module):
    """A GluonTS-style forecasting network on ParaRNN cells (see the module docstring).

    Args:
        freq: pandas frequency string of the data (for default lags and the number of time features).
        context_length: ``C``, steps the network reads before the forecast start.
        prediction_length: ``H``, steps forecast.
        num_feat_dynamic_real: dynamic real covariates inside ``past_time_feat``/``future_time_feat``.
        num_feat_static_real, num_feat_static_cat: static features per series. With 0, the dummy
            column of zeros GluonTS passes in their place is accepted and ignored.
        cardinality: categories of each static categorical feature (``[1]`` or ``None`` when there is none).
        embedding_dimension: embedding size of each; default ``min(50, (cardinality + 1) // 2)``.
        cell: ``"gru"`` (ParaGRU), ``"lstm"`` (ParaLSTM), or a user cell: a callable ``cell(input_size,
            hidden_size) → ParaCell`` such as a :class:`~pararnn_ts.core.cell.ParaCell` subclass, called as
            ``cell(hidden_size, hidden_size)`` for each layer, whose output (``output_size``) must be ``hidden_size``
            wide (see :mod:`pararnn_ts.cells.factory`; a checkpoint's record ``{"class_path", "init_args"}`` of one
            is taken too).
        hidden_size, num_layers, num_heads: of the residual ParaRNN stack (``num_heads`` divides ``hidden_size``;
            it configures the built-in cells only: with a user cell it must stay 1).
        dropout: on each layer's output, training only.
        lags_seq: lags of the target fed as inputs; default ``get_lags_for_frequency(freq)``.
        scaling: mean scaling of the target over the context (else scale 1); ``log(scale)`` is an input.
        distribution: ``"student_t"``, ``"normal"``, ``"johnson_su"``, ``"negative_binomial"`` or ``"quantile"``.
        quantiles: levels of the quantile head (``distribution="quantile"`` only).
        copula_rank: rank of the horizon copula's factor; 0: independent horizon steps.
        num_parallel_samples: sample paths :meth:`forward` draws by default.
        quantile_grid_samples: each horizon step's samples are its marginal's quantiles on an even grid,
            paired across steps by the copula's ranks (:func:`~pararnn_ts.nn.copula.sample_paths`), so
            metrics read from samples (median, quantiles) carry no Monte Carlo noise; ``False``: random draws.
        nonnegative_pred_samples: clip sample paths at 0 (for data that cannot be negative, e.g. counts); the
            quantiles of the clipped paths are the marginals' quantiles clipped at 0.
        mode: solver mode of the built-in cells (``"auto"``, ``"sequential"``, ``"parallel"``, ``"fused"``); a user
            cell takes its own (its arguments), and ``mode`` must then stay ``"auto"``.
        default_scale: scale of series whose observed context is all zero or missing.
        naive_offset: the head's location is an offset from the seasonal-naive forecast (the last
            observed value of the same season, seasonality from ``freq``), so training learns a correction of
            seasonal naive (untrained, the head's random output moves the location by up to about one scale from
            it: a network forecasts exactly like seasonal naive only with the head's location output 0); ``None``:
            whenever the head has a location (all but ``"negative_binomial"``). Where that value is missing, the
            offset is the last observed value before it (as GluonTS's ``SeasonalNaivePredictor`` imputes), and where
            the series has none that early, the last observed value before the predicted step (0 only for a series
            with no observed value); the past window then reaches a season before every context step:
            ``past_length = context_length + max(max(lags_seq), seasonality)`` (e.g. 1,440 steps for ``"min"``).
        seasonality: the season length of ``naive_offset``; default ``gluonts.time_feature.get_seasonality(freq)``.
        naive_drift: ``"full"`` or ``"learned"``: the seasonal-naive offset also carries the last change in
            level: a step ``n`` seasons ahead of its naive value adds ``α n`` times the mean of the last ``m``
            observed values minus the mean of the ``m`` before them (0 where either window has no observed
            value), with ``α`` (``drift_weight``) 1, or learned from 0 (untrained, the network forecasts as
            without the drift); ``None`` (default): no drift.
        naive_gate: the terms each horizon step mixes into its offset, from :data:`NAIVE_GATE_TERMS`: ``"last"``,
            the last observed value, and ``"level"``, the mean of the last season's observed values (the last
            value where the season has none). The offset becomes ``λ_0 · o + Σ_j λ_j · term_j``, with ``o`` the
            seasonal-naive offset (with its drift) and ``λ = softmax(0, W f + b)`` read from the step's features
            ``f`` (``W = 0`` and ``b = −6`` at init, so each ``λ_j ≈ 0.0025``: an untrained network forecasts as
            without the gate); with one term, ``λ_1 = sigmoid(w · f + b)``. A series whose level moved within the
            last season can then follow its recent level, and a noisy one its mean, instead of last season's
            values. The context steps keep ``o``: their last value is one step old, and would teach the gate to
            trust it more than a step ``k`` ahead can. ``True`` means ``["last"]``, ``False`` none. Needs
            ``naive_offset``; ``None`` (default): ``["last"]`` whenever ``naive_offset`` is on (chosen on the
            validation windows of ``experiments/forecast/validation.yaml``).
        context_loss_weight: weight of the context steps' loss in training (see :class:`ForecastLoss`): every
            context step ``t`` predicts ``y_t`` from its inputs (lags of ``t`` only) with the horizon's head,
            which gives the network ``C`` more targets per window; 0 trains on the horizon only. The default 1
            was chosen on validation windows cut from the training data (``experiments/forecast/validation.yaml``).
        loss_weighting: how the batch's series weigh in the training loss (:meth:`training_loss`): ``"uniform"``,
            each the same; ``"scale"``, each by its mean scale over the batch mean (detached), so that large
            series count as much as in wQL, which sums errors in the data's units (needs ``scaling``).
            Validation losses and :attr:`ForecastLoss.forecast` are never weighted.

    Inputs (GluonTS names; ``P = past_length``, ``F = num_time_features``): ``feat_static_cat``
    ``(B, n_cat)`` long, ``feat_static_real`` ``(B, n_real)``, ``past_time_feat`` ``(B, P, F)``,
    ``past_target`` and ``past_observed_values`` ``(B, P)``, ``future_time_feat`` ``(B, H, F)``; for
    :meth:`loss` also ``future_target`` and ``future_observed_values`` ``(B, H)``. Longer past inputs
    are cut to their last ``P`` steps. Missing values are 0 with observed 0 (left padding included);
    they reach neither the inputs, nor the scale, nor the loss; the naive offsets fill them forward.
    ``P = context_length + max(lags_seq)``, or ``+ seasonality`` where that is longer and ``naive_offset`` is on.
    """

    def __init__(
        self,
        freq: str,
        context_length: int,
        prediction_length: int,
        num_feat_dynamic_real: int = 0,
        num_feat_static_real: int = 0,
        num_feat_static_cat: int = 0,
        cardinality: list[int] | None = None,
        embedding_dimension: list[int] | None = None,
        cell: CellSpec = "gru",
        hidden_size: int = 64,
        num_layers: int = 2,
        num_heads: int = 1,
        dropout: float = 0.1,
        lags_seq: list[int] | None = None,
        scaling: bool = True,
        distribution: str = "student_t",
        quantiles: list[float] | None = None,
        copula_rank: int = 4,
        num_parallel_samples: int = 100,
        mode: Mode = "auto",
        default_scale: float = 1.0,
        naive_offset: bool | None = None,
        naive_drift: str | None = None,
        naive_gate: bool | Sequence[str] | None = None,
        seasonality: int | None = None,
        context_loss_weight: float = 1.0,
        quantile_grid_samples: bool = True,
        loss_weighting: str = "uniform",
        nonnegative_pred_samples: bool = False,
    ) -> None:
        super().__init__()
        _check_ints(
            context_length=(context_length, 1),
            prediction_length=(prediction_length, 1),
            num_feat_dynamic_real=(num_feat_dynamic_real, 0),
            num_feat_static_real=(num_feat_static_real, 0),
            num_feat_static_cat=(num_feat_static_cat, 0),
            hidden_size=(hidden_size, 1),
            num_layers=(num_layers, 1),
            copula_rank=(copula_rank, 0),
            num_parallel_samples=(num_parallel_samples, 1),
            seasonality=(get_seasonality(freq) if seasonality is None else seasonality, 1),
        )
        cell = resolve_cell(cell, "ParaRNNForecastModel")
        refuse_builtin_settings("ParaRNNForecastModel", cell, num_heads=(num_heads, 1), mode=(mode, "auto"))
        if distribution not in DISTRIBUTION_HEADS:
            raise ValueError(f"distribution={distribution!r} is not one of {tuple(DISTRIBUTION_HEADS)}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if not context_loss_weight >= 0:
            raise ValueError(f"context_loss_weight must be >= 0, got {context_loss_weight}")
        if not default_scale > 0:
            raise ValueError(f"default_scale must be > 0, got {default_scale}")
        if loss_weighting not in LOSS_WEIGHTINGS:
            raise ValueError(f"loss_weighting={loss_weighting!r} is not one of {LOSS_WEIGHTINGS}")
        if loss_weighting == "scale" and not scaling:
            raise ValueError("loss_weighting='scale' weights series by their mean scale: it needs scaling=True")
        if naive_offset is None:
            naive_offset = DISTRIBUTION_HEADS[distribution].takes_offset
        if naive_offset and not DISTRIBUTION_HEADS[distribution].takes_offset:
            raise ValueError(f"naive_offset=True needs a head with a location; set it False for {distribution!r}")
        if naive_drift not in NAIVE_DRIFTS:
            raise ValueError(f"naive_drift={naive_drift!r} is not one of {NAIVE_DRIFTS}")
        if naive_drift and not naive_offset:
            raise ValueError(f"naive_drift={naive_drift!r} moves the seasonal-naive offset: it needs naive_offset=True")
        terms = gate_terms(naive_offset if naive_gate is None else naive_gate)
        if terms and not naive_offset:
            raise ValueError(
                f"naive_gate={naive_gate!r} mixes terms into the seasonal-naive offset: it needs naive_offset=True"
            )
        self.freq = freq
        self.context_length = context_length
        self.prediction_length = prediction_length
        self.num_feat_dynamic_real = num_feat_dynamic_real
        self.num_feat_static_real = num_feat_static_real
        self.num_feat_static_cat = num_feat_static_cat
        self.cardinality, self.embedding_dimension = _static_cat_sizes(
            num_feat_static_cat, cardinality, embedding_dimension
        )
        self.lags_seq = _check_lags(get_lags_for_frequency(freq) if lags_seq is None else lags_seq)
        self.scaling = scaling
        self.default_scale = default_scale
        self.num_parallel_samples = num_parallel_samples
        self.context_loss_weight = context_loss_weight
        self.loss_weighting = loss_weighting
        self.quantile_grid_samples = quantile_grid_samples
        self.nonnegative_pred_samples = nonnegative_pred_samples
        self.num_time_features = len(time_features_from_frequency_str(freq)) + 1 + num_feat_dynamic_real
        season = get_seasonality(freq) if seasonality is None else seasonality
        # the past reaches the longest lag and, with the offset, a season before every context step (so
        # each horizon and context step has its seasonal-naive value: minutely data's 1,440 steps)
        self.past_length = context_length + max(max(self.lags_seq), season if naive_offset else 0)

        positions = torch.arange(self.past_length - context_length, self.past_length + prediction_length)
        lag_index = positions[:, None] - torch.tensor(self.lags_seq)[None, :]
        # (C + H, L): which past step each lag of each step reads, and whether that step is in the past
        self.register_buffer("lag_index", lag_index.clamp(max=self.past_length - 1), persistent=False)
        self.register_buffer("lag_in_past", lag_index < self.past_length, persistent=False)
        self.naive_offset = naive_offset
        self.naive_drift = naive_drift
        if naive_drift == "learned":
            self.drift_weight = nn.Parameter(torch.zeros(()))
        elif naive_drift == "full":
            self.register_buffer("drift_weight", torch.ones(()))
        else:
            self.drift_weight = None
        self.gate_terms = terms
        self.naive_gate = HeadLinear(hidden_size, len(terms)) if terms else None
        if self.naive_gate is not None:
            nn.init.zeros_(self.naive_gate.weight)
            nn.init.constant_(self.naive_gate.bias, NAIVE_GATE_BIAS)
        # the past step holding the seasonal-naive forecast (seasonality m) of each horizon step, (H,): the
        # last observed season, P - 1 + k - m·ceil(k/m) for step k = 1..H (m = 1: the last value); and of
        # each context step p = P - C .. P - 1, (C,): p - m (negative without naive_offset: none)
        self.season = season
        steps = torch.arange(1, prediction_length + 1)
        self.register_buffer("seasons_ahead", torch.ceil(steps / season), persistent=False)
        self.register_buffer(
            "naive_index", self.past_length - 1 + steps - season * self.seasons_ahead.long(), persistent=False
        )
        self.register_buffer(
            "context_naive_index",
            torch.arange(self.past_length - context_length, self.past_length) - season,
            persistent=False,
        )

        self.embedders = nn.ModuleList(
            nn.Embedding(c, d) for c, d in zip(self.cardinality, self.embedding_dimension, strict=True)
        )
        self.input_size = (
            2 * len(self.lags_seq)  # scaled lags and their observed flags
            + self.num_time_features
            + sum(self.embedding_dimension)
            + num_feat_static_real
            + 2  # log(scale), horizon flag
        )
        self.input_proj = nn.Linear(self.input_size, hidden_size)
        self.layers = nn.ModuleList(
            ResidualRNNLayer(cell, hidden_size, num_heads, dropout, mode) for _ in range(num_layers)
        )
        self.norm = RMSNorm(hidden_size)
        self.head = build_head(distribution, hidden_size, quantiles)
        #: the head's name where its targets must be counts (the training targets are checked), else None
        self.counts_head = distribution if self.head.counts else None
        self.copula = LowRankGaussianCopula(prediction_length, copula_rank, hidden_size) if copula_rank else None

    @property
    def head_dtype(self) -> torch.dtype:
        """The dtype of the scale, offsets, distributions, losses and samples: the parameters' dtype, at least
        float32 (float32 for a bfloat16/float16 network, float64 for a float64 one)."""
        return head_dtype(self.input_proj.weight.dtype)

    # ---- GluonTS interface ---------------------------------------------------------------------
    def describe_inputs(self, batch_size: int = 1) -> InputSpec:
        """Names, shapes and dtypes of :meth:`forward`'s inputs (a dummy static column when a count is 0)."""
        past, future, features = self.past_length, self.prediction_length, self.num_time_features
        return InputSpec(
            {
                "feat_static_cat": Input(shape=(batch_size, max(1, self.num_feat_static_cat)), dtype=torch.long),
                "feat_static_real": Input(shape=(batch_size, max(1, self.num_feat_static_real)), dtype=torch.float),
                "past_time_feat": Input(shape=(batch_size, past, features), dtype=torch.float),
                "past_target": Input(shape=(batch_size, past), dtype=torch.float),
                "past_observed_values": Input(shape=(batch_size, past), dtype=torch.float),
                "future_time_feat": Input(shape=(batch_size, future, features), dtype=torch.float),
            },
            zeros_fn=torch.zeros,
        )

    def forward(
        self,
        feat_static_cat: Tensor,
        feat_static_real: Tensor,
        past_time_feat: Tensor,
        past_target: Tensor,
        past_observed_values: Tensor,
        future_time_feat: Tensor,
        num_parallel_samples: int | None = None,
    ) -> Tensor:
        """Sample paths ``(B, S, H)`` in :attr:`head_dtype`, ``S = num_parallel_samples`` (default: the
        constructor's)."""
        num_samples = self.num_parallel_samples if num_parallel_samples is None else num_parallel_samples
        _check_ints(num_parallel_samples=(num_samples, 1))
        marginals, copula = self.distribution(
            feat_static_cat, feat_static_real, past_time_feat, past_target, past_observed_values, future_time_feat
        )
        paths = sample_paths(marginals, copula, num_samples, self.quantile_grid_samples).transpose(0, 1)
        return paths.clamp_min(0) if self.nonnegative_pred_samples else paths

    def distribution(
        self,
        feat_static_cat: Tensor,
        feat_static_real: Tensor,
        past_time_feat: Tensor,
        past_target: Tensor,
        past_observed_values: Tensor,
        future_time_feat: Tensor,
    ) -> tuple[ForecastDistribution, GaussianCopula | None]:
        """The marginals over ``(B, H)`` and the horizon copula (``None`` with ``copula_rank=0``)."""
        inputs, scale = self.sequence_inputs(
            feat_static_cat, feat_static_real, past_time_feat, past_target, past_observed_values, future_time_feat
        )
        return self.forecast(self.encode(inputs), past_target, past_observed_values, scale)

    def forecast(
        self,
        features: Tensor,
        past_target: Tensor,
        past_observed_values: Tensor,
        scale: Tensor,
        latest: Tensor | None = None,
    ) -> tuple[ForecastDistribution, GaussianCopula | None]:
        """:meth:`distribution` from :meth:`encode`'s ``features`` ``(B, C + H, hidden)`` and the scale ``(B, 1)``
        (``latest``: :meth:`observed_before`, computed here where not given)."""
        context = self.context_length
        offset = None
        if self.naive_offset:
            latest = self.observed_before(past_observed_values) if latest is None else latest
            offset = self.seasonal_naive(past_target, past_observed_values, scale, latest)
        if self.naive_drift:
            ends = torch.full((1,), self.past_length, device=past_target.device)
            drift = self.level_change(past_target, past_observed_values, ends) / scale
            # seasons_ahead (a buffer) and drift_weight may be bfloat16: multiplied into the head-dtype drift first
            offset = offset + self.drift_weight * (self.seasons_ahead * drift)
        if self.naive_gate is not None:
            terms = self.gate_values(past_target, past_observed_values, latest) / scale
            offset = self.gated(offset, features[:, context:], terms)
        marginals = self.head(features[:, context:], scale, offset)
        copula = None if self.copula is None else self.copula(features[:, context - 1])
        return marginals, copula

    def context_loss(
        self,
        features: Tensor,
        past_target: Tensor,
        past_observed_values: Tensor,
        scale: Tensor,
        latest: Tensor | None = None,
    ) -> Tensor:
        """The head's loss on the context steps ``(B,)``: step ``t`` predicts ``y_t`` (observed steps only), / ``C``
        (``latest``: :meth:`observed_before`, computed here where not given)."""
        context = self.context_length
        offset = None
        if self.naive_offset:
            latest = self.observed_before(past_observed_values) if latest is None else latest
            index = self.context_naive_index  # context step p's value a season back, else its last one, p - 1
            offset = self.naive_values(past_target, latest, index, index + self.season - 1) / scale
        if self.naive_drift:
            ends = self.context_naive_index + self.season  # context step p: the windows end before p
            offset = offset + self.drift_weight * self.level_change(past_target, past_observed_values, ends) / scale
        marginals = self.head(features[:, :context], scale, offset)
        weights = past_observed_values[:, -context:].to(scale.dtype)
        target = torch.where(weights > 0, past_target[:, -context:].to(scale.dtype), 0)
        return _observed_loss(marginals, target, weights) / context

    def loss(
        self,
        feat_static_cat: Tensor,
        feat_static_real: Tensor,
        past_time_feat: Tensor,
        past_target: Tensor,
        past_observed_values: Tensor,
        future_time_feat: Tensor,
        future_target: Tensor,
        future_observed_values: Tensor,
    ) -> Tensor:
        """Per-series training loss ``(B,)``: ``marginal + copula + context_loss_weight · context``, see
        :meth:`loss_terms` (weighted by :meth:`loss_weights`)."""
        terms = self.loss_terms(
            feat_static_cat,
            feat_static_real,
            past_time_feat,
            past_target,
            past_observed_values,
            future_time_feat,
            future_target,
            future_observed_values,
        )
        return self.training_loss(terms)

    def training_loss(self, terms: ForecastLoss) -> Tensor:
        """``marginal + copula + context_loss_weight · context`` of :meth:`loss_terms`' ``terms``, ``(B,)``,
        times :meth:`loss_weights` with ``loss_weighting="scale"``."""
        loss = terms.forecast + self.context_loss_weight * terms.context
        if self.loss_weighting == "scale":
            loss = loss * self.loss_weights(terms.scale)
        return loss

    def loss_weights(self, scale: Tensor) -> Tensor:
        """Per-series weights ``(B,)`` of the training loss from the scales ``(B,)``: ones with ``"uniform"``,
        ``scale / mean(scale)`` (detached, so the batch mean is 1) with ``"scale"``."""
        if self.loss_weighting == "uniform":
            return torch.ones_like(scale)
        scale = scale.detach()
        return scale / scale.mean()

    def loss_terms(
        self,
        feat_static_cat: Tensor,
        feat_static_real: Tensor,
        past_time_feat: Tensor,
        past_target: Tensor,
        past_observed_values: Tensor,
        future_time_feat: Tensor,
        future_target: Tensor,
        future_observed_values: Tensor,
    ) -> ForecastLoss:
        """The marginal, copula and context losses and the scale per series (see :class:`ForecastLoss`)."""
        horizon = self.prediction_length
        dtype = self.head_dtype
        if tuple(future_target.shape) != (past_target.shape[0], horizon):
            raise ValueError(
                f"future_target must be (batch, prediction_length={horizon}), got {tuple(future_target.shape)}"
            )
        if future_observed_values.shape != future_target.shape:
            raise ValueError(
                f"future_observed_values must have future_target's shape {tuple(future_target.shape)}, "
                f"got {tuple(future_observed_values.shape)}"
            )
        weights = future_observed_values.to(dtype)
        target = _observed_only(
            future_target, weights > 0, dtype, "future_target", "future_observed_values", self.counts_head
        )
        inputs, scale = self.sequence_inputs(
            feat_static_cat,
            feat_static_real,
            past_time_feat,
            past_target,
            past_observed_values,
            future_time_feat,
            training_data=True,
        )
        features = self.encode(inputs)
        latest = self.observed_before(past_observed_values) if self.naive_offset else None  # once for both offsets
        marginals, copula = self.forecast(features, past_target, past_observed_values, scale, latest)
        marginal = _observed_loss(marginals, target, weights) / horizon
        context = torch.zeros_like(marginal)
        if self.context_loss_weight:
            context = self.context_loss(features, past_target, past_observed_values, scale, latest)
        series_scale = scale.detach().squeeze(-1)
        if copula is None:
            return ForecastLoss(marginal, torch.zeros_like(marginal), context, series_scale)
        complete = (weights > 0).all(-1)
        copula_loss = torch.where(complete, copula.loss(marginals.pit(target)), 0) / horizon
        return ForecastLoss(marginal, copula_loss, context, series_scale)

    # ---- the network -----------------------------------------------------------------------------
    def sequence_inputs(
        self,
        feat_static_cat: Tensor,
        feat_static_real: Tensor,
        past_time_feat: Tensor,
        past_target: Tensor,
        past_observed_values: Tensor,
        future_time_feat: Tensor,
        training_data: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """The network's input sequence ``(B, C + H, input_size)`` in the parameters' dtype and the scale ``(B, 1)``
        in :attr:`head_dtype`.

        Features per step, in order: scaled lags ``(L)``, their observed flags ``(L)``, time
        features ``(F)``, static embeddings, static reals, ``log scale``, horizon flag; computed in
        :attr:`head_dtype` and cast to the parameters' dtype at the end. ``training_data``: the past is scored
        too (:meth:`loss_terms`), so a counts head refuses observed values that are not counts (in the same
        reduction as the finiteness check).
        """
        past, context = self.past_length, self.context_length
        dtype = self.head_dtype
        self._check_shapes(feat_static_cat, feat_static_real, past_time_feat, past_target, future_time_feat)
        if past_observed_values.shape != past_target.shape:
            raise ValueError(
                f"past_observed_values must have past_target's shape {tuple(past_target.shape)}, "
                f"got {tuple(past_observed_values.shape)}"
            )
        observed = past_observed_values[:, -past:].to(dtype)
        counts = self.counts_head if training_data else None
        target = _observed_only(
            past_target[:, -past:], observed > 0, dtype, "past_target", "past_observed_values", counts
        )
        if self.scaling:
            scale = mean_scale(target[:, -context:], observed[:, -context:], self.default_scale)
        else:
            scale = target.new_ones(target.shape[0], 1)

        flags = observed[:, self.lag_index] * self.lag_in_past  # (B, C + H, L)
        lags = (target / scale)[:, self.lag_index] * flags
        time_feat = torch.cat([past_time_feat[:, -context:], future_time_feat], dim=1).to(dtype)
        _check_finite(time_feat, "feat_dynamic_real (in past_time_feat/future_time_feat)")
        static = [emb(feat_static_cat[:, i].long()) for i, emb in enumerate(self.embedders)]
        if self.num_feat_static_real:
            static.append(_check_finite(feat_static_real.to(dtype), "feat_static_real"))
        static.append(scale.log())
        steps = context + self.prediction_length
        static_feat = torch.cat([s.to(dtype) for s in static], dim=-1).unsqueeze(1).expand(-1, steps, -1)
        horizon_flag = (torch.arange(steps, device=target.device) >= context).to(dtype)
        horizon_flag = horizon_flag[None, :, None].expand(target.shape[0], -1, -1)
        inputs = torch.cat([lags, flags, time_feat, static_feat, horizon_flag], dim=-1)
        return _fits(inputs, self.input_proj.weight.dtype), scale

    def seasonal_naive(
        self, past_target: Tensor, past_observed_values: Tensor, scale: Tensor, latest: Tensor | None = None
    ) -> Tensor:
        """The seasonal-naive forecast ``(B, H)`` in units of ``scale``: each step's value of the last season, or
        where that one is missing the last observed value before it (see :meth:`naive_values`)."""
        latest = self.observed_before(past_observed_values) if latest is None else latest
        last = torch.full_like(self.naive_index, self.past_length - 1)
        return self.naive_values(past_target, latest, self.naive_index, last) / scale

    def gated(self, naive: Tensor, features: Tensor, terms: Tensor) -> Tensor:
        """``λ_0 · naive + Σ_j λ_j · terms_j`` ``(B, H)``, the weights ``λ = softmax(0, naive_gate(features))``
        read from the horizon steps' ``features`` ``(B, H, hidden)``; ``terms`` ``(B, J)``, one per gate term."""
        logits = self.naive_gate(features)
        weights = torch.softmax(torch.cat([torch.zeros_like(logits[..., :1]), logits], -1), -1)
        return weights[..., 0] * naive + (weights[..., 1:] * terms[:, None, :]).sum(-1)

    def gate_values(self, past_target: Tensor, past_observed_values: Tensor, latest: Tensor | None = None) -> Tensor:
        """The values of :attr:`gate_terms` ``(B, J)``, in the data's units (``latest``: :meth:`observed_before`)."""
        last = self.last_observed(past_target, past_observed_values, latest)
        values = {"last": last}
        if "level" in self.gate_terms:
            start = torch.full((1,), self.past_length - self.season, device=past_target.device)
            mean, count = self.season_mean(past_target, past_observed_values, start)
            values["level"] = torch.where(count > 0, mean, last)
        return torch.cat([values[term] for term in self.gate_terms], 1)

    def last_observed(self, past_target: Tensor, past_observed_values: Tensor, latest: Tensor | None = None) -> Tensor:
        """The last observed value of the last ``P`` steps ``(B, 1)``; 0 where there is none."""
        latest = self.observed_before(past_observed_values) if latest is None else latest
        return self.values_at(past_target, latest[:, -1:])

    def observed_before(self, past_observed_values: Tensor) -> Tensor:
        """``(B, P)``: for each of the last ``P`` steps the position of the last observed value at or before it, −1
        where there is none (one cumulative max per batch, shared by the naive offsets)."""
        past = self.past_length
        positions = torch.arange(past, device=past_observed_values.device)
        return torch.where(past_observed_values[:, -past:] > 0, positions, -1).cummax(1).values

    def naive_values(self, past_target: Tensor, latest: Tensor, index: Tensor, before: Tensor) -> Tensor:
        """The naive values ``(B, K)`` of ``K`` predicted steps, in :attr:`head_dtype` and the data's units: the last
        observed value at or before ``index`` ``(K,)`` (each step's seasonal-naive position in the last ``P``
        steps), or where there is none (``index < 0``, or before the series' first observed value) the last
        observed value at or before ``before`` ``(K,)`` (the step before the predicted one: the naive forecast);
        0 where neither has one. ``latest``: :meth:`observed_before`.

        So a missing value a season back does not pull its step's offset to 0: it is filled forward, as GluonTS's
        ``SeasonalNaivePredictor`` imputes (``LastValueImputation``).
        """
        at = index.clamp_min(0)
        seasonal = latest[:, at]
        source = torch.where((seasonal >= 0) & (index >= 0), seasonal, latest[:, before])  # (B, K)
        return self.values_at(past_target, source)

    def values_at(self, past_target: Tensor, positions: Tensor) -> Tensor:
        """The values ``(B, K)`` at ``positions`` ``(B, K)`` of the last ``P`` steps (:meth:`observed_before`'s), in
        :attr:`head_dtype`; 0 where a position is −1 (nothing observed)."""
        value = past_target[:, -self.past_length :].gather(1, positions.clamp_min(0)).to(self.head_dtype)
        return torch.where(positions >= 0, value, 0)

    def level_change(self, past_target: Tensor, past_observed_values: Tensor, ends: Tensor) -> Tensor:
        """Mean of the observed values in ``[e - m, e)`` minus the mean in ``[e - 2m, e - m)`` for each end
        ``e`` of ``ends`` ``(K,)`` (positions in the last ``P`` steps) → ``(B, K)``; 0 where a window is empty
        or starts before the past."""
        m, k = self.season, ends.numel()
        means, counts = self.season_mean(past_target, past_observed_values, torch.cat([ends - m, ends - 2 * m]))
        (new, old), (n_new, n_old) = means.split(k, 1), counts.split(k, 1)  # one cumulative sum for both windows
        return torch.where((n_new > 0) & (n_old > 0) & (ends - 2 * m >= 0), new - old, 0)

    def season_mean(self, past_target: Tensor, past_observed_values: Tensor, starts: Tensor) -> tuple[Tensor, Tensor]:
        """Mean of the observed values in ``[s, s + m)`` for each start ``s`` of ``starts`` ``(K,)`` (positions in
        the last ``P`` steps, the part before 0 left out) and their count, both ``(B, K)``; mean 0 where none."""
        past = self.past_length
        observed = (past_observed_values[:, -past:] > 0).to(self.head_dtype)
        value = torch.where(observed > 0, past_target[:, -past:].to(observed.dtype), 0)
        zero = observed.new_zeros(observed.shape[0], 1)
        sums, counts = torch.cat([zero, value.cumsum(1)], 1), torch.cat([zero, observed.cumsum(1)], 1)
        i, j = starts.clamp_min(0), (starts + self.season).clamp_min(0)
        count = counts[:, j] - counts[:, i]
        return (sums[:, j] - sums[:, i]) / count.clamp_min(1), count

    def encode(self, inputs: Tensor) -> Tensor:
        """Input sequence ``(B, T, input_size)`` → normalised last-layer features ``(B, T, hidden_size)``, in the
        parameters' dtype (the heads upcast them)."""
        x = self.input_proj(inputs)
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)

    def _check_shapes(
        self,
        feat_static_cat: Tensor,
        feat_static_real: Tensor,
        past_time_feat: Tensor,
        past_target: Tensor,
        future_time_feat: Tensor,
    ) -> None:
        batch, past, features = past_target.shape[0], self.past_length, self.num_time_features
        if past_target.dim() != 2 or past_target.shape[1] < past:
            raise ValueError(
                f"past_target must be (batch, past_length={past}) (context_length + max(lags_seq), or + seasonality "
                f"where that is longer, with naive_offset), got {tuple(past_target.shape)}"
            )
        for name, feat in (("past_time_feat", past_time_feat), ("future_time_feat", future_time_feat)):
            if feat.dim() == 3 and feat.shape[-1] != features:
                raise ValueError(self._covariate_mismatch(name, feat.shape[-1]))
        if past_time_feat.dim() != 3 or tuple(past_time_feat.shape[:2]) != (batch, past_target.shape[1]):
            raise ValueError(
                f"past_time_feat must be (batch, {past_target.shape[1]}, num_time_features={features}), "
                f"got {tuple(past_time_feat.shape)}"
            )
        if tuple(future_time_feat.shape) != (batch, self.prediction_length, features):
            raise ValueError(
                f"future_time_feat must be (batch, prediction_length={self.prediction_length}, "
                f"num_time_features={features}), got {tuple(future_time_feat.shape)}"
            )
        if self.num_feat_static_cat:
            if tuple(feat_static_cat.shape) != (batch, self.num_feat_static_cat):
                raise ValueError(
                    f"feat_static_cat must be (batch, num_feat_static_cat={self.num_feat_static_cat}), "
                    f"got {tuple(feat_static_cat.shape)}"
                )
            cardinality = torch.tensor(self.cardinality, device=feat_static_cat.device)
            outside = (feat_static_cat < 0) | (feat_static_cat >= cardinality)
            if outside.any():
                raise ValueError(
                    f"feat_static_cat has values {feat_static_cat[outside].unique().tolist()} outside [0, cardinality) "
                    f"for cardinality={self.cardinality}: categories count from 0; raise cardinality to cover them"
                )
        if self.num_feat_static_real and tuple(feat_static_real.shape) != (batch, self.num_feat_static_real):
            raise ValueError(
                f"feat_static_real must be (batch, num_feat_static_real={self.num_feat_static_real}), "
                f"got {tuple(feat_static_real.shape)}"
            )

    def _covariate_mismatch(self, name: str, got: int) -> str:
        """The error for ``name`` (``past_time_feat``/``future_time_feat``) with ``got`` features per step instead of
        :attr:`num_time_features`, in the covariates a user sets (``feat_dynamic_real``)."""
        fixed = self.num_time_features - self.num_feat_dynamic_real  # calendar features and the age
        has = f"this data has {got - fixed}" if got >= fixed else f"this data has only {got} time features in all"
        return (
            f"{name} has {got} features per step, the network reads {self.num_time_features}: the model was trained "
            f"with num_feat_dynamic_real={self.num_feat_dynamic_real} covariates (feat_dynamic_real rows, and any "
            f"time_features beyond freq's) besides {fixed - 1} calendar features of freq={self.freq!r} and the age; "
            f"{has}. Give it the feat_dynamic_real the model was trained with, in the same order (to forecast, "
            "over the horizon too)"
        )


def _check_ints(**values: tuple[int, int]) -> None:
    """Raise a ``ValueError`` naming the argument unless each ``(value, minimum)`` is an int ``>= minimum``."""
    for name, (value, minimum) in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _observed_loss(marginals: ForecastDistribution, target: Tensor, weights: Tensor) -> Tensor:
    """``Σ_t weights_t · loss_t(target_t)`` over the steps with ``weights > 0``: ``(B, T)`` → ``(B,)``."""
    return torch.where(weights > 0, marginals.loss(target) * weights, 0).sum(-1)


def _check_finite(x: Tensor, name: str) -> Tensor:
    if not all_finite(x):
        raise ValueError(f"{name} contains NaN or inf; fill missing covariates before forecasting")
    return x


def _observed_only(
    target: Tensor, observed: Tensor, dtype: torch.dtype, name: str, observed_name: str, counts: str | None = None
) -> Tensor:
    """``target`` in ``dtype`` with unobserved entries set to 0; a ``ValueError`` if an observed entry is NaN or inf
    or, with ``counts`` (the name of a counts head), not a non-negative integer. One reduction either way."""
    filled = torch.where(observed, target.to(dtype), 0)
    if counts is None:
        if all_finite(filled):
            return filled
    elif bool(not_counts(filled).sum() == 0):  # 0 proves every entry a finite count; NaN or inf make it NaN
        return filled
    if not bool(torch.isfinite(filled).all()):
        if target.dtype == torch.float16:
            raise ValueError(
                f"{name} is float16, whose largest value is {torch.finfo(torch.float16).max:.0f}, and has inf where "
                f"{observed_name} is 1: the data overflowed when it was cast to float16 (--trainer.precision "
                "16-true casts every batch); use --trainer.precision bf16-true (bfloat16 has float32's range), "
                "bf16-mixed or 32-true"
            )
        raise ValueError(
            f"{name} has inf or NaN at observed steps ({observed_name} 1): a series' target may hold NaN for its "
            "missing values, which GluonTS's pipeline marks unobserved, but not inf; replace inf with NaN in the "
            f"data's target (calling the network directly: set {observed_name} to 0 where a value is missing)"
        )
    bad = filled[not_counts(filled) > 0]
    examples = ", ".join(f"{v:g}" for v in bad[:5].tolist())
    raise ValueError(
        f"distribution={counts!r} is over counts, but {name} has {bad.numel()} observed values that are not "
        f"non-negative integers (e.g. {examples}); use distribution='student_t' (or 'normal', 'johnson_su', "
        "'quantile') for real-valued data, with nonnegative_pred_samples=True where it cannot be negative"
    )


def _fits(inputs: Tensor, dtype: torch.dtype) -> Tensor:
    """``inputs`` cast to the network's ``dtype``; a ``ValueError`` where a float16 network cannot hold them."""
    cast = inputs.to(dtype)
    if dtype == torch.float16 and not all_finite(cast):
        raise ValueError(
            f"the network's scaled inputs exceed float16's largest value {torch.finfo(torch.float16).max:.0f} (a "
            "past value far above the context's mean scale); use --trainer.precision bf16-true, bf16-mixed or 32-true"
        )
    return cast


def gate_terms(naive_gate: bool | Sequence[str]) -> tuple[str, ...]:
    """``naive_gate`` as a tuple of :data:`NAIVE_GATE_TERMS` (``True``: ``("last",)``; ``False``: empty)."""
    if isinstance(naive_gate, bool):
        return ("last",) if naive_gate else ()
    terms = () if isinstance(naive_gate, str) else tuple(naive_gate)
    if not terms or len(set(terms)) != len(terms) or not set(terms) <= set(NAIVE_GATE_TERMS):
        raise ValueError(
            f"naive_gate={naive_gate!r}: give a bool or a list of distinct terms from {NAIVE_GATE_TERMS}, "
            "e.g. ['last', 'level']"
        )
    return terms


def _check_lags(lags_seq: Sequence[int]) -> list[int]:
    lags = list(lags_seq)
    if not lags or any(isinstance(lag, bool) or not isinstance(lag, int) or lag < 1 for lag in lags):
        raise ValueError(f"lags_seq must be a non-empty list of positive ints, got {lags_seq!r}")
    return sorted(set(lags))


def _static_cat_sizes(
    num_feat_static_cat: int, cardinality: list[int] | None, embedding_dimension: list[int] | None
) -> tuple[list[int], list[int]]:
    """Checked ``(cardinality, embedding_dimension)``; empty without categorical features (GluonTS's dummy
    ``cardinality=[1]`` is accepted then)."""
    if num_feat_static_cat == 0:
        if cardinality not in (None, [], [1]) or embedding_dimension not in (None, [], [1]):
            raise ValueError(
                "cardinality and embedding_dimension must be None (or GluonTS's dummy [1]) "
                f"when num_feat_static_cat=0, got {cardinality} and {embedding_dimension}"
            )
        return [], []
    if cardinality is None or len(cardinality) != num_feat_static_cat or any(c < 1 for c in cardinality):
        raise ValueError(
            f"cardinality must list num_feat_static_cat={num_feat_static_cat} positive category counts, "
            f"got {cardinality}"
        )
    if embedding_dimension is None:
        embedding_dimension = [min(50, (c + 1) // 2) for c in cardinality]
    if len(embedding_dimension) != num_feat_static_cat or any(d < 1 for d in embedding_dimension):
        raise ValueError(
            f"embedding_dimension must list num_feat_static_cat={num_feat_static_cat} positive sizes, "
            f"got {embedding_dimension}"
        )
    return list(cardinality), list(embedding_dimension)
