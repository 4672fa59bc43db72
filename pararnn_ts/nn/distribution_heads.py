"""Distribution heads: features ``(..., F)`` → a distribution over ``(...)`` with loss, cdf, icdf and samples.

Every head is ``head(features, scale) -> ForecastDistribution``. ``scale`` ``(...)`` (or broadcastable,
e.g. ``(B, 1)`` for features ``(B, H, F)``) is the series' mean scale: the head works in scaled units
and the distribution it returns is in the data's units (GluonTS's convention: location and spread are
multiplied by the scale; for the negative binomial the mean is, the shape is not).

The returned object offers what a forecaster needs from its marginals:

- ``loss(target)``: negative log-likelihood per element (pinball loss for :class:`QuantileHead`);
- ``mean``, ``sample(shape)`` ``→ (*shape, ...)``;
- ``cdf(y)``, ``icdf(u)`` and ``pit(y)`` (probability integral transform; randomised for counts),
  which a copula uses. Where torch has no cdf/icdf (Student-t, negative binomial) they come from
  :mod:`scipy.stats` on detached values, without gradient: copulas are fitted on detached PITs
  (the two-stage "inference functions for margins" method), so none is needed.

Besides the symmetric Student-t and Normal, Johnson's S_U (``"johnson_su"``) is a skewed choice for
right-skewed data, whose multi-step marginals can lean the way a sampled autoregressive model's do.

Precision: a head's distribution is computed in :func:`head_dtype` (at least float32) with autocast off,
whatever the network's dtype: a :class:`HeadLinear` upcasts the features and the projection's (e.g.
bfloat16) weights where the head starts, so log-likelihoods, cdf/icdf and samples never run in bfloat16 or
float16 (``--trainer.precision bf16-true``/``16-true``, or under autocast), and a float64 network keeps float64.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from functools import reduce
from itertools import pairwise
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from torch import Tensor, nn
from torch.distributions import Distribution, NegativeBinomial, Normal, StudentT

from ..core.checks import autocast_enabled

DEFAULT_QUANTILES = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
_SQRT2 = 2**0.5
_LOG_2PI = float(np.log(2 * np.pi))


def head_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """The dtype distribution maths runs in for tensors of ``dtypes``: the widest of them and float32
    (bfloat16/float16 → float32; float64 stays float64)."""
    return reduce(torch.promote_types, dtypes, torch.float32)


def no_autocast(x: Tensor) -> contextlib.AbstractContextManager:
    """A context with autocast off on ``x``'s device (nothing to do where autocast is not on): ops then run in
    their inputs' dtype, so a head's float32 maths is not cast back to bfloat16/float16."""
    if autocast_enabled(x.device.type):
        return torch.autocast(x.device.type, enabled=False)
    return contextlib.nullcontext()


class HeadLinear(nn.Linear):
    """The Linear where a head reads the network's features: ``(..., in_features)`` → ``(..., out_features)`` in
    ``head_dtype(x.dtype, weight.dtype)`` with autocast off, the input and the parameters upcast to it. This is
    the precision boundary: the network before it may run in bfloat16/float16, everything after is at least float32.
    """

    def forward(self, x: Tensor) -> Tensor:
        dtype = head_dtype(x.dtype, self.weight.dtype)
        bias = None if self.bias is None else self.bias.to(dtype)
        with no_autocast(x):
            return F.linear(x.to(dtype), self.weight.to(dtype), bias)


def clamp_unit(u: Tensor) -> Tensor:
    """``u`` clamped into the open unit interval, so that icdf stays finite."""
    eps = torch.finfo(u.dtype).eps
    return u.clamp(eps, 1 - eps)


def _from_numpy(values: np.ndarray, like: Tensor) -> Tensor:
    return torch.as_tensor(values, dtype=like.dtype, device=like.device)


def _numpy(t: Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy()


class ForecastDistribution:
    """Marginal distributions of a batch (e.g. ``(B, H)``: series × horizon steps), in the data's units."""

    #: whether values are counts (then :meth:`pit` is randomised)
    discrete: bool = False

    @property
    def args(self) -> dict[str, Tensor]:
        """The distribution's parameters, each of the batch shape (``(..., K)`` for quantiles)."""
        raise NotImplementedError

    @property
    def batch_shape(self) -> torch.Size:
        raise NotImplementedError

    @property
    def mean(self) -> Tensor:
        raise NotImplementedError

    def loss(self, target: Tensor) -> Tensor:
        """Per-element training loss of ``target`` (batch shape) → batch shape."""
        raise NotImplementedError

    def cdf(self, y: Tensor) -> Tensor:
        raise NotImplementedError

    def icdf(self, u: Tensor) -> Tensor:
        """Quantile function; ``u`` ``(*sample, *batch)`` with levels in (0, 1) → values of that shape."""
        raise NotImplementedError

    def sample(self, shape: Sequence[int] = ()) -> Tensor:
        """``(*shape, *batch)`` samples."""
        u = torch.rand(*shape, *self.batch_shape, dtype=self.mean.dtype, device=self.mean.device)
        return self.icdf(u)

    def pit(self, y: Tensor) -> Tensor:
        """Probability integral transform ``F(y)`` in (0, 1), detached; uniform when ``y`` follows this
        distribution. Counts use the randomised PIT ``F(y−1) + V (F(y) − F(y−1))``, ``V ~ U(0, 1)``."""
        with torch.no_grad():
            if not self.discrete:
                return clamp_unit(self.cdf(y))
            lower = torch.where(y >= 1, self.cdf(y - 1), torch.zeros_like(y))
            upper = self.cdf(y)
            return clamp_unit(lower + torch.rand_like(y) * (upper - lower))


