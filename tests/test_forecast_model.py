"""``ParaRNNForecastModel``: parallel = step-by-step, gradients, missing values, short series, copula, bad inputs."""

from __future__ import annotations

import contextlib
import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from pararnn_ts.forecast.lightning_module import ForecastTrainingModule, adam_eps
from pararnn_ts.forecast.module import ParaRNNForecastModel
from pararnn_ts.nn.copula import GaussianCopula, LowRankGaussianCopula

CONTEXT, HORIZON, LAGS = 6, 4, [1, 2, 3, 5]
SEASON = 3  # shorter than the horizon: the seasonal-naive forecast wraps around
PAST = CONTEXT + max(LAGS)
BATCH = 3


def make_model(**kwargs) -> ParaRNNForecastModel:
    torch.manual_seed(0)
    options = {
        "freq": "D",
        "context_length": CONTEXT,
        "prediction_length": HORIZON,
        "num_feat_dynamic_real": 1,
        "num_feat_static_real": 1,
        "num_feat_static_cat": 1,
        "cardinality": [3],
        "hidden_size": 12,
        "num_layers": 2,
        "num_heads": 2,
        "lags_seq": LAGS,
        "copula_rank": 2,
        "mode": "sequential",
        "naive_offset": kwargs.get("distribution") != "negative_binomial",
        "seasonality": SEASON,
        **kwargs,
    }
    return ParaRNNForecastModel(**options).double().eval()


