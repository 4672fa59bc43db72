"""A Gaussian copula across the forecast horizon, with a low-rank correlation per series.

Why a copula. The ParaRNN forecaster computes the marginal distributions of all ``H`` horizon steps
in one parallel solve: nothing sampled is fed back into the recurrence (that would break the
diagonal Jacobian the solve relies on), so the marginals are exact but say nothing about how the
steps move together. Drawing each step independently would give incoherent paths (a sum over the
horizon would be far too narrow). A copula adds the dependence without touching the marginals:
draw ``z ~ N(0, R)`` with a correlation matrix ``R`` (unit diagonal, so every ``z_k`` is standard
normal), map ``u_k = Φ(z_k)`` (uniform) and ``y_k = F_k⁻¹(u_k)`` through step ``k``'s marginal
quantile function. Marginals stay exactly those of the head, paths are coherent, and sampling is
one batched matrix product: no loop over the horizon.

Fitting. ``R = normalise(V Vᵀ + diag(d))`` with ``V`` ``(H, r)`` produced per series from the
state at the forecast start (a Linear on ``h`` at the last context step) plus a learned base,
and ``d > 0`` learned; normalise rescales to unit diagonal. The loss is the negative copula
log-density of the PITs ``u_k = F_k(y_k)`` of the observed future, with the PITs (and the state)
detached: the marginals are fitted by their own likelihood and the copula on top of them, the
two-stage "inference functions for margins" method, so the copula cannot distort the marginals.

Precision: the copula is computed in at least float32 (:func:`~pararnn_ts.nn.distribution_heads.head_dtype`) with
autocast off, whatever the network's dtype: its Cholesky factorisation, ``Φ⁻¹`` and log-density have no
bfloat16/float16 kernels or lose too much in them. :class:`LowRankGaussianCopula` upcasts its parameters and
reads the state through a :class:`~pararnn_ts.nn.distribution_heads.HeadLinear`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.distributions import LowRankMultivariateNormal, Normal

from .distribution_heads import ForecastDistribution, HeadLinear, clamp_unit, head_dtype, no_autocast


class GaussianCopula:
    """Gaussian copula of dimension ``H`` with correlation ``R = factor factorᵀ + diag(diag)`` (unit diagonal).

    Computed in ``head_dtype(factor.dtype, diag.dtype)`` (at least float32), with autocast off.

    Args:
        factor: ``(B, H, r)``, already normalised.
        diag: ``(B, H)``, positive, with ``diag + Σ_j factor²_j = 1``.
    """

    def __init__(self, factor: Tensor, diag: Tensor) -> None:
        dtype = head_dtype(factor.dtype, diag.dtype)
        self.factor = factor.to(dtype)
        self.diag = diag.to(dtype)
        with no_autocast(self.diag):
            self.gaussian = LowRankMultivariateNormal(self.diag.new_zeros(diag.shape), self.factor, self.diag)

    @classmethod
    def from_unnormalised(cls, factor: Tensor, diag: Tensor) -> GaussianCopula:
        """The copula of the covariance ``factor factorᵀ + diag(diag)``: its correlation matrix."""
        variance = factor.pow(2).sum(-1) + diag
        return cls(factor / variance.sqrt().unsqueeze(-1), diag / variance)

    @property
    def correlation(self) -> Tensor:
        """``R`` ``(B, H, H)``."""
        return self.factor @ self.factor.transpose(-1, -2) + torch.diag_embed(self.diag)

    def log_density(self, u: Tensor) -> Tensor:
        """``log c(u) = log N(z; 0, R) − Σ_k log φ(z_k)`` with ``z = Φ⁻¹(u)``; ``u`` ``(..., B, H)`` → ``(..., B)``.

        ``u`` is detached: the copula is fitted on fixed PITs.
        """
        z = torch.special.ndtri(clamp_unit(u.detach().to(self.diag.dtype)))
        with no_autocast(z):
            return self.gaussian.log_prob(z) - Normal(z.new_zeros(()), z.new_ones(())).log_prob(z).sum(-1)

    def loss(self, u: Tensor) -> Tensor:
        """Negative log-density of the PITs ``u`` ``(..., B, H)`` → ``(..., B)``."""
        return -self.log_density(u)

    def sample(self, num_samples: int) -> Tensor:
        """``z`` ``(num_samples, B, H)``: standard-normal marginals, correlation ``R``."""
        with no_autocast(self.diag):
            return self.gaussian.rsample((num_samples,))


class LowRankGaussianCopula(nn.Module):
    """Learns the per-series :class:`GaussianCopula` of ``horizon`` steps with rank-``rank`` factors.

    ``V = V_base + W h`` with ``W`` a Linear (zero at initialisation) on the state ``h`` ``(B, in_features)``
    at the forecast start, and ``R = normalise(V Vᵀ + diag(d))``. Without ``in_features`` (or without a
    state) every series shares ``V_base``. The copula is computed in at least float32 (the parameters' dtype
    upcast: float32 for bfloat16/float16 parameters).

    Args:
        horizon: ``H``, the dimension of the copula.
        rank: ``r >= 1``, columns of ``V``.
        in_features: features of the state ``h``; ``None``: no per-series part.
        init_std: standard deviation of ``V_base`` at initialisation (``V = 0`` is a stationary point of the
            loss, so it starts slightly off it; ``d`` starts at 1).
    """

    def __init__(self, horizon: int, rank: int, in_features: int | None = None, init_std: float = 0.1) -> None:
        super().__init__()
        for name, value in {"horizon": horizon, "rank": rank}.items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"LowRankGaussianCopula: {name} must be a positive int, got {value!r}")
        if in_features is not None and (not isinstance(in_features, int) or in_features < 1):
            raise ValueError(f"LowRankGaussianCopula: in_features must be a positive int or None, got {in_features!r}")
        self.horizon, self.rank, self.in_features, self.init_std = horizon, rank, in_features, init_std
        self.base_factor = nn.Parameter(torch.empty(horizon, rank))
        self.diag_raw = nn.Parameter(torch.empty(horizon))
        self.factor_proj = HeadLinear(in_features, horizon * rank, bias=False) if in_features else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.base_factor, std=self.init_std)
        nn.init.constant_(self.diag_raw, math.log(math.e - 1))  # softplus⁻¹(1)
        if self.factor_proj is not None:
            nn.init.zeros_(self.factor_proj.weight)

    def forward(self, state: Tensor | None = None, batch_size: int | None = None) -> GaussianCopula:
        """The copula of each series: from ``state`` ``(B, in_features)`` (detached), else ``V_base`` for
        ``batch_size`` series (default 1)."""
        dtype = head_dtype(self.base_factor.dtype)
        diag = nn.functional.softplus(self.diag_raw.to(dtype)) + torch.finfo(dtype).eps
        base_factor = self.base_factor.to(dtype)
        if state is None or self.factor_proj is None:
            batch = batch_size if batch_size is not None else (1 if state is None else state.shape[0])
            factor = base_factor.expand(batch, -1, -1)
        else:
            if state.dim() != 2 or state.shape[-1] != self.in_features:
                raise ValueError(
                    f"LowRankGaussianCopula: state must be (batch, {self.in_features}), got {tuple(state.shape)}"
                )
            per_series = self.factor_proj(state.detach())
            factor = base_factor + per_series.view(-1, self.horizon, self.rank)
        return GaussianCopula.from_unnormalised(factor, diag.expand(factor.shape[:-1]))

    def loss(self, u: Tensor, state: Tensor | None = None) -> Tensor:
        """Negative copula log-density of detached PITs ``u`` ``(B, H)`` → ``(B,)``."""
        return self(state, batch_size=u.shape[-2]).loss(u)

    def sample(self, num_samples: int, batch: int = 1, state: Tensor | None = None) -> Tensor:
        """``z`` ``(num_samples, B, H)`` with standard-normal marginals and correlation ``R``."""
        return self(state, batch_size=batch).sample(num_samples)

    def extra_repr(self) -> str:
        return f"horizon={self.horizon}, rank={self.rank}, in_features={self.in_features}"


def sample_paths(
    marginals: ForecastDistribution, copula: GaussianCopula | None, num_samples: int, quantile_grid: bool = True
) -> Tensor:
    """``(num_samples, B, H)`` paths from the marginals (batch shape ``(B, H)``) tied by ``copula``.

    ``z`` comes from ``copula`` (independent standard normals when it is ``None``). With ``quantile_grid``
    (ensemble copula coupling with equidistant quantiles) step ``k``'s ``S`` samples are exactly its
    marginal's quantiles ``F_k⁻¹((i + ½) / S)``, ``i < S``, handed to the paths in the order of the ranks of
    ``z_k``: the dependence across steps is the copula's (the paths' ranks are ``z``'s) and the samples'
    empirical quantiles carry no Monte Carlo noise (the median of 100 samples is the median). Without it,
    ``y_k = F_k⁻¹(Φ(z_k))``: independent Monte Carlo draws.
    """
    shape = (num_samples, *marginals.batch_shape)
    like = marginals.mean
    z = torch.randn(shape, dtype=like.dtype, device=like.device) if copula is None else copula.sample(num_samples)
    if not quantile_grid:
        return marginals.icdf(torch.special.ndtr(z))
    ranks = z.argsort(dim=0).argsort(dim=0)
    return marginals.icdf((ranks.to(like.dtype) + 0.5) / num_samples)