class TorchForecastDistribution(ForecastDistribution):
    """A :class:`torch.distributions.Distribution` with cdf/icdf from scipy where torch has none.

    Args:
        distribution: the torch distribution (its log-likelihood, mean and samples are used).
        args: its parameters by name (for inspection and tests).
        scipy_frozen: builds the frozen :mod:`scipy.stats` distribution for cdf/icdf
            (``None``: torch's own ``cdf``/``icdf``).
        discrete: whether values are counts.
    """

    def __init__(
        self,
        distribution: Distribution,
        args: dict[str, Tensor],
        scipy_frozen: Callable[[], Any] | None = None,
        discrete: bool = False,
    ) -> None:
        self.distribution = distribution
        self._args = args
        self._scipy_frozen = scipy_frozen
        self.discrete = discrete

    @property
    def args(self) -> dict[str, Tensor]:
        return self._args

    @property
    def batch_shape(self) -> torch.Size:
        return self.distribution.batch_shape

    @property
    def mean(self) -> Tensor:
        return self.distribution.mean

    def loss(self, target: Tensor) -> Tensor:
        return -self.distribution.log_prob(target)

    def cdf(self, y: Tensor) -> Tensor:
        if self._scipy_frozen is None:
            return self.distribution.cdf(y)
        return _from_numpy(self._scipy_frozen().cdf(_numpy(y)), y)

    def icdf(self, u: Tensor) -> Tensor:
        u = clamp_unit(u)
        if self._scipy_frozen is None:
            return self.distribution.icdf(u)
        return _from_numpy(self._scipy_frozen().ppf(_numpy(u)), u)

    def sample(self, shape: Sequence[int] = ()) -> Tensor:
        return self.distribution.sample(torch.Size(shape))