def make_batch(model: ParaRNNForecastModel, batch: int = BATCH, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    features = model.num_time_features
    level = torch.tensor([1.0, 30.0, 500.0] * batch, dtype=torch.float64)[:batch, None]
    round_ = torch.round if model.counts_head else torch.clone  # counts for the count head
    return {
        "feat_static_cat": torch.arange(batch)[:, None] % 3,
        "feat_static_real": torch.randn(batch, 1, generator=g, dtype=torch.float64),
        "past_time_feat": torch.randn(batch, model.past_length, features, generator=g, dtype=torch.float64),
        "past_target": round_(level * (1 + torch.rand(batch, model.past_length, generator=g, dtype=torch.float64))),
        "past_observed_values": torch.ones(batch, model.past_length, dtype=torch.float64),
        "future_time_feat": torch.randn(batch, HORIZON, features, generator=g, dtype=torch.float64),
    }


def with_future(model: ParaRNNForecastModel, batch: dict, seed: int = 2) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    size = batch["past_target"].shape[0]
    level = batch["past_target"].mean(1, keepdim=True)
    future = level * (1 + torch.rand(size, HORIZON, generator=g, dtype=torch.float64))
    return {**batch, "future_target": future.round(), "future_observed_values": torch.ones_like(future)}


def copy_of(model: ParaRNNForecastModel, **kwargs) -> ParaRNNForecastModel:
    other = make_model(**kwargs)
    other.load_state_dict(model.state_dict())
    return other


def step_by_step(model: ParaRNNForecastModel, batch: dict) -> tuple[dict, torch.Tensor]:
    """The distribution's args and the copula's correlation from a Python loop over ``cell.step``."""
    inputs, scale = model.sequence_inputs(**batch)
    x = model.input_proj(inputs)
    for layer in model.layers:
        state, outputs = None, []
        for t in range(x.shape[1]):
            state = layer.cell.step(layer.norm(x[:, t]), state)
            outputs.append(layer.cell.output(layer.cell.state_to_tensor(state)))
        x = x + torch.stack(outputs, dim=1)
    features = model.norm(x)
    offset = seasonal_naive(batch, model.past_length) / scale if model.naive_offset else None
    if model.naive_gate is not None:  # the last value's weight, from each horizon step's features
        weight = torch.sigmoid(features[:, CONTEXT:] @ model.naive_gate.weight[0] + model.naive_gate.bias)
        offset = (1 - weight) * offset + weight * batch["past_target"][:, -1:] / scale
    marginals = model.head(features[:, CONTEXT:], scale, offset)
    return marginals.args, model.copula(features[:, CONTEXT - 1]).correlation


def naive_by_loops(target: torch.Tensor, observed: torch.Tensor, index: int, before: int) -> torch.Tensor:
    """``(B,)``: the last observed value at or before ``index``, else the last at or before ``before``, else 0."""
    out = []
    for b in range(target.shape[0]):
        seen = [i for i in range(index + 1) if observed[b, i]] or [i for i in range(before + 1) if observed[b, i]]
        out.append(target[b, seen[-1]].item() if seen else 0.0)
    return torch.tensor(out, dtype=torch.float64)


def seasonal_naive(batch: dict, past: int) -> torch.Tensor:
    """``(B, H)``: for each horizon step the latest past value of the same season; where it is missing the last
    observed value before it, and where there is none that early the last observed value (0 if none)."""
    target = batch["past_target"][:, -past:]
    observed = batch.get("past_observed_values", torch.ones_like(target))[:, -past:]
    columns = []
    for k in range(1, HORIZON + 1):
        same_season = [i for i in range(past) if (past - 1 + k - i) % SEASON == 0]
        columns.append(naive_by_loops(target, observed, max(same_season), past - 1))
    return torch.stack(columns, dim=1)


# ---- (a) the parallel solve equals the step-by-step recurrence ----------------------------------
@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("distribution", ["student_t", "negative_binomial", "quantile"])
def test_parallel_forward_equals_step_by_step(cell, distribution):
    parallel = make_model(cell=cell, distribution=distribution, mode="parallel")
    sequential = copy_of(parallel, cell=cell, distribution=distribution, mode="sequential")
    batch = make_batch(parallel)
    with torch.no_grad():
        marginals, copula = parallel.distribution(**batch)
        for layer in parallel.layers:
            stats_ = layer.cell.last_stats
            assert stats_.mode == "parallel" and stats_.converged and not stats_.fell_back
        seq_marginals, seq_copula = sequential.distribution(**batch)
        ref_args, ref_correlation = step_by_step(parallel, batch)
    assert marginals.batch_shape == (BATCH, HORIZON)
    for name, reference in ref_args.items():
        torch.testing.assert_close(marginals.args[name], reference, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(seq_marginals.args[name], reference, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(copula.correlation, ref_correlation, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(seq_copula.correlation, ref_correlation, rtol=1e-12, atol=1e-12)


def test_sequence_inputs_match_a_brute_force_construction():
    model = make_model()
    batch = make_batch(model)
    batch["past_observed_values"][0, [0, 4, PAST - 2]] = 0  # missing values, also inside the context
    batch["past_target"][0, [0, 4, PAST - 2]] = 0
    inputs, scale = model.sequence_inputs(**batch)
    target, observed = batch["past_target"], batch["past_observed_values"]
    L, F_ = len(LAGS), model.num_time_features
    for b in range(BATCH):
        context = [(target[b, t].abs().item(), observed[b, t].item()) for t in range(PAST - CONTEXT, PAST)]
        expected_scale = sum(v * o for v, o in context) / sum(o for _, o in context)
        assert scale[b, 0].item() == pytest.approx(expected_scale, rel=1e-12)
        for j in range(CONTEXT + HORIZON):
            position = PAST - CONTEXT + j
            for i, lag in enumerate(LAGS):
                source = position - lag
                known = source < PAST and observed[b, source].item() == 1
                value = target[b, source].item() / expected_scale if known else 0.0
                assert inputs[b, j, i].item() == pytest.approx(value, rel=1e-12)
                assert inputs[b, j, L + i].item() == float(known)
            time_feat = (
                batch["past_time_feat"][b, position] if j < CONTEXT else batch["future_time_feat"][b, j - CONTEXT]
            )
            torch.testing.assert_close(inputs[b, j, 2 * L : 2 * L + F_], time_feat)
            assert inputs[b, j, -2].item() == pytest.approx(math.log(expected_scale), rel=1e-12)
            assert inputs[b, j, -1].item() == float(j >= CONTEXT)


# ---- (b) gradients ------------------------------------------------------------------------------
@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("distribution", ["student_t", "normal", "johnson_su", "negative_binomial", "quantile"])
def test_gradient_reaches_every_parameter(cell, distribution):
    model = make_model(cell=cell, distribution=distribution).train()
    loss = model.loss(**with_future(model, make_batch(model)))
    assert loss.shape == (BATCH,) and torch.isfinite(loss).all()
    loss.sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


# ---- (c) missing values, (d) short series -------------------------------------------------------
FUTURE_ONLY = ("future_target", "future_observed_values")


def forecast_inputs(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k not in FUTURE_ONLY}


def run(model: ParaRNNForecastModel, batch: dict) -> tuple[torch.Tensor, torch.Tensor, dict]:
    with torch.no_grad():
        torch.manual_seed(5)
        samples = model(**forecast_inputs(batch), num_parallel_samples=7)
        torch.manual_seed(6)
        loss = model.loss(**batch)
        marginals, _ = model.distribution(**forecast_inputs(batch))
    return samples, loss, marginals.args


@pytest.mark.parametrize("distribution", ["student_t", "negative_binomial"])
def test_unobserved_values_change_nothing(distribution):
    model = make_model(distribution=distribution)
    batch = with_future(model, make_batch(model))
    hidden = [0, 3, PAST - CONTEXT + 1, PAST - 1]  # lag-only part, context, last step
    batch["past_observed_values"][1, hidden] = 0
    batch["future_observed_values"][2, [0, 2]] = 0
    samples, loss, args = run(model, batch)
    changed = {k: v.clone() for k, v in batch.items()}
    changed["past_target"][1, hidden] = torch.tensor([1e6, float("nan"), -7.0, float("inf")], dtype=torch.float64)
    changed["future_target"][2, [0, 2]] = torch.tensor([float("nan"), 1e9], dtype=torch.float64)
    samples2, loss2, args2 = run(model, changed)
    assert torch.isfinite(samples).all() and torch.isfinite(loss).all()
    torch.testing.assert_close(samples2, samples, rtol=0, atol=0)
    torch.testing.assert_close(loss2, loss, rtol=0, atol=0)
    for name in args:
        torch.testing.assert_close(args2[name], args[name], rtol=0, atol=0)
    # and the observed values do matter
    moved = {k: v.clone() for k, v in batch.items()}
    moved["past_target"][1, PAST - 2] *= 3
    assert not torch.equal(run(model, moved)[1][1], loss[1])


def test_short_series_left_padded_works():
    model = make_model()
    batch = with_future(model, make_batch(model))
    batch["past_target"][0, :-3] = 0  # three observed values
    batch["past_observed_values"][0, :-3] = 0
    batch["past_target"][1] = 0  # nothing observed: default scale
    batch["past_observed_values"][1] = 0
    loss = model.loss(**batch)
    assert torch.isfinite(loss).all()
    loss.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    inputs, scale = model.sequence_inputs(**forecast_inputs(batch))
    assert scale[0, 0].item() == pytest.approx(batch["past_target"][0, -3:].abs().mean().item(), rel=1e-12)
    assert scale[1, 0].item() == model.default_scale
    with torch.no_grad():
        assert torch.isfinite(model(**forecast_inputs(batch), num_parallel_samples=5)).all()


# ---- (e) the copula -----------------------------------------------------------------------------
@pytest.mark.parametrize("distribution", ["student_t", "johnson_su", "negative_binomial", "quantile"])
def test_context_loss_scores_each_observed_context_step_on_its_own_value(distribution):
    model = make_model(distribution=distribution, context_loss_weight=0.5)
    batch = with_future(model, make_batch(model))
    batch["past_observed_values"][1, -2] = 0  # a missing context value (and an input lag) drops out
    batch["past_target"][1, -2] = float("nan")
    torch.manual_seed(3)  # the count head's copula term draws randomised PITs
    terms = model.loss_terms(**batch)
    with torch.no_grad():
        inputs, scale = model.sequence_inputs(**forecast_inputs(batch))
        features = model.encode(inputs)
    target, observed = batch["past_target"][:, -PAST:], batch["past_observed_values"][:, -PAST:]
    expected = torch.zeros(BATCH, dtype=torch.float64)
    for b in range(BATCH):
        for j in range(CONTEXT):
            p = PAST - CONTEXT + j  # context step j predicts the past step p
            if not observed[b, p]:
                continue
            offset = target[b, p - SEASON : p - SEASON + 1] / scale[b] if model.naive_offset else None
            marginal = model.head(features[b, j : j + 1], scale[b], offset)
            expected[b] += marginal.loss(target[b, p : p + 1]).sum() / CONTEXT
    torch.testing.assert_close(terms.context.detach(), expected)
    torch.manual_seed(3)
    torch.testing.assert_close(model.loss(**batch), terms.marginal + terms.copula + 0.5 * terms.context)
    longer = {**batch}  # a longer past is cut to its last past_length steps
    for name in ("past_target", "past_observed_values", "past_time_feat"):
        longer[name] = torch.cat([torch.ones_like(batch[name][:, :3]), batch[name]], dim=1)
    torch.manual_seed(3)
    torch.testing.assert_close(model.loss_terms(**longer).context, terms.context)
    without = copy_of(model, distribution=distribution, context_loss_weight=0.0)
    assert (without.loss_terms(**batch).context == 0).all()
    torch.manual_seed(3)
    torch.testing.assert_close(without.loss(**batch), terms.marginal + terms.copula)


def level_change(target: torch.Tensor, observed: torch.Tensor, end: int) -> torch.Tensor:
    """``(B,)``: mean of the observed values in ``[end - m, end)`` minus that of ``[end - 2m, end - m)``, by loops."""
    out = []
    for b in range(target.shape[0]):
        new = [target[b, i].item() for i in range(end - SEASON, end) if i >= 0 and observed[b, i]]
        old = [target[b, i].item() for i in range(end - 2 * SEASON, end - SEASON) if i >= 0 and observed[b, i]]
        usable = end - 2 * SEASON >= 0 and new and old
        out.append(sum(new) / len(new) - sum(old) / len(old) if usable else 0.0)
    return torch.tensor(out, dtype=torch.float64)


def test_naive_drift_adds_the_last_change_in_level_times_the_seasons_ahead_and_its_weight():
    assert make_model(naive_drift="full").drift_weight.item() == 1
    assert make_model().drift_weight is None  # off by default
    model = make_model(naive_drift="learned", context_loss_weight=1.0, naive_gate=False)
    assert model.drift_weight.item() == 0 and model.drift_weight.requires_grad  # untrained: no drift
    with torch.no_grad():
        model.drift_weight.fill_(0.7)
    batch = with_future(model, make_batch(model))
    target, observed = batch["past_target"], batch["past_observed_values"]
    target[0, [PAST - 5, PAST - 4]], observed[0, [PAST - 5, PAST - 4]] = float("nan"), 0  # gaps in a window
    target[1, PAST - 6 : PAST - 3], observed[1, PAST - 6 : PAST - 3] = float("nan"), 0  # a whole window missing
    target[2, PAST - 3 :] += 200.0  # a jump in level: the drift matters
    with torch.no_grad():
        marginals, _ = model.distribution(**forecast_inputs(batch))
        inputs, scale = model.sequence_inputs(**forecast_inputs(batch))
        features = model.encode(inputs)
        terms = model.loss_terms(**batch)
    drift = level_change(target, observed, PAST)
    assert drift[1] == 0 and drift[2] > 100
    seasons = torch.ceil(torch.arange(1, HORIZON + 1, dtype=torch.float64) / SEASON)
    offset = (seasonal_naive(batch, PAST) + 0.7 * seasons * drift[:, None]) / scale
    for name, value in model.head(features[:, CONTEXT:], scale, offset).args.items():
        torch.testing.assert_close(marginals.args[name], value)
    expected = torch.zeros(BATCH, dtype=torch.float64)  # the context steps' offsets drift the same way
    known = torch.where(observed > 0, target, 0)
    for j in range(CONTEXT):
        p = PAST - CONTEXT + j  # a missing naive value falls back to the last observed one before it
        naive = naive_by_loops(target, observed, p - SEASON, p - 1)
        context_offset = (naive + 0.7 * level_change(target, observed, p))[:, None] / scale
        marginal = model.head(features[:, j : j + 1], scale, context_offset)
        expected += torch.where(observed[:, p] > 0, marginal.loss(known[:, p : p + 1]).sum(-1), 0) / CONTEXT
    torch.testing.assert_close(terms.context, expected)
    with pytest.raises(ValueError, match="naive_drift='full' .* needs naive_offset=True"):
        make_model(naive_drift="full", naive_offset=False)
    with pytest.raises(ValueError, match="naive_drift='linear' is not one of"):
        make_model(naive_drift="linear")


def last_observed_before(target: torch.Tensor, observed: torch.Tensor, end: int) -> torch.Tensor:
    """``(B,)``: the latest observed value before ``end``, by loops; 0 where there is none."""
    out = []
    for b in range(target.shape[0]):
        seen = [target[b, i].item() for i in range(end) if observed[b, i]]
        out.append(seen[-1] if seen else 0.0)
    return torch.tensor(out, dtype=torch.float64)


def test_naive_gate_mixes_the_drifted_naive_offset_with_the_last_observed_value_on_horizon_steps():
    assert make_model().naive_gate is not None  # on by default with the naive offset, off without it
    assert make_model(naive_offset=False).naive_gate is None and make_model(naive_gate=False).naive_gate is None
    model = make_model(naive_drift="full", naive_gate=True, context_loss_weight=1.0)
    gate = model.naive_gate
    assert (gate.weight == 0).all() and 0 < torch.sigmoid(gate.bias).item() < 0.003  # untrained: naive offset
    with torch.no_grad():  # a gate that differs per series and step
        gate.weight.copy_(torch.randn(gate.weight.shape, generator=torch.Generator().manual_seed(5)))
        gate.bias.fill_(0.3)
    batch = with_future(model, make_batch(model))
    target, observed = batch["past_target"], batch["past_observed_values"]
    target[0, PAST - 2 :], observed[0, PAST - 2 :] = float("nan"), 0  # the last value is 3 steps back
    target[1, : PAST - 3 : 2], observed[1, : PAST - 3 : 2] = float("nan"), 0  # gaps inside the context
    target[2, PAST - 3 :] -= 400.0  # a fall in level: naive and last value differ
    with torch.no_grad():
        marginals, _ = model.distribution(**forecast_inputs(batch))
        inputs, scale = model.sequence_inputs(**forecast_inputs(batch))
        features = model.encode(inputs)
        terms = model.loss_terms(**batch)
        drifted = make_model(naive_drift="full", context_loss_weight=1.0, naive_gate=False)
        drifted.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("naive_gate.")})
        without_gate = drifted.loss_terms(**batch)
    weight = torch.sigmoid(features[:, CONTEXT:] @ gate.weight[0] + gate.bias)  # (B, H)
    assert weight.std() > 0.05
    seasons = torch.ceil(torch.arange(1, HORIZON + 1, dtype=torch.float64) / SEASON)
    naive = seasonal_naive(batch, PAST) + seasons * level_change(target, observed, PAST)[:, None]
    last = last_observed_before(target, observed, PAST)[:, None]
    assert last[0, 0] == target[0, PAST - 3]
    offset = ((1 - weight) * naive + weight * last) / scale
    for name, value in model.head(features[:, CONTEXT:], scale, offset).args.items():
        torch.testing.assert_close(marginals.args[name], value)
    torch.testing.assert_close(terms.context, without_gate.context)  # the context steps keep the naive offset
    model.loss(**batch).sum().backward()
    assert gate.weight.grad.abs().sum() > 0 and gate.bias.grad.abs() > 0
    with pytest.raises(ValueError, match="naive_gate=True .* needs naive_offset=True"):
        make_model(naive_gate=True, naive_offset=False)


def last_season_mean(target: torch.Tensor, observed: torch.Tensor, end: int) -> torch.Tensor:
    """``(B,)``: the mean of the observed values in ``[end - m, end)``, by loops; the last value where none."""
    last = last_observed_before(target, observed, end)
    out = []
    for b in range(target.shape[0]):
        seen = [target[b, i].item() for i in range(end - SEASON, end) if observed[b, i]]
        out.append(sum(seen) / len(seen) if seen else last[b].item())
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("terms", [["last", "level"], ["level"], ("level", "last")])
def test_naive_gate_with_the_level_mixes_in_the_last_seasons_mean_by_a_softmax(terms):
    model = make_model(naive_gate=terms, context_loss_weight=1.0)
    gate = model.naive_gate
    assert model.gate_terms == tuple(terms) and gate.out_features == len(terms)
    assert (gate.weight == 0).all() and (gate.bias == -6).all()
    with torch.no_grad():
        gate.weight.copy_(torch.randn(gate.weight.shape, generator=torch.Generator().manual_seed(7)))
        gate.bias.copy_(torch.linspace(-0.5, 0.5, len(terms)))
    batch = with_future(model, make_batch(model))
    target, observed = batch["past_target"], batch["past_observed_values"]
    target[0, PAST - SEASON :], observed[0, PAST - SEASON :] = float("nan"), 0  # no value in the last season
    target[1, PAST - 2], observed[1, PAST - 2] = float("nan"), 0  # a gap inside it
    target[2, PAST - 1] += 900.0  # a spike: last value, level and naive all differ
    with torch.no_grad():
        marginals, _ = model.distribution(**forecast_inputs(batch))
        inputs, scale = model.sequence_inputs(**forecast_inputs(batch))
        features = model.encode(inputs)
    values = {
        "last": last_observed_before(target, observed, PAST),
        "level": last_season_mean(target, observed, PAST),
    }
    assert values["level"][0] == values["last"][0] == target[0, PAST - SEASON - 1]
    assert values["level"][1] == (target[1, PAST - 3] + target[1, PAST - 1]) / 2
    weight, bias = gate.weight.detach(), gate.bias.detach()
    logits = [features[:, CONTEXT:] @ weight[j] + bias[j] for j in range(len(terms))]  # (B, H) each
    total = 1 + sum(torch.exp(z) for z in logits)
    offset = seasonal_naive(batch, PAST) / total
    for term, z in zip(terms, logits, strict=True):
        offset = offset + torch.exp(z) / total * values[term][:, None]
    assert min(float((torch.exp(z) / total).std()) for z in logits) > 0.02  # the weights vary by series and step
    for name, value in model.head(features[:, CONTEXT:], scale, offset / scale).args.items():
        torch.testing.assert_close(marginals.args[name], value)
    model.loss(**batch).sum().backward()
    assert (gate.weight.grad.abs().sum(1) > 0).all() and (gate.bias.grad.abs() > 0).all()


def untrained_head(model: ParaRNNForecastModel) -> ParaRNNForecastModel:
    """``model`` with its head's projection zeroed: the Student-t location is then the naive offset times the scale."""
    with torch.no_grad():
        model.head.proj.weight.zero_()
        model.head.proj.bias.zero_()
    return model


def test_a_missing_seasonal_value_falls_back_to_the_last_observed_value_before_it():
    """Not to 0 (which pulled that step's forecast to 0): the horizon's and the context steps' offsets fill forward."""
    model = untrained_head(make_model(naive_gate=False))
    batch = with_future(model, make_batch(model, batch=4))
    target, observed = batch["past_target"], batch["past_observed_values"]
    # horizon steps k = 1..4 read P-3, P-2, P-1, P-3 (season 3)
    target[0, PAST - 1], observed[0, PAST - 1] = float("nan"), 0  # step 3's value: P-2 instead
    target[1, PAST - 4 : PAST - 2], observed[1, PAST - 4 : PAST - 2] = float("nan"), 0  # steps 1, 4: P-5
    target[2, : PAST - 2], observed[2, : PAST - 2] = float("nan"), 0  # none that early (steps 1, 4): the last, P-1
    target[3], observed[3] = float("nan"), 0  # nothing observed: 0
    with torch.no_grad():
        marginals, _ = model.distribution(**forecast_inputs(batch))
        inputs, scale = model.sequence_inputs(**forecast_inputs(batch))
        terms = model.loss_terms(**batch)
    loc = marginals.args["loc"]
    torch.testing.assert_close(loc, seasonal_naive(batch, PAST))
    assert loc[0, 2] == target[0, PAST - 2] and loc[1, 0] == loc[1, 3] == target[1, PAST - 5]
    assert loc[2, 0] == loc[2, 3] == target[2, PAST - 1] and (loc[3] == 0).all()
    assert (loc[:3] > 0.5).all()  # every series' level (>= 1), not 0
    # the context steps: step p reads p - 3, or its last observed value before p
    expected = torch.zeros(4, dtype=torch.float64)
    df, sigma = 2 + F.softplus(torch.zeros(())), F.softplus(torch.zeros(())) * scale[:, 0]
    for j in range(CONTEXT):
        p = PAST - CONTEXT + j
        naive = naive_by_loops(target, observed, p - SEASON, p - 1)
        nll = -stats.t.logpdf(torch.nan_to_num(target[:, p]).numpy(), df.item(), naive.numpy(), sigma.numpy())
        expected += torch.where(observed[:, p] > 0, torch.from_numpy(nll), 0) / CONTEXT
    assert naive_by_loops(target, observed, PAST - 4, PAST - 2)[1] == target[1, PAST - 5]  # a fallback in there
    torch.testing.assert_close(terms.context, expected)


def test_the_past_reaches_a_season_before_every_context_step_when_the_season_is_longer_than_the_lags():
    """A season of 12 with lags up to 5: the past window grows to C + 12 steps, so the offsets are seasonal."""
    assert make_model(seasonality=12, naive_offset=False).past_length == PAST  # the lags alone
    model = untrained_head(make_model(seasonality=12, naive_gate=False))
    assert model.past_length == CONTEXT + 12
    assert (model.naive_index >= 0).all() and (model.context_naive_index >= 0).all()
    batch = make_batch(model)
    with torch.no_grad():
        marginals, _ = model.distribution(**batch)
    past = model.past_length
    torch.testing.assert_close(marginals.args["loc"], batch["past_target"][:, past - 12 : past - 12 + HORIZON])


def test_the_count_head_refuses_training_targets_that_are_not_counts():
    model = make_model(distribution="negative_binomial")
    batch = with_future(model, make_batch(model))
    assert torch.isfinite(model.loss(**batch)).all()  # counts train
    message = "distribution='negative_binomial' is over counts, but {} has 1 observed values that are not non-negative "
    fix = r"integers \(e.g. {}\); use distribution='student_t'"
    for name, value in (("future_target", -3.0), ("past_target", 2.5)):
        bad = {**batch, name: batch[name].clone()}
        bad[name][1, -1] = value
        with pytest.raises(ValueError, match=message.format(name) + fix.format(f"{value:g}")):
            model.loss(**bad)
        assert torch.isfinite(make_model(distribution="student_t").loss(**bad)).all()  # real-valued heads take it
    bad = {**batch, "past_target": batch["past_target"].clone(), "past_observed_values": batch["past_observed_values"]}
    bad["past_target"][1, -1] = 2.5
    with torch.no_grad():
        assert torch.isfinite(model(**forecast_inputs(bad), num_parallel_samples=3)).all()  # forecasting: not checked
    bad["past_observed_values"] = bad["past_observed_values"].clone()
    bad["past_observed_values"][1, -1] = 0  # unobserved: ignored
    assert torch.isfinite(model.loss(**bad)).all()
    bad["past_target"][0, 0] = float("inf")  # still the finiteness error
    with pytest.raises(ValueError, match="past_target has inf or NaN at observed steps"):
        model.loss(**bad)


def test_a_covariate_count_other_than_the_trained_one_is_named_in_feat_dynamic_real():
    model = make_model()  # 3 calendar features of "D", the age and 1 dynamic real
    batch = make_batch(model)
    fewer = {
        **batch,
        "past_time_feat": batch["past_time_feat"][..., :-1],
        "future_time_feat": batch["future_time_feat"][..., :-1],
    }
    with pytest.raises(
        ValueError,
        match=r"past_time_feat has 4 features per step, the network reads 5: the model was trained with "
        r"num_feat_dynamic_real=1 covariates .* besides 3 calendar features of freq='D' and the age; this data has 0",
    ):
        model(**fewer)
    more = {**batch, "future_time_feat": torch.cat([batch["future_time_feat"], batch["future_time_feat"]], -1)}
    with pytest.raises(ValueError, match="future_time_feat has 10 features per step.*this data has 6"):
        model(**more)


@pytest.mark.parametrize("bad", [["mean"], [], ["last", "last"], "level, last"])
def test_naive_gate_rejects_unknown_empty_or_repeated_terms(bad):
    with pytest.raises(ValueError, match="naive_gate=.*a bool or a list of distinct terms from \\('last', 'level'\\)"):
        make_model(naive_gate=bad)


def test_training_logs_the_full_loss_and_validation_the_forecasts_own(monkeypatch):
    module = ForecastTrainingModule()
    module.model = make_model(context_loss_weight=0.5)
    batch = with_future(module.model, make_batch(module.model))
    logged = {}
    monkeypatch.setattr(module, "log", lambda name, value, **_: logged.__setitem__(name, value))
    train, val = module.training_step(batch, 0), module.validation_step(batch, 0)
    terms = module.model.loss_terms(**batch)
    torch.testing.assert_close(train, (terms.marginal + terms.copula + 0.5 * terms.context).mean())
    torch.testing.assert_close(val, (terms.marginal + terms.copula).mean())
    assert logged["train_loss"] is train and logged["val_loss"] is val


def two_series_of_scales_1_and_3(model: ParaRNNForecastModel) -> dict[str, torch.Tensor]:
    """Two series whose context means (the mean scales) are 1 and 3; their lag-only steps differ."""
    batch = make_batch(model, batch=2)
    batch["past_target"][:, -CONTEXT:] = torch.tensor([[1.0], [3.0]], dtype=torch.float64)
    return with_future(model, batch)


def test_scale_weighting_multiplies_each_series_loss_by_its_scale_over_the_batch_mean(monkeypatch):
    uniform = make_model(context_loss_weight=0.5)
    scaled = copy_of(uniform, context_loss_weight=0.5, loss_weighting="scale")
    batch = two_series_of_scales_1_and_3(uniform)
    terms = uniform.loss_terms(**batch)
    torch.testing.assert_close(terms.scale, torch.tensor([1.0, 3.0], dtype=torch.float64))
    # scales 1 and 3, batch mean 2: weights 0.5 and 1.5 on the whole uniform per-series loss, context included
    per_series = terms.marginal + terms.copula + 0.5 * terms.context
    weights = torch.tensor([0.5, 1.5], dtype=torch.float64)
    assert not torch.allclose(per_series * weights, per_series)  # the test can tell the two apart
    torch.testing.assert_close(scaled.loss(**batch), weights * per_series)
    # the training step averages the weighted losses over the batch; validation stays unweighted
    module = ForecastTrainingModule()
    module.model = scaled
    monkeypatch.setattr(module, "log", lambda *_, **__: None)
    torch.testing.assert_close(module.training_step(batch, 0), (weights * per_series).mean())
    torch.testing.assert_close(module.validation_step(batch, 0), (terms.marginal + terms.copula).mean())
    # the weights are constants: no gradient flows through the scale into past_target
    past_target = batch["past_target"].clone().requires_grad_()
    (got,) = torch.autograd.grad(scaled.loss(**{**batch, "past_target": past_target}).sum(), past_target)
    unweighted = uniform.loss(**{**batch, "past_target": past_target})
    (expected,) = torch.autograd.grad((weights * unweighted).sum(), past_target)
    torch.testing.assert_close(got, expected)


def test_default_loss_weighting_is_uniform_and_unchanged():
    model = make_model(context_loss_weight=0.5)
    assert model.loss_weighting == "uniform"
    batch = with_future(model, make_batch(model))  # scales about 1.5, 45 and 750: weighting would show
    terms = model.loss_terms(**batch)
    assert torch.equal(model.loss(**batch), terms.marginal + terms.copula + 0.5 * terms.context)
    assert torch.equal(
        copy_of(model, context_loss_weight=0.5, loss_weighting="uniform").loss(**batch), model.loss(**batch)
    )
    assert torch.equal(model.loss_weights(terms.scale), torch.ones(BATCH, dtype=torch.float64))
    scaled = copy_of(model, context_loss_weight=0.5, loss_weighting="scale")
    assert not torch.allclose(scaled.loss(**batch), model.loss(**batch))


def test_bad_loss_weighting_raises_naming_it_and_the_choices():
    with pytest.raises(ValueError, match=r"loss_weighting='size' is not one of \('uniform', 'scale'\)"):
        make_model(loss_weighting="size")
    with pytest.raises(ValueError, match="loss_weighting='scale'.*scaling=True"):
        make_model(loss_weighting="scale", scaling=False)


def test_context_step_inputs_never_see_the_value_they_predict():
    model = make_model(scaling=False)  # mean scaling reads the whole context, as in DeepAR
    batch = make_batch(model)
    past_target = batch["past_target"].clone().requires_grad_()
    inputs, _ = model.sequence_inputs(**{**forecast_inputs(batch), "past_target": past_target})
    for j in range(CONTEXT):
        (grad,) = torch.autograd.grad(inputs[:, j].sum(), past_target, retain_graph=True)
        p = PAST - CONTEXT + j
        assert (grad[:, p:] == 0).all() and (grad[:, p - 1] != 0).all()


def test_gaussian_copula_density_matches_scipy():
    g = torch.Generator().manual_seed(0)
    factor = torch.randn(2, HORIZON, 2, generator=g, dtype=torch.float64)
    diag = torch.rand(2, HORIZON, generator=g, dtype=torch.float64) + 0.1
    copula = GaussianCopula.from_unnormalised(factor, diag)
    cov = factor @ factor.transpose(-1, -2) + torch.diag_embed(diag)
    sd = cov.diagonal(dim1=-2, dim2=-1).sqrt()
    correlation = cov / sd[..., :, None] / sd[..., None, :]
    torch.testing.assert_close(copula.correlation, correlation)
    u = torch.rand(2, HORIZON, generator=g, dtype=torch.float64)
    z = stats.norm.ppf(u.numpy())
    expected = [
        stats.multivariate_normal(cov=correlation[b].numpy()).logpdf(z[b]) - stats.norm.logpdf(z[b]).sum()
        for b in range(2)
    ]
    torch.testing.assert_close(copula.log_density(u), torch.tensor(expected, dtype=torch.float64))


def set_copula(model: ParaRNNForecastModel, factor: torch.Tensor) -> None:
    with torch.no_grad():
        model.copula.base_factor.copy_(factor)
        model.copula.factor_proj.weight.zero_()


def sample_paths(model: ParaRNNForecastModel, batch: dict, num_samples: int) -> torch.Tensor:
    with torch.no_grad():
        torch.manual_seed(7)
        return model(**forecast_inputs(batch), num_parallel_samples=num_samples)


def spearman(samples: np.ndarray) -> np.ndarray:
    return stats.spearmanr(samples).statistic


def test_copula_with_zero_factor_gives_independent_steps():
    model = make_model()
    set_copula(model, torch.zeros(HORIZON, 2))
    paths = sample_paths(model, make_batch(model), 4000)
    for b in range(BATCH):
        off_diagonal = np.corrcoef(paths[b].numpy().T)[~np.eye(HORIZON, dtype=bool)]
        assert np.abs(off_diagonal).max() < 5 / math.sqrt(4000)


def test_copula_rank_correlation_matches_R_and_marginals_are_unchanged():
    model = make_model()
    factor = torch.tensor([[2.0, 0.0], [1.5, 0.5], [0.0, 2.0], [-1.0, 1.0]], dtype=torch.float64)
    set_copula(model, factor)
    batch = make_batch(model)
    num_samples = 6000
    paths = sample_paths(model, batch, num_samples)
    d = F.softplus(model.copula.diag_raw.detach())
    cov = factor @ factor.T + torch.diag(d)
    R = cov / torch.outer(cov.diagonal().sqrt(), cov.diagonal().sqrt())
    expected_rank_corr = 6 / math.pi * torch.arcsin(R / 2)  # Spearman's rho of a Gaussian copula
    marginals, copula = model.distribution(**forecast_inputs(batch))
    df, loc, scale = (marginals.args[k].detach().numpy() for k in ("df", "loc", "scale"))
    for b in range(BATCH):
        torch.testing.assert_close(copula.correlation[b].detach(), R, rtol=1e-6, atol=1e-6)
        rho = spearman(paths[b].numpy())
        assert np.abs(rho - expected_rank_corr.numpy()).max() < 5 / math.sqrt(num_samples)
        for k in range(HORIZON):  # each step's values follow the marginal (KS at the 0.1 % level)
            u = stats.t.cdf(paths[b, :, k].numpy(), df[b, k], loc[b, k], scale[b, k])
            assert stats.kstest(u, "uniform").statistic < 1.95 / math.sqrt(num_samples)


def test_copula_loss_leaves_marginal_parameters_alone():
    model = make_model().train()
    with torch.no_grad():  # a non-zero per-series part, so the state at the forecast start matters
        model.copula.factor_proj.weight.normal_(std=0.1)
    terms = model.loss_terms(**with_future(model, make_batch(model)))
    assert (terms.copula != 0).all()
    copula_params = {id(p) for p in model.copula.parameters()}
    others = [p for p in model.parameters() if id(p) not in copula_params]
    grads = torch.autograd.grad(terms.copula.sum(), others, allow_unused=True, retain_graph=True)
    assert all(g is None or (g == 0).all() for g in grads)
    grads = torch.autograd.grad(terms.copula.sum(), list(model.copula.parameters()))
    assert all(g.abs().sum() > 0 for g in grads)
    grads = torch.autograd.grad(terms.marginal.sum(), list(model.copula.parameters()), allow_unused=True)
    assert all(g is None for g in grads)


@pytest.mark.parametrize("copula_rank", [2, 0])
@pytest.mark.parametrize("distribution", ["student_t", "johnson_su", "negative_binomial", "quantile"])
def test_quantile_grid_samples_are_exact_quantiles_in_the_copulas_order(distribution, copula_rank):
    grid = make_model(distribution=distribution, copula_rank=copula_rank)
    if copula_rank:
        set_copula(grid, torch.tensor([[2.0, 0.0], [1.5, 0.5], [0.0, 2.0], [-1.0, 1.0]], dtype=torch.float64))
    random = copy_of(grid, distribution=distribution, copula_rank=copula_rank, quantile_grid_samples=False)
    batch, num_samples = make_batch(grid), 50
    paths, draws = sample_paths(grid, batch, num_samples), sample_paths(random, batch, num_samples)
    with torch.no_grad():
        marginals, _ = grid.distribution(**forecast_inputs(batch))
        levels = (torch.arange(num_samples, dtype=torch.float64) + 0.5) / num_samples
        quantiles = marginals.icdf(levels[:, None, None].expand(-1, BATCH, HORIZON)).permute(1, 0, 2)
    torch.testing.assert_close(paths.sort(dim=1).values, quantiles)

    # same seed, same z: both are increasing in z_k, so no two paths are in opposite orders in the two
    def order(x: torch.Tensor) -> torch.Tensor:  # (B, S, H) → (B, S, S, H) signs of the pairwise differences
        return torch.sign(x[:, :, None] - x[:, None])

    assert not (order(paths) * order(draws) < 0).any()
    assert (order(paths) != 0).float().mean() > 0.5  # and the grid does order most pairs


@pytest.mark.parametrize("quantile_grid_samples", [True, False])
def test_nonnegative_pred_samples_clip_the_same_paths_at_zero(quantile_grid_samples):
    plain = make_model(quantile_grid_samples=quantile_grid_samples)
    with torch.no_grad():
        plain.head.proj.bias.fill_(-3.0)  # locations far below the data: many samples fall below zero
    clipped = copy_of(plain, quantile_grid_samples=quantile_grid_samples, nonnegative_pred_samples=True)
    batch = make_batch(plain)
    paths, kept = sample_paths(plain, batch, 40), sample_paths(clipped, batch, 40)
    assert (paths < 0).any() and (kept >= 0).all()
    torch.testing.assert_close(kept, paths.clamp_min(0), rtol=0, atol=0)


def test_copula_skipped_for_incomplete_horizons_and_rank_zero():
    model = make_model()
    batch = with_future(model, make_batch(model))
    batch["future_observed_values"][0, 1] = 0
    terms = model.loss_terms(**batch)
    assert terms.copula[0] == 0 and (terms.copula[1:] != 0).all()
    independent = make_model(copula_rank=0)
    assert independent.copula is None
    assert independent.distribution(**forecast_inputs(batch))[1] is None
    assert (independent.loss_terms(**batch).copula == 0).all()
    assert sample_paths(independent, batch, 3).shape == (BATCH, 3, HORIZON)


def test_low_rank_copula_module_interface():
    copula = LowRankGaussianCopula(HORIZON, 3).double()
    z = copula.sample(5, batch=2)
    assert z.shape == (5, 2, HORIZON)
    assert copula.loss(torch.rand(2, HORIZON, dtype=torch.float64)).shape == (2,)
    with pytest.raises(ValueError, match="rank"):
        LowRankGaussianCopula(HORIZON, 0)


# ---- (g) true low (and double) precision --------------------------------------------------------
@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    """What Lightning's true-precision ``forward_context`` does: tensors created without a dtype get ``dtype``."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


@pytest.mark.parametrize("distribution", ["student_t", "quantile"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_true_precision_runs_the_network_in_its_dtype_and_the_head_in_at_least_float32(dtype, distribution):
    """``--trainer.precision bf16-true``/``16-true``/``64-true`` cast the parameters and the batch: the network runs
    in that dtype; the scale, distributions, copula (its Cholesky has no bfloat16 kernel), losses and samples in
    float32 (float64 stays float64), close to a float64 run of the same weights; every gradient is finite."""
    reference = make_model(distribution=distribution, naive_drift="learned")  # float64
    batch = with_future(reference, make_batch(reference))
    model = copy.deepcopy(reference).to(dtype)
    cast = {k: v.to(dtype) if v.is_floating_point() else v for k, v in batch.items()}
    head = torch.float64 if dtype == torch.float64 else torch.float32
    with default_dtype(dtype):
        inputs, scale = model.sequence_inputs(**forecast_inputs(cast))
        features = model.encode(inputs)
        terms = model.loss_terms(**cast)
        loss = model.training_loss(terms)
        loss.mean().backward()
        paths = sample_paths(model, cast, 5)
    assert model.head_dtype == head and (inputs.dtype, features.dtype) == (dtype, dtype) and scale.dtype == head
    assert [term.dtype for term in terms] == [head] * 4 and paths.dtype == head
    assert (terms.copula != 0).all() and torch.isfinite(loss).all() and torch.isfinite(paths).all()
    for name, parameter in model.named_parameters():
        assert parameter.grad.dtype == dtype and torch.isfinite(parameter.grad).all(), name
    expected = reference.training_loss(reference.loss_terms(**batch)).detach()
    torch.testing.assert_close(loss.detach().double(), expected, rtol=1e-2, atol=1e-2)


def test_float16_overflow_is_reported_naming_the_precision_option():
    """Data past float16's 65504 (cast by ``16-true``), or scaled inputs past it, raise naming ``--trainer.precision``
    and the alternatives instead of a NaN loss."""
    model = make_model().half()
    batch = with_future(model, make_batch(model))
    big = {**batch, "future_target": (batch["future_target"] * 1000).half()}  # up to about 1e6: inf in float16
    with pytest.raises(ValueError, match=r"future_target is float16.*--trainer.precision bf16-true"):
        model.loss_terms(**big)
    past = batch["past_target"].clone()
    past[:, -CONTEXT:], past[:, 0] = 0.5, 60_000.0  # a lag read from before the context: 1.2e5 times the scale
    with pytest.raises(ValueError, match=r"exceed float16.*--trainer.precision bf16-true"):
        model.loss_terms(**{**batch, "past_target": past})


def test_adam_eps_survives_the_parameters_dtype():
    """In float16 (``16-true``) AdamW's default eps 1e-8 is 0, and a zero gradient's step is 0 / 0."""
    assert adam_eps(make_model()) == adam_eps(make_model().bfloat16()) == 1e-8
    eps = adam_eps(make_model().half())
    assert torch.tensor(eps, dtype=torch.float16) > 0 and eps == torch.finfo(torch.float16).tiny


# ---- the GluonTS interface and (f) bad inputs ---------------------------------------------------
def test_describe_inputs_and_dummy_static_features():
    model = make_model(num_feat_static_cat=0, cardinality=[1], num_feat_static_real=0, freq="QE")
    assert model.num_time_features == 1 + 1 + 1  # one calendar feature, age, one dynamic real
    spec = model.describe_inputs(batch_size=2)
    zeros = spec.zeros()
    assert tuple(zeros["past_target"].shape) == (2, model.past_length)
    assert tuple(zeros["feat_static_cat"].shape) == (2, 1) and zeros["feat_static_cat"].dtype == torch.long
    batch = {k: (v.double() if v.is_floating_point() else v) for k, v in zeros.items()}
    assert model(**batch, num_parallel_samples=4).shape == (2, 4, HORIZON)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"prediction_length": 0}, "prediction_length"),
        ({"context_length": 0}, "context_length"),
        ({"context_length": -3}, "context_length"),
        ({"cell": "rnn"}, "cell"),
        ({"distribution": "gamma"}, "distribution"),
        ({"lags_seq": [0, 1]}, "lags_seq"),
        ({"cardinality": [3, 4]}, "cardinality"),
        ({"dropout": 1.0}, "dropout"),
        ({"copula_rank": -1}, "copula_rank"),
        ({"quantiles": [0.1, 0.9]}, "quantiles"),
        ({"context_loss_weight": -1.0}, "context_loss_weight"),
        ({"loss_weighting": "observed"}, "loss_weighting"),
    ],
)
def test_bad_arguments_raise_naming_them(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        make_model(**kwargs)


def test_nan_in_observed_inputs_raises():
    model = make_model()
    batch = with_future(model, make_batch(model))
    bad = {**batch, "past_target": batch["past_target"].clone()}
    bad["past_target"][0, -1] = float("nan")
    with pytest.raises(ValueError, match="past_target"):
        model(**forecast_inputs(bad))
    bad["past_target"][0, -1] = float("inf")  # GluonTS marks NaN missing, not inf: the fix is in the data
    with pytest.raises(ValueError, match="past_target has inf or NaN at observed steps.*replace inf with NaN"):
        model(**forecast_inputs(bad))
    bad = {**batch, "future_target": batch["future_target"].clone()}
    bad["future_target"][1, 0] = float("nan")
    with pytest.raises(ValueError, match="future_target"):
        model.loss(**bad)
    bad = {**batch, "future_time_feat": batch["future_time_feat"].clone()}
    bad["future_time_feat"][0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="time_feat"):
        model(**forecast_inputs(bad))
    with pytest.raises(ValueError, match="past_target"):
        model(**forecast_inputs({**batch, "past_target": batch["past_target"][:, 1:]}))
    with pytest.raises(ValueError, match="num_parallel_samples"):
        model(**forecast_inputs(batch), num_parallel_samples=0)


@pytest.mark.parametrize("patience", [-1, 1.5, True])
def test_plateau_patience_must_be_a_count_of_epochs(patience):
    # torch's ReduceLROnPlateau takes patience=-1 and then halves the learning rate after every epoch
    with pytest.raises(ValueError, match=f"patience must be an int >= 0 .*got {patience!r}"):
        ForecastTrainingModule(patience=patience)
