"""Distribution heads: likelihoods against torch.distributions/scipy, scale handling, cdf/icdf, samples, PITs."""

from __future__ import annotations

import contextlib
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from gluonts.torch.distributions import NegativeBinomialOutput
from scipy import stats
from torch.distributions import AffineTransform, Normal, StudentT, TransformedDistribution

from pararnn_ts.nn.copula import LowRankGaussianCopula
from pararnn_ts.nn.distribution_heads import (
    DEFAULT_QUANTILES,
    DISTRIBUTION_HEADS,
    JohnsonSUHead,
    NegativeBinomialHead,
    NormalHead,
    QuantileHead,
    StudentTHead,
    build_head,
    not_counts,
)

BATCH, HORIZON, FEATURES = 3, 5, 4
NUM_SAMPLES = 20_000


def head_inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Features ``(B, H, F)`` and a scale ``(B, 1)`` spanning two orders of magnitude, in float64."""
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(BATCH, HORIZON, FEATURES, generator=g, dtype=torch.float64)
    scale = torch.tensor([[0.5], [3.0], [40.0]], dtype=torch.float64)
    return features, scale


def make_head(cls, **kwargs):
    torch.manual_seed(0)
    return cls(FEATURES, **kwargs).double()


def raw_outputs(head, features: torch.Tensor) -> list[torch.Tensor]:
    return list((features @ head.proj.weight.T + head.proj.bias).detach().unbind(-1))


def binomial_tol(p: torch.Tensor | float, n: int) -> torch.Tensor | float:
    """Five standard deviations of a frequency estimated from ``n`` draws."""
    return 5 * (p * (1 - p) / n) ** 0.5


def test_student_t_likelihood_is_the_affinely_scaled_student_t():
    head = make_head(StudentTHead)
    features, scale = head_inputs()
    dist = head(features, scale)
    df_raw, loc_raw, scale_raw = raw_outputs(head, features)
    torch.testing.assert_close(dist.args["df"], 2 + F.softplus(df_raw))
    base = StudentT(2 + F.softplus(df_raw), loc_raw, F.softplus(scale_raw))
    reference = TransformedDistribution(base, [AffineTransform(0.0, scale)])
    y = reference.sample((2,))
    torch.testing.assert_close(dist.loss(y), -reference.log_prob(y))
    assert (dist.args["df"] > 2).all()


def test_normal_likelihood_is_the_affinely_scaled_normal():
    head = make_head(NormalHead)
    features, scale = head_inputs()
    dist = head(features, scale)
    loc_raw, scale_raw = raw_outputs(head, features)
    reference = TransformedDistribution(Normal(loc_raw, F.softplus(scale_raw)), [AffineTransform(0.0, scale)])
    y = reference.sample((2,))
    torch.testing.assert_close(dist.loss(y), -reference.log_prob(y))
    torch.testing.assert_close(dist.mean, loc_raw * scale)


def test_johnson_su_likelihood_cdf_quantiles_and_mean_match_scipy():
    head = make_head(JohnsonSUHead)
    with torch.no_grad():
        head.proj.bias[0] = -1.5  # a clear skew, so a sign error in gamma shows
    features, scale = head_inputs()
    dist = head(features, scale)
    gamma, delta_raw, loc_raw, scale_raw = raw_outputs(head, features)
    delta = 0.3 + F.softplus(delta_raw)
    frozen = stats.johnsonsu(
        gamma.numpy(), delta.numpy(), (loc_raw * scale).numpy(), (F.softplus(scale_raw) * scale).numpy()
    )
    y = torch.as_tensor(frozen.rvs(size=(2, BATCH, HORIZON), random_state=0))
    torch.testing.assert_close(dist.loss(y), torch.as_tensor(-frozen.logpdf(y.numpy())))
    torch.testing.assert_close(dist.cdf(y), torch.as_tensor(frozen.cdf(y.numpy())))
    u = torch.rand(2, BATCH, HORIZON, dtype=torch.float64)
    torch.testing.assert_close(dist.icdf(u), torch.as_tensor(frozen.ppf(u.numpy())))
    torch.testing.assert_close(dist.mean, torch.as_tensor(frozen.mean()))
    assert (dist.args["delta"] > 0.3).all()
    assert (dist.mean > dist.icdf(torch.full_like(u[0], 0.5))).all()  # gamma < 0: right-skewed, mean > median


def test_negative_binomial_likelihood_matches_scipy_with_the_mean_scaled():
    head = make_head(NegativeBinomialHead)
    features, scale = head_inputs()
    dist = head(features, scale)
    count_raw, logits_raw = raw_outputs(head, features)
    r = F.softplus(count_raw)
    unscaled_mean = r * logits_raw.exp()
    torch.testing.assert_close(dist.args["total_count"], r)  # the shape is not scaled
    torch.testing.assert_close(dist.mean, unscaled_mean * scale)  # the mean is
    y = torch.tensor([0.0, 1.0, 7.0, 30.0], dtype=torch.float64)[:, None, None].expand(-1, BATCH, HORIZON)
    success = r / (r + unscaled_mean * scale)  # scipy's p, for the scaled mean
    expected = -stats.nbinom.logpmf(y.numpy(), r.numpy(), success.numpy())
    torch.testing.assert_close(dist.loss(y), torch.as_tensor(expected))


def test_negative_binomial_scale_handling_matches_gluonts():
    head = make_head(NegativeBinomialHead)
    features, scale = head_inputs()
    dist = head(features, scale)
    count_raw, logits_raw = raw_outputs(head, features)
    gluonts_dist = NegativeBinomialOutput().distribution((F.softplus(count_raw), logits_raw.clone()), scale=scale)
    y = torch.arange(12, dtype=torch.float64)[:, None, None].expand(-1, BATCH, HORIZON)
    torch.testing.assert_close(dist.loss(y), -gluonts_dist.log_prob(y))
    u = torch.rand(BATCH, HORIZON, dtype=torch.float64)
    torch.testing.assert_close(dist.icdf(u), gluonts_dist.icdf(u))


def pinball_by_hand(levels, quantiles, target, scale) -> float:
    total = 0.0
    for tau, q in zip(levels, quantiles, strict=True):
        error = (target - q) / scale
        total += tau * error if error >= 0 else (tau - 1) * error
    return total / len(levels)


def test_quantile_head_pinball_loss_and_monotone_quantiles():
    head = make_head(QuantileHead, quantiles=(0.1, 0.5, 0.9))
    with torch.no_grad():
        head.proj.bias.fill_(-30.0)  # raw gaps far below 0: quantiles must still increase
    features, scale = head_inputs()
    dist = head(features, scale)
    q = dist.args["quantiles"]
    assert q.shape == (BATCH, HORIZON, 3)
    assert (q.diff(dim=-1) > 0).all()
    target = torch.randn(BATCH, HORIZON, dtype=torch.float64) * scale
    loss = dist.loss(target)
    for b in range(BATCH):
        for k in range(HORIZON):
            expected = pinball_by_hand((0.1, 0.5, 0.9), q[b, k].tolist(), target[b, k].item(), scale[b, 0].item())
            assert loss[b, k].item() == pytest.approx(expected, rel=1e-12)


def test_quantile_distribution_interpolates_its_knots():
    head = make_head(QuantileHead)
    features, scale = head_inputs()
    dist = head(features, scale)
    q = dist.args["quantiles"]
    levels = torch.tensor(DEFAULT_QUANTILES, dtype=torch.float64)
    torch.testing.assert_close(dist.icdf(levels.expand(BATCH, HORIZON, -1).permute(2, 0, 1)), q.permute(2, 0, 1))
    torch.testing.assert_close(dist.cdf(q.permute(2, 0, 1)), levels[:, None, None].expand(-1, BATCH, HORIZON))
    # the mean of a piecewise-linear quantile function, by fine numerical integration
    u = (torch.arange(200_000, dtype=torch.float64) + 0.5) / 200_000
    numeric_mean = dist.icdf(u[:, None, None].expand(-1, BATCH, HORIZON)).mean(0)
    torch.testing.assert_close(dist.mean, numeric_mean, rtol=1e-6, atol=1e-9)


CONTINUOUS_HEADS = [StudentTHead, NormalHead, JohnsonSUHead, QuantileHead]
ALL_HEADS = [*CONTINUOUS_HEADS, NegativeBinomialHead]


@pytest.mark.parametrize("cls", CONTINUOUS_HEADS)
def test_cdf_icdf_round_trip(cls):
    head = make_head(cls)
    features, scale = head_inputs()
    dist = head(features, scale)
    u = torch.linspace(0.01, 0.99, 25, dtype=torch.float64)[:, None, None].expand(-1, BATCH, HORIZON)
    torch.testing.assert_close(dist.cdf(dist.icdf(u)), u)


def test_negative_binomial_icdf_is_the_smallest_count_reaching_the_level():
    dist = make_head(NegativeBinomialHead)(*head_inputs())
    u = torch.linspace(0.01, 0.99, 25, dtype=torch.float64)[:, None, None].expand(-1, BATCH, HORIZON)
    y = dist.icdf(u)
    assert (y == y.round()).all() and (y >= 0).all()
    assert (dist.cdf(y) >= u - 1e-12).all()
    below = torch.where(y >= 1, dist.cdf(y - 1), torch.zeros_like(y))
    assert (below < u).all()


@pytest.mark.parametrize("cls", ALL_HEADS)
def test_samples_follow_quantiles_and_mean(cls):
    head = make_head(cls)
    features, scale = head_inputs()
    if cls is StudentTHead:  # df well above 4, so the sample mean's error has a finite variance to bound
        with torch.no_grad():
            head.proj.bias[0] = 5.0
    dist = head(features, scale)
    torch.manual_seed(1)
    samples = dist.sample((NUM_SAMPLES,))
    assert samples.shape == (NUM_SAMPLES, BATCH, HORIZON)
    for p in (0.1, 0.5, 0.9):
        level = torch.full((BATCH, HORIZON), p, dtype=torch.float64)
        below = (samples <= dist.icdf(level)).double().mean(0)
        # counts: P(Y <= icdf(p)) lies in [p, p + P(Y = icdf(p))]
        lower = below if cls is not NegativeBinomialHead else (samples < dist.icdf(level)).double().mean(0)
        assert (lower <= p + binomial_tol(p, NUM_SAMPLES)).all()
        assert (below >= p - binomial_tol(p, NUM_SAMPLES)).all()
    spread = samples.std(0)
    assert ((samples.mean(0) - dist.mean).abs() <= 5 * spread / math.sqrt(NUM_SAMPLES)).all()


def test_negative_binomial_sample_variance_matches_its_shape():
    dist = make_head(NegativeBinomialHead)(*head_inputs())
    torch.manual_seed(2)
    samples = dist.sample((NUM_SAMPLES,))
    mean, r = dist.mean, dist.args["total_count"]
    variance = mean + mean**2 / r
    # the sample variance's standard error, from the negative binomial's fourth central moment
    excess_kurtosis = 6 / r + (r / (r + mean)) ** 2 / (r * (1 - r / (r + mean)))
    se = variance * ((2 + excess_kurtosis) / NUM_SAMPLES) ** 0.5
    assert ((samples.var(0) - variance).abs() <= 5 * se).all()


@pytest.mark.parametrize("cls", ALL_HEADS)
def test_pit_of_own_samples_is_uniform(cls):
    dist = make_head(cls)(*head_inputs())
    torch.manual_seed(3)
    u = dist.pit(dist.sample((4000,)))
    assert ((u > 0) & (u < 1)).all()
    for b in range(BATCH):
        for k in range(HORIZON):
            assert stats.kstest(u[:, b, k].numpy(), "uniform").statistic < 1.95 / math.sqrt(4000)


@pytest.mark.parametrize("precision", ["bf16-true", "16-true", "bf16-mixed"])
@pytest.mark.parametrize("cls", ALL_HEADS)
def test_heads_and_copula_compute_in_float32_from_half_precision_parameters_or_under_autocast(cls, precision):
    """True half precision gives the heads (b)float16 parameters and features, mixed precision runs them under
    autocast: either way the distribution, its loss, quantiles and PITs, and the copula (whose Cholesky has no
    bfloat16 kernel) come in float32, close to a float32 head's."""
    features, scale = (x.float() for x in head_inputs())
    head, copula = make_head(cls).float(), LowRankGaussianCopula(HORIZON, 2, FEATURES)
    with torch.no_grad():
        copula.factor_proj.weight.normal_(std=0.1)
    expected, expected_copula = head(features, scale), copula(features[:, 0])
    target, level = expected.icdf(torch.full((BATCH, HORIZON), 0.3)), torch.full((BATCH, HORIZON), 0.7)
    u = expected.pit(target)  # randomised for counts: drawn once
    context = contextlib.nullcontext()
    if precision == "bf16-mixed":
        context = torch.autocast("cpu", dtype=torch.bfloat16)
    else:
        low = torch.bfloat16 if precision == "bf16-true" else torch.float16
        head, copula, features = copy.deepcopy(head).to(low), copy.deepcopy(copula).to(low), features.to(low)
    with context:
        dist, gaussian = head(features, scale), copula(features[:, 0])
        loss, quantile, pit = dist.loss(target), dist.icdf(level), dist.pit(target)
        copula_loss, z = gaussian.loss(u), gaussian.sample(4)
    for value in (dist.mean, loss, quantile, pit, gaussian.correlation, copula_loss, z):
        assert value.dtype == torch.float32 and torch.isfinite(value).all()
    tolerance = {"rtol": 3e-2, "atol": 3e-2}
    torch.testing.assert_close(loss, expected.loss(target), **tolerance)
    torch.testing.assert_close(quantile / scale, expected.icdf(level) / scale, **tolerance)
    torch.testing.assert_close(copula_loss, expected_copula.loss(u), **tolerance)