class QuantileForecast(ForecastDistribution):
    """The distribution whose quantile function interpolates ``quantiles`` linearly between ``levels``.

    The first and last segments are extended with their slopes to levels 0 and 1, so the
    distribution is a proper one (piecewise-uniform density on a bounded support): ``cdf``,
    ``icdf``, ``mean`` and ``sample`` are exact for it.

    Args:
        levels: ``(K,)`` increasing levels in (0, 1), ``K >= 2``.
        quantiles: ``(..., K)`` increasing values along the last dimension, in the data's units.
        scale: broadcastable to the batch shape; the pinball loss is computed in units of ``scale``.
    """

    def __init__(self, levels: Tensor, quantiles: Tensor, scale: Tensor) -> None:
        self.levels = levels
        self.quantiles = quantiles
        self.scale = scale
        slope_lo = (quantiles[..., 1] - quantiles[..., 0]) / (levels[1] - levels[0])
        slope_hi = (quantiles[..., -1] - quantiles[..., -2]) / (levels[-1] - levels[-2])
        lo = quantiles[..., 0] - levels[0] * slope_lo
        hi = quantiles[..., -1] + (1 - levels[-1]) * slope_hi
        #: the knots of the quantile function: levels (K + 2,) and values (..., K + 2)
        self.knot_levels = torch.cat([levels.new_zeros(1), levels, levels.new_ones(1)])
        self.knot_values = torch.cat([lo.unsqueeze(-1), quantiles, hi.unsqueeze(-1)], dim=-1)

    @property
    def args(self) -> dict[str, Tensor]:
        return {"quantiles": self.quantiles}

    @property
    def batch_shape(self) -> torch.Size:
        return self.quantiles.shape[:-1]

    @property
    def mean(self) -> Tensor:
        widths = self.knot_levels.diff()
        mids = (self.knot_values[..., 1:] + self.knot_values[..., :-1]) / 2
        return (mids * widths).sum(-1)

    def loss(self, target: Tensor) -> Tensor:
        """Pinball loss averaged over the levels, in units of the scale: ``mean_k ρ_τk((y − q_k) / scale)``."""
        error = (target.unsqueeze(-1) - self.quantiles) / self.scale.unsqueeze(-1)
        return torch.maximum(self.levels * error, (self.levels - 1) * error).mean(-1)

    def icdf(self, u: Tensor) -> Tensor:
        u = u.clamp(0, 1)
        right = torch.searchsorted(self.knot_levels, u.contiguous(), right=True).clamp(1, len(self.knot_levels) - 1)
        values = self.knot_values.expand(*u.shape, -1)
        v0, v1 = values.gather(-1, (right - 1).unsqueeze(-1)), values.gather(-1, right.unsqueeze(-1))
        t0, t1 = self.knot_levels[right - 1], self.knot_levels[right]
        return (v0.squeeze(-1) + (u - t0) / (t1 - t0) * (v1 - v0).squeeze(-1)).to(u.dtype)

    def cdf(self, y: Tensor) -> Tensor:
        values = self.knot_values.expand(*y.shape, -1).contiguous()
        right = torch.searchsorted(values, y.unsqueeze(-1).contiguous(), right=True).clamp(1, values.shape[-1] - 1)
        v0, v1 = values.gather(-1, right - 1).squeeze(-1), values.gather(-1, right).squeeze(-1)
        right = right.squeeze(-1)
        t0, t1 = self.knot_levels[right - 1], self.knot_levels[right]
        return (t0 + (y - v0) / (v1 - v0) * (t1 - t0)).clamp(0, 1)


class JohnsonSUForecast(ForecastDistribution):
    """Johnson's S_U: ``γ + δ asinh((y − ξ) / λ)`` is standard normal. ``γ`` skews it (``γ < 0``: a long
    right tail), ``δ`` sets the tails (heavier as it falls, Normal as it grows); every moment is finite,
    and the cdf, quantiles and likelihood are closed-form, so they keep their gradients."""

    def __init__(self, gamma: Tensor, delta: Tensor, loc: Tensor, scale: Tensor) -> None:
        self.gamma, self.delta, self.loc, self.scale = torch.broadcast_tensors(gamma, delta, loc, scale)

    @property
    def args(self) -> dict[str, Tensor]:
        return {"gamma": self.gamma, "delta": self.delta, "loc": self.loc, "scale": self.scale}

    @property
    def batch_shape(self) -> torch.Size:
        return self.loc.shape

    @property
    def mean(self) -> Tensor:
        return self.loc - self.scale * torch.exp(0.5 / self.delta**2) * torch.sinh(self.gamma / self.delta)

    def _normal_score(self, y: Tensor) -> tuple[Tensor, Tensor]:
        x = (y - self.loc) / self.scale
        return x, self.gamma + self.delta * torch.asinh(x)

    def loss(self, target: Tensor) -> Tensor:
        x, z = self._normal_score(target)
        log_pdf = self.delta.log() - self.scale.log() - 0.5 * torch.log1p(x * x) - 0.5 * z * z - 0.5 * _LOG_2PI
        return -log_pdf

    def cdf(self, y: Tensor) -> Tensor:
        return 0.5 * torch.erfc(-self._normal_score(y)[1] / _SQRT2)

    def icdf(self, u: Tensor) -> Tensor:
        z = _SQRT2 * torch.erfinv(2 * clamp_unit(u) - 1)
        return self.loc + self.scale * torch.sinh((z - self.gamma) / self.delta)