def test_pit_is_detached():
    head = make_head(NormalHead)
    features, scale = head_inputs()
    dist = head(features, scale)
    assert not dist.pit(dist.mean).requires_grad


def test_build_head_and_bad_arguments():
    assert isinstance(build_head("student_t", 8), StudentTHead)
    assert build_head("quantile", 8, [0.25, 0.75]).quantile_levels == (0.25, 0.75)
    with pytest.raises(ValueError, match="distribution='gamma'"):
        build_head("gamma", 8)
    with pytest.raises(ValueError, match="quantiles"):
        build_head("normal", 8, [0.5, 0.6])
    for bad in ([0.5], [0.2, 0.1], [0.0, 0.5], [0.5, 1.0]):
        with pytest.raises(ValueError, match="quantiles"):
            QuantileHead(8, bad)
    with pytest.raises(ValueError, match="in_features"):
        StudentTHead(0)


def test_not_counts_is_zero_exactly_on_counts_and_only_the_count_head_needs_them():
    """The forecaster sums :func:`not_counts` of a counts head's observed targets: 0 only when all are counts."""
    x = torch.tensor([0.0, 3.0, 1e9, -1.0, 2.5, -0.5, 1e-3, float("nan"), float("inf"), -float("inf")])
    d = not_counts(x)
    assert (d[:3] == 0).all() and (d[3:7] > 0).all() and d[7:].isnan().all()
    torch.testing.assert_close(d[3:7], torch.tensor([1.0, 0.5, 1.0, 1e-3]))
    assert not_counts(torch.tensor([1.0, 2.0, -0.25])).sum() > 0 and not_counts(torch.arange(5.0)).sum() == 0
    assert [name for name, cls in DISTRIBUTION_HEADS.items() if cls.counts] == ["negative_binomial"]