class DistributionHead(nn.Module):
    """Base of the heads: a :class:`HeadLinear` from ``in_features`` to the raw arguments, then :meth:`distribution`
    (in ``head_dtype`` of the features and parameters: float32 for a bfloat16/float16 network).

    Subclasses set :attr:`arg_names` (one output each) or override :attr:`num_args`.
    """

    arg_names: tuple[str, ...] = ()

    def __init__(self, in_features: int) -> None:
        super().__init__()
        if not isinstance(in_features, int) or in_features < 1:
            raise ValueError(f"{type(self).__name__}: in_features must be a positive int, got {in_features!r}")
        self.in_features = in_features
        self.proj = HeadLinear(in_features, self.num_args)

    @property
    def num_args(self) -> int:
        return len(self.arg_names)

    #: whether :meth:`forward` takes a location ``offset`` (heads with a location parameter)
    takes_offset = True
    #: whether the distribution is over counts, so targets must be non-negative integers (see :func:`not_counts`)
    counts = False

    def forward(
        self, features: Tensor, scale: Tensor | None = None, offset: Tensor | None = None
    ) -> ForecastDistribution:
        """``features`` ``(..., in_features)``, ``scale`` broadcastable to ``(...)`` → distribution over ``(...)``.

        ``offset`` (broadcastable to ``(...)``, in units of the scale) is added to the location, so the
        head learns a correction of it (e.g. of the seasonal-naive forecast). The distribution's dtype is
        :func:`head_dtype` of the features' and the parameters' (at least float32).
        """
        if offset is not None and not self.takes_offset:
            raise ValueError(f"{type(self).__name__} has no location to offset; pass offset=None")
        raw = self.proj(features)
        scale = torch.ones((), dtype=raw.dtype, device=raw.device) if scale is None else scale.to(raw.dtype)
        offset = torch.zeros((), dtype=raw.dtype, device=raw.device) if offset is None else offset.to(raw.dtype)
        with no_autocast(raw):
            return self.distribution(raw, scale, offset)

    def distribution(self, raw: Tensor, scale: Tensor, offset: Tensor) -> ForecastDistribution:
        """Raw outputs ``(..., num_args)``, the scale and the location offset → the distribution in the data's units."""
        raise NotImplementedError


def _positive(x: Tensor) -> Tensor:
    return F.softplus(x).clamp_min(torch.finfo(x.dtype).eps)


class StudentTHead(DistributionHead):
    """Student-t with ``df = 2 + softplus``, ``loc · scale``, ``softplus · scale`` (finite variance)."""

    arg_names = ("df", "loc", "scale")

    def distribution(self, raw: Tensor, scale: Tensor, offset: Tensor) -> ForecastDistribution:
        df_raw, loc_raw, scale_raw = raw.unbind(-1)
        df = 2 + F.softplus(df_raw)
        loc, sigma = (loc_raw + offset) * scale, _positive(scale_raw) * scale
        return TorchForecastDistribution(
            StudentT(df, loc, sigma),
            {"df": df, "loc": loc, "scale": sigma},
            lambda: stats.t(_numpy(df), _numpy(loc), _numpy(sigma)),
        )


class NormalHead(DistributionHead):
    """Normal with ``loc · scale`` and ``softplus · scale``."""

    arg_names = ("loc", "scale")

    def distribution(self, raw: Tensor, scale: Tensor, offset: Tensor) -> ForecastDistribution:
        loc_raw, scale_raw = raw.unbind(-1)
        loc, sigma = (loc_raw + offset) * scale, _positive(scale_raw) * scale
        return TorchForecastDistribution(Normal(loc, sigma), {"loc": loc, "scale": sigma})


class JohnsonSUHead(DistributionHead):
    """Johnson S_U (:class:`JohnsonSUForecast`): skew ``γ`` (raw), tails ``δ = 0.3 + softplus``, location
    ``loc · scale`` and spread ``softplus · scale``. At zero raw outputs it is symmetric with ``δ ≈ 1``."""

    arg_names = ("gamma", "delta", "loc", "scale")

    def distribution(self, raw: Tensor, scale: Tensor, offset: Tensor) -> ForecastDistribution:
        gamma, delta_raw, loc_raw, scale_raw = raw.unbind(-1)
        delta = 0.3 + F.softplus(delta_raw)
        return JohnsonSUForecast(gamma, delta, (loc_raw + offset) * scale, _positive(scale_raw) * scale)


class NegativeBinomialHead(DistributionHead):
    """Negative binomial for counts: ``total_count = softplus`` (the shape, not scaled) and
    ``logits + log(scale)``, so the mean ``total_count · exp(logits)`` is multiplied by the scale.

    Its loss does not check its targets (torch's ``validate_args`` would, at a host sync per call): a negative or
    fractional target gets a finite, meaningless likelihood. The forecaster refuses such data where the target
    enters the loss (:func:`not_counts`, folded into its finiteness check).
    """

    arg_names = ("total_count", "logits")
    takes_offset = False
    counts = True

    def distribution(self, raw: Tensor, scale: Tensor, offset: Tensor) -> ForecastDistribution:
        count_raw, logits_raw = raw.unbind(-1)
        total_count = _positive(count_raw)
        logits = logits_raw + scale.log()
        return TorchForecastDistribution(
            NegativeBinomial(total_count, logits=logits, validate_args=False),
            {"total_count": total_count, "logits": logits},
            # scipy counts failures before n successes with success probability p = 1 − torch's probs
            lambda: stats.nbinom(_numpy(total_count), _numpy(torch.sigmoid(-logits))),
            discrete=True,
        )


class QuantileHead(DistributionHead):
    """Monotone quantiles at fixed ``quantiles`` levels, trained with the pinball loss.

    Raw outputs ``(r_1, ..., r_K)`` give ``q_1 = r_1`` and ``q_k = q_{k-1} + softplus(r_k) + min_gap``,
    multiplied by the scale; see :class:`QuantileForecast` for the distribution between them.
    """

    #: smallest gap between neighbouring quantiles, in units of the scale
    min_gap = 1e-5

    def __init__(self, in_features: int, quantiles: Sequence[float] = DEFAULT_QUANTILES) -> None:
        self.quantile_levels = check_quantiles(quantiles)
        super().__init__(in_features)

    @property
    def num_args(self) -> int:
        return len(self.quantile_levels)

    def distribution(self, raw: Tensor, scale: Tensor, offset: Tensor) -> ForecastDistribution:
        gaps = F.softplus(raw[..., 1:]) + self.min_gap
        quantiles = torch.cat([raw[..., :1], raw[..., :1] + gaps.cumsum(-1)], dim=-1) + offset.unsqueeze(-1)
        scale = scale.expand(raw.shape[:-1])
        levels = torch.tensor(self.quantile_levels, dtype=raw.dtype, device=raw.device)
        return QuantileForecast(levels, quantiles * scale.unsqueeze(-1), scale)


def not_counts(x: Tensor) -> Tensor:
    """How far each entry of ``x`` is from a count, ``|x − round(x)| + max(−x, 0)`` (same shape): 0 for
    non-negative integers, positive for negative or fractional values, NaN for NaN and ±inf, so that one sum
    tells whether every entry is a finite count (0) or not (see :attr:`DistributionHead.counts`)."""
    return (x - x.round()).abs() + (-x).clamp_min(0)


def check_quantiles(quantiles: Sequence[float]) -> tuple[float, ...]:
    """``quantiles`` as a tuple, or a ``ValueError`` unless they are >= 2 increasing levels in (0, 1)."""
    levels = tuple(float(q) for q in quantiles)
    if len(levels) < 2 or not all(0 < q < 1 for q in levels) or any(b <= a for a, b in pairwise(levels)):
        raise ValueError(f"quantiles must be at least 2 strictly increasing levels in (0, 1), got {list(quantiles)}")
    return levels


DISTRIBUTION_HEADS: dict[str, type[DistributionHead]] = {
    "student_t": StudentTHead,
    "normal": NormalHead,
    "johnson_su": JohnsonSUHead,
    "negative_binomial": NegativeBinomialHead,
    "quantile": QuantileHead,
}


def build_head(name: str, in_features: int, quantiles: Sequence[float] | None = None) -> DistributionHead:
    """The head called ``name`` (a key of :data:`DISTRIBUTION_HEADS`); ``quantiles`` only for ``"quantile"``."""
    if name not in DISTRIBUTION_HEADS:
        raise ValueError(f"distribution={name!r} is not one of {tuple(DISTRIBUTION_HEADS)}")
    if name == "quantile":
        return QuantileHead(in_features, DEFAULT_QUANTILES if quantiles is None else quantiles)
    if quantiles is not None:
        raise ValueError(f'quantiles are only used with distribution="quantile", not {name!r}; drop quantiles')
    return DISTRIBUTION_HEADS[name](in_features)
