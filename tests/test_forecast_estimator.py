"""``ParaRNNEstimator``: GluonTS training, prediction, evaluation and serialization on tiny synthetic series."""

from __future__ import annotations

import math
import re
import warnings

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import torch
from gluonts.dataset.split import split
from gluonts.ev.metrics import MASE, MeanWeightedSumQuantileLoss
from gluonts.evaluation import make_evaluation_predictions
from gluonts.model import Predictor, evaluate_model
from gluonts.time_feature import time_features_from_frequency_str
from torch.utils.data import DataLoader

from pararnn_ts.forecast.estimator import PREDICTION_INPUT_NAMES, ParaRNNEstimator, ParaRNNSampleForecastGenerator
from pararnn_ts.forecast.lightning_module import ParaRNNLightningModule

H = 4
FREQ = "M"
TINY = {"hidden_size": 8, "num_layers": 1, "num_parallel_samples": 16, "batch_size": 4, "mode": "sequential"}
QUIET = {"enable_progress_bar": False, "enable_model_summary": False, "logger": False}


def sine_series(lengths=(60, 72, 50, 6), seed: int = 0) -> list[dict]:
    """Monthly sines with a NaN gap in each; the last series is shorter than the context."""
    rng = np.random.default_rng(seed)
    entries = []
    for i, length in enumerate(lengths):
        t = np.arange(length)
        target = 10 + 5 * np.sin(2 * np.pi * t / 12 + i) + rng.normal(0, 0.3, length)
        target[length // 3 : length // 3 + 2] = np.nan
        start = pd.Period("2000-01", freq=FREQ)
        entries.append({"start": start, "target": target.astype(np.float32), "item_id": f"s{i}"})
    return entries


def make_estimator(
    tmp_path, max_epochs: int = 1, num_batches_per_epoch: int = 2, callbacks=(), trainer_kwargs=None, **kwargs
) -> ParaRNNEstimator:
    trainer = {"max_epochs": max_epochs, "default_root_dir": str(tmp_path), "callbacks": list(callbacks), **QUIET}
    trainer.update(trainer_kwargs or {})
    return ParaRNNEstimator(
        FREQ, H, **{**TINY, "num_batches_per_epoch": num_batches_per_epoch, "trainer_kwargs": trainer, **kwargs}
    )


def test_train_predict_and_evaluate(tmp_path):
    data = sine_series()
    train = [{**entry, "target": entry["target"][:-H]} for entry in data]
    pl.seed_everything(0)
    output = make_estimator(tmp_path).train_model(train, validation_data=data)
    assert output.trainer.global_step == 2
    assert {"train_loss", "val_loss"} <= set(output.trainer.callback_metrics)
    assert all(math.isfinite(output.trainer.callback_metrics[key]) for key in ("train_loss", "val_loss"))

    forecasts, series = make_evaluation_predictions(data, output.predictor, num_samples=32)
    forecasts = list(forecasts)
    assert len(forecasts) == len(data) and len(list(series)) == len(data)
    for forecast, entry in zip(forecasts, data, strict=True):
        assert forecast.samples.shape == (32, H)
        assert np.isfinite(forecast.samples).all()
        assert forecast.start_date == entry["start"] + len(entry["target"]) - H
        assert forecast.item_id == entry["item_id"]

    _, template = split(data, offset=-H)
    metrics = evaluate_model(
        output.predictor,
        test_data=template.generate_instances(H),
        metrics=[MASE(), MeanWeightedSumQuantileLoss(quantile_levels=[0.1, 0.5, 0.9])],
        seasonality=12,
    )
    assert np.isfinite(metrics.to_numpy()).all()


def month_of_year(index: pd.PeriodIndex) -> np.ndarray:
    """GluonTS's month-of-year feature, in [-0.5, 0.5]."""
    return (index.month - 1) / 11.0 - 0.5


@pytest.mark.parametrize("covariates", [False, True], ids=["plain", "covariates"])
def test_prediction_window_matches_a_hand_built_one(covariates):
    """The last past_length steps of a series as the network reads them, built here by hand."""
    length = 20  # shorter than past_length: left padding
    entry = sine_series([length], seed=3)[0]
    kwargs = {}
    if covariates:
        entry["feat_dynamic_real"] = np.arange(length + H, dtype=np.float32)[None] / 7
        entry["feat_static_cat"] = np.array([2])
        kwargs = {"num_feat_dynamic_real": 1, "num_feat_static_cat": 1, "cardinality": [3]}
    estimator = ParaRNNEstimator(FREQ, H, **TINY, **kwargs)
    module = estimator.create_lightning_module()
    predictor = estimator.create_predictor(estimator.create_transformation(), module, device="cpu")
    (window,) = predictor.input_transform.apply([entry], is_train=False)

    past = module.model.past_length
    assert past > length
    pad = past - length
    expected_target = np.concatenate([np.zeros(pad), np.nan_to_num(entry["target"])])
    expected_observed = np.concatenate([np.zeros(pad), ~np.isnan(entry["target"])])
    np.testing.assert_allclose(window["past_target"], expected_target, rtol=1e-6)
    np.testing.assert_array_equal(window["past_observed_values"], expected_observed)

    dates = pd.period_range(entry["start"], periods=length + H)
    rows = [month_of_year(dates), np.log10(2.0 + np.arange(length + H))]
    if covariates:
        rows.append(entry["feat_dynamic_real"][0])
    time_feat = np.stack(rows, axis=1)  # (T + H, F)
    assert window["past_time_feat"].shape == (past, module.model.num_time_features)
    np.testing.assert_allclose(window["past_time_feat"][pad:], time_feat[:length], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(window["future_time_feat"], time_feat[length:], rtol=1e-5, atol=1e-6)
    assert window["feat_static_cat"].tolist() == ([2] if covariates else [0])
    assert window["feat_static_real"].tolist() == [0.0]
    assert window["forecast_start"] == entry["start"] + length

    (forecast,) = predictor.predict([entry])
    assert forecast.samples.shape == (TINY["num_parallel_samples"], H) and np.isfinite(forecast.samples).all()


def test_predict_num_samples_draws_that_many_paths_in_one_call():
    """``predict(data, num_samples=N)``: N paths on N quantile levels per step. GluonTS's generator repeated the
    network's num_parallel_samples (16) paths and cut them: 16 distinct values per step for N=37, a random part of
    the 16-level grid for N=5."""
    estimator = ParaRNNEstimator(FREQ, H, **TINY)
    module = estimator.create_lightning_module()
    predictor = estimator.create_predictor(estimator.create_transformation(), module, device="cpu")
    entry = sine_series([30])[0]
    (window,) = predictor.input_transform.apply([entry], is_train=False)
    inputs = {name: torch.as_tensor(window[name])[None] for name in PREDICTION_INPUT_NAMES}
    (forecast,) = predictor.predict([entry])
    assert forecast.samples.shape == (TINY["num_parallel_samples"], H)
    for n in (5, 37):
        (forecast,) = predictor.predict([entry], num_samples=n)
        with torch.no_grad():
            grid = module(**inputs, num_parallel_samples=n)[0].sort(0).values  # the quantile grid of n levels
        assert forecast.samples.shape == (n, H)
        np.testing.assert_allclose(np.sort(forecast.samples, 0), grid.numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="num_samples must be a positive int"):
        list(predictor.predict([entry], num_samples=-1))


def forecast_samples(predictor: Predictor, data: list[dict], seed: int) -> np.ndarray:
    """``predictor``'s sample paths of ``data``, ``(series, samples, H)``, drawn after ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    return np.stack([forecast.samples for forecast in predictor.predict(data)])


def reloaded(predictor: Predictor, folder) -> Predictor:
    """``predictor`` serialized into ``folder`` (made here) and deserialized as GluonTS users do."""
    folder.mkdir()
    predictor.serialize(folder)
    return Predictor.deserialize(folder)


def test_serialized_predictor_gives_identical_forecasts(tmp_path):
    data = sine_series()
    pl.seed_everything(1)
    predictor = make_estimator(tmp_path / "train", num_batches_per_epoch=1, distribution="normal").train(data)
    loaded = reloaded(predictor, tmp_path / "predictor")
    assert isinstance(loaded.prediction_net, ParaRNNLightningModule)
    assert loaded.prediction_net is not predictor.prediction_net

    original = forecast_samples(predictor, data, seed=5)
    np.testing.assert_array_equal(forecast_samples(loaded, data, seed=5), original)
    assert type(loaded.forecast_generator) is ParaRNNSampleForecastGenerator  # predict(num_samples=N) still draws N
    assert not np.array_equal(forecast_samples(loaded, data, seed=6), original)  # the seed decides the draws


@pytest.mark.parametrize("precision, dtype", [("bf16-true", torch.bfloat16), ("64-true", torch.float64)])
def test_reloaded_predictor_keeps_the_networks_dtype(tmp_path, precision, dtype):
    """GluonTS rebuilds a serialized network in float32: the reloaded one must run in the dtype it was trained in."""
    data = sine_series()
    estimator = make_estimator(tmp_path / "train", num_batches_per_epoch=1, trainer_kwargs={"precision": precision})
    predictor = estimator.train(data)
    loaded = reloaded(predictor, tmp_path / "predictor")
    for net in (predictor.prediction_net, loaded.prediction_net):
        assert {p.dtype for p in net.parameters()} == {dtype}
    saved = predictor.prediction_net.state_dict()
    for name, got in loaded.prediction_net.state_dict().items():
        assert torch.equal(got, saved[name]), name
    np.testing.assert_array_equal(forecast_samples(loaded, data, seed=5), forecast_samples(predictor, data, seed=5))


def test_cosine_schedule_follows_the_closed_form(tmp_path):
    steps, lr = 4, 0.01
    seen = []

    class RecordLR(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(trainer.optimizers[0].param_groups[0]["lr"])

    estimator = make_estimator(tmp_path, max_epochs=2, callbacks=[RecordLR()], lr=lr, lr_schedule="cosine")
    estimator.train(sine_series())
    assert seen == pytest.approx([lr * (1 + math.cos(math.pi * k / steps)) / 2 for k in range(steps)])


def test_ema_weights_average_every_step_and_forecast_after_training(tmp_path):
    decay, snapshots = 0.6, []

    class RecordWeights(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            snapshots.append([p.detach().clone() for p in pl_module.model.parameters()])

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            snapshots.append([p.detach().clone() for p in pl_module.model.parameters()])

    # 6 batches, gradients accumulated over 2: 3 optimizer steps, and the weights change only at the 2nd, 4th, 6th.
    estimator = make_estimator(
        tmp_path,
        max_epochs=1,
        num_batches_per_epoch=6,
        callbacks=[RecordWeights()],
        ema_decay=decay,
        trainer_kwargs={"accumulate_grad_batches": 2},
    )
    predictor = estimator.train(sine_series())
    module = predictor.prediction_net
    snapshots = snapshots[:1] + snapshots[2::2]
    assert len(snapshots) == 4  # the initial weights and those after each of the 3 steps
    # Adam-style bias correction: a zero-started average over the trained weights, over its total weight
    total = 1 - decay ** len(snapshots[1:])
    expected = [torch.zeros_like(p) for p in snapshots[0]]
    for step in snapshots[1:]:
        expected = [decay * average + (1 - decay) * current for average, current in zip(expected, step, strict=True)]
    expected = [average / total for average in expected]
    averaged = list(module.averaged.parameters())
    assert len(averaged) == len(expected)
    for got, want in zip(averaged, expected, strict=True):
        torch.testing.assert_close(got, want)
    assert any(not torch.equal(got, now) for got, now in zip(averaged, snapshots[-1], strict=True))

    # Out of training mode the module runs the average: the forecast equals the averaged network's own.
    module.eval()
    inputs = first_prediction_batch(estimator, module)
    torch.manual_seed(3)
    from_module = module(**inputs)
    torch.manual_seed(3)
    torch.testing.assert_close(from_module, module.averaged(**inputs))
    torch.manual_seed(3)
    assert not torch.allclose(from_module, module.model(**inputs))

    # Serialization keeps both networks.
    predictor.serialize(tmp_path)
    loaded = Predictor.deserialize(tmp_path).prediction_net
    assert loaded.ema_decay == decay
    for got, want in zip(loaded.state_dict().values(), module.state_dict().values(), strict=True):
        torch.testing.assert_close(got, want)


def first_prediction_batch(estimator: ParaRNNEstimator, module: ParaRNNLightningModule) -> dict[str, torch.Tensor]:
    """The network's inputs for the series of :func:`sine_series`, cut as the predictor cuts them."""
    transform = estimator.create_transformation() + estimator._create_instance_splitter(module, "test")
    entries = list(transform.apply(sine_series(), is_train=False))
    return {name: torch.as_tensor(np.stack([entry[name] for entry in entries])) for name in PREDICTION_INPUT_NAMES}


def test_training_loader_has_a_length_and_continues_across_epochs():
    estimator = ParaRNNEstimator(FREQ, H, **TINY, num_batches_per_epoch=3)
    module = estimator.create_lightning_module()
    data = estimator.create_transformation().apply(sine_series(), is_train=True)
    loader = estimator.create_training_data_loader(data, module)
    first, second = list(loader), list(loader)
    assert len(loader) == 3 and len(first) == 3 and len(second) == 3
    batch = first[0]
    assert batch["past_target"].shape == (TINY["batch_size"], module.model.past_length)
    assert batch["future_target"].shape == (TINY["batch_size"], H)
    # A cyclic stream: the second epoch goes on with the next windows instead of repeating the first.
    assert not torch.equal(first[0]["past_target"], second[0]["past_target"])


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"prediction_length": 0}, "prediction_length"),
        ({"freq": "fortnightly"}, "freq"),
        ({"context_length": 0}, "context_length"),
        ({"distribution": "gamma"}, "distribution"),
        ({"cell": "foo"}, r"cell='foo' is not one of \('gru', 'lstm'\)"),
        ({"mode": "fast"}, r"mode='fast' is not one of"),
        ({"quantiles": [0.1, 0.9]}, "quantiles"),
        ({"num_feat_static_cat": 1}, "cardinality"),
        ({"num_feat_dynamic_real": -1}, "num_feat_dynamic_real"),
        ({"batch_size": 0}, "batch_size"),
        ({"lr_schedule": "step"}, "lr_schedule"),
        ({"dropout": 1.0}, "dropout"),
        ({"lags_seq": [0, 1]}, "lags_seq"),
        ({"loss_weighting": "size"}, r"loss_weighting='size' is not one of \('uniform', 'scale'\)"),
        ({"naive_drift": "linear"}, r"naive_drift='linear' is not one of"),
        ({"naive_gate": ["last", "mean"]}, r"ParaRNNEstimator: naive_gate=\['last', 'mean'\]: give a bool or a list"),
        ({"loss_weighting": "scale", "scaling": False}, "loss_weighting='scale'.*scaling"),
        ({"ema_decay": 1.0}, "ema_decay must be None"),
        ({"ema_decay": 0.0}, "ema_decay must be None"),
        (
            {"num_feat_static_cat": 1, "cardinality": [3], "embedding_dimension": [2, 2]},
            r"embedding_dimension must list one positive size per categorical feature \(num_feat_static_cat=1",
        ),
        ({"embedding_dimension": [4]}, r"embedding_dimension must list .* got \[4\]"),  # no categorical feature
        ({"copula_rank": -1}, r"copula_rank must be an int >= 0 \(0: independent horizon steps\), got -1"),
        (
            {"cardinality": [3]},
            r"ParaRNNEstimator: cardinality=\[3\] counts .* num_feat_static_cat=0 uses none: set num_feat_static_cat=1",
        ),
        ({"num_feat_static_cat": 1, "cardinality": [0]}, r"ParaRNNEstimator: cardinality must count .* got \[0\]"),
        (
            {"distribution": "quantile", "quantiles": [0.1, 1.5]},
            r"ParaRNNEstimator: quantiles must be at least 2 strictly increasing levels in \(0, 1\)",
        ),
        (
            {"hidden_size": 10, "num_heads": 3},
            r"ParaRNNEstimator: hidden_size=10 must be divisible by num_heads=3 .* use hidden_size=9 or 12",
        ),
        ({"seasonality": 0}, r"ParaRNNEstimator: seasonality must be a season length of at least 1 step .* got 0"),
        ({"patience": -1}, r"ParaRNNEstimator: patience must be >= 0, got -1"),
        (
            {"naive_offset": True, "distribution": "negative_binomial"},
            r"ParaRNNEstimator: naive_offset=True moves a location, which distribution='negative_binomial' has not",
        ),
        (
            {"naive_drift": "full", "distribution": "negative_binomial"},
            r"ParaRNNEstimator: naive_drift='full' changes the seasonal-naive offset, which is off",
        ),
    ],
)
def test_bad_arguments_are_refused_by_name(kwargs, name):
    with pytest.raises(ValueError, match=name):
        ParaRNNEstimator(**{"freq": FREQ, "prediction_length": H, **kwargs})


def test_loss_weighting_reaches_the_network_and_its_hyperparameters(tmp_path):
    assert ParaRNNEstimator(FREQ, H).model_kwargs()["loss_weighting"] == "uniform"
    estimator = make_estimator(tmp_path, loss_weighting="scale")
    module = estimator.create_lightning_module()
    assert module.model.loss_weighting == "scale"
    assert module.hparams["model_kwargs"]["loss_weighting"] == "scale"  # what checkpoints and predictors restore
    predictor = estimator.train(sine_series())
    assert predictor.prediction_net.model.loss_weighting == "scale"


def test_default_context_is_twice_the_horizon_with_a_minimum():
    assert ParaRNNEstimator(FREQ, 12).context_length == 24
    assert ParaRNNEstimator(FREQ, 2).context_length == 8
    assert ParaRNNEstimator(FREQ, 2, context_length=3).context_length == 3


def test_custom_time_features_reach_the_network():
    from gluonts.time_feature import month_of_year, week_of_year

    estimator = ParaRNNEstimator(FREQ, H, **TINY, time_features=[month_of_year, week_of_year])
    module = estimator.create_lightning_module()
    predictor = estimator.create_predictor(estimator.create_transformation(), module, device="cpu")
    entry = sine_series([30])[0]
    (window,) = predictor.input_transform.apply([entry], is_train=False)
    assert window["past_time_feat"].shape[1] == module.model.num_time_features == 3  # 2 calendar + age
    (forecast,) = predictor.predict([entry])
    assert np.isfinite(forecast.samples).all()


def test_resumed_training_ends_with_the_uninterrupted_weight_average(tmp_path):
    """Stop after one epoch and resume from the checkpoint: model, average and step count as if never stopped."""
    estimator = make_estimator(tmp_path, dropout=0.0, ema_decay=0.7)
    data = estimator.create_transformation().apply(sine_series(), is_train=True)
    pl.seed_everything(0)
    batches = list(estimator.create_training_data_loader(data, estimator.create_lightning_module()))
    assert len(batches) == 2

    def fit(epochs: int, ckpt_path=None, callbacks=()) -> ParaRNNLightningModule:
        torch.manual_seed(1)  # the same initial weights each time; a resume then loads its checkpoint's
        module = estimator.create_lightning_module()
        trainer = pl.Trainer(max_epochs=epochs, default_root_dir=str(tmp_path), callbacks=list(callbacks), **QUIET)
        trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None), ckpt_path=ckpt_path)
        assert trainer.global_step == 2 * epochs
        return module

    straight = fit(3)
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    stopped = fit(1, callbacks=[checkpoint])
    resumed = fit(3, ckpt_path=checkpoint.last_model_path)
    for name, want in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], want, msg=name)

    # the comparison has a point: the average moved on after the checkpoint, and differs from the weights
    def differ(first: torch.nn.Module, second: torch.nn.Module) -> bool:
        return any(not torch.allclose(a, b) for a, b in zip(first.parameters(), second.parameters(), strict=True))

    assert differ(stopped.averaged, resumed.averaged) and differ(resumed.averaged, resumed.model)


def test_validation_data_without_a_window_is_refused_by_name(tmp_path):
    """Series shorter than the horizon give no validation window; Lightning would fail, without val_loss, later."""
    short = sine_series([H - 1, H - 2])
    message = rf"ParaRNNEstimator: validation_data gives no validation window: .* its 2 series, the longest of {H - 1}"
    with pytest.raises(ValueError, match=message):
        make_estimator(tmp_path).train(sine_series(), validation_data=short)


def test_training_data_without_a_window_is_refused_by_name(tmp_path):
    """GluonTS would give up after 100 idle series with "Reached maximum number of idle transformation calls"."""
    message = rf"training_data gives no training window: .* its series \(2, the longest of {H - 1} steps\)"
    with pytest.raises(ValueError, match=message):
        make_estimator(tmp_path).train(sine_series([H - 1, H - 2]))


def test_a_start_of_another_freq_is_refused_naming_the_series():
    entries = sine_series([30, 40])
    entries[1]["start"] = pd.Period("2000-01-01", freq="D")
    transformation = ParaRNNEstimator(FREQ, H, **TINY).create_transformation()
    for is_train in (True, False):
        with pytest.raises(ValueError, match=r"start of series 1 \(item_id 's1'\) is 2000-01-01 of freq 'D', but f"):
            list(transformation.apply(entries, is_train=is_train))
    for freq in ("M", "ME", "1M"):  # aliases of the data's: no error
        list(ParaRNNEstimator(freq, H, **TINY).create_transformation().apply(entries[:1], is_train=True))


def test_a_training_series_without_an_observed_value_warns_once():
    entries = sine_series([30, 40, 20])
    entries[1]["target"][:] = np.nan
    entries[2]["target"][:] = np.nan
    transformation = ParaRNNEstimator(FREQ, H, **TINY).create_transformation()
    with pytest.warns(UserWarning, match=r"series 1 \(item_id 's1'\) has no observed value") as caught:
        for _ in range(2):
            list(transformation.apply(entries, is_train=True))
    assert sum("no observed value" in str(w.message) for w in caught) == 1


def test_fewer_time_features_than_the_frequencys_are_zero_inputs():
    estimator = ParaRNNEstimator(FREQ, H, **TINY, time_features=[])
    module = estimator.create_lightning_module()
    predictor = estimator.create_predictor(estimator.create_transformation(), module, device="cpu")
    length = 30
    (window,) = predictor.input_transform.apply(sine_series([length]), is_train=False)
    rows = module.model.num_time_features
    assert rows == len(time_features_from_frequency_str(FREQ)) + 1  # freq's count, and the age
    age = np.log10(2.0 + np.arange(length + H))
    np.testing.assert_allclose(window["past_time_feat"][-length:, 0], age[:length], rtol=1e-6)
    np.testing.assert_allclose(window["future_time_feat"][:, 0], age[length:], rtol=1e-6)
    assert window["past_time_feat"].shape[1] == rows and not window["past_time_feat"][:, 1:].any()
    assert window["future_time_feat"].shape[1] == rows and not window["future_time_feat"][:, 1:].any()
    (forecast,) = predictor.predict(sine_series([length]))
    assert np.isfinite(forecast.samples).all()


def with_covariate_rows(entries: list[dict], steps_after: int) -> list[dict]:
    """``entries`` with a ``feat_dynamic_real`` row over each target and ``steps_after`` steps more."""
    return [{**e, "feat_dynamic_real": np.ones((1, len(e["target"]) + steps_after), np.float32)} for e in entries]


@pytest.mark.parametrize(
    "is_train, steps_after, fix",
    [
        (True, H, "cut it to"),  # the data to forecast from, with the horizon's covariates, used to train
        (True, -2, "give it values for those steps"),
        (False, 0, "give it values for those steps"),  # no covariates over the horizon
        (False, H + 2, "cut it to"),
    ],
)
def test_covariates_of_the_wrong_length_are_refused_naming_the_series(is_train, steps_after, fix):
    """Training covariates cover the target, those to forecast with also the horizon; the error names the series."""
    needed = 0 if is_train else H
    first, second = sine_series([30, 50])
    entries = with_covariate_rows([first], needed) + with_covariate_rows([second], steps_after)
    transformation = ParaRNNEstimator(FREQ, H, **TINY, num_feat_dynamic_real=1).create_transformation()
    found, expected = 50 + steps_after, 50 + needed
    message = rf"feat_dynamic_real of series 1 \(item_id 's1'\) has {found} steps, but .*{expected}.*: {fix}"
    with pytest.raises(ValueError, match=message):
        list(transformation.apply(entries, is_train=is_train))


STATIC_CAT = {"num_feat_static_cat": 1, "cardinality": [3]}
#: a valid value of each optional field, for series of 30 steps in training
VALID_FIELDS = {"feat_dynamic_real": np.ones((1, 30)), "feat_static_cat": [2], "feat_static_real": [0.5]}


@pytest.mark.parametrize(
    "kwargs, field, value, message",
    [
        (STATIC_CAT, "feat_static_cat", None, "has no feat_static_cat, but num_feat_static_cat=1: .* or set "),
        ({"num_feat_static_real": 1}, "feat_static_real", None, "has no feat_static_real, but num_feat_static_real=1"),
        ({"num_feat_dynamic_real": 1}, "feat_dynamic_real", None, "has no feat_dynamic_real, but num_feat_dynamic"),
        ({"num_feat_static_real": 1}, "feat_static_real", [1.0, 2.0], r"has shape \(2,\), but num_feat_static_real=1"),
        ({"num_feat_dynamic_real": 1}, "feat_dynamic_real", np.ones((2, 30)), r"shape \(2, 30\), but num_feat_dyn"),
        (STATIC_CAT, "feat_static_cat", [3], r"is \[3\]: its value 3 .* train with cardinality\[0\] >= 4"),
        (STATIC_CAT, "feat_static_cat", [-1], r"is \[-1\]: its value -1 .* categories are numbered from 0"),
        ({"num_feat_static_real": 1}, "feat_static_real", [np.nan], r"is \[nan\]: NaN or inf; fill it in"),
        (
            {"num_feat_dynamic_real": 1},
            "feat_dynamic_real",
            np.where(np.arange(30) == 7, np.nan, 1.0)[None],
            "has NaN or inf at 1 time steps .* step 7.* fill them in",
        ),
    ],
)
def test_a_bad_series_is_refused_naming_the_field_the_series_and_the_fix(kwargs, field, value, message):
    entries = [{**entry, field: VALID_FIELDS[field]} for entry in sine_series([30, 30])]
    if value is None:
        del entries[1][field]
    else:
        entries[1][field] = value
    transformation = ParaRNNEstimator(FREQ, H, **TINY, **kwargs).create_transformation()
    list(transformation.apply(entries[:1], is_train=True))  # the valid series passes
    with pytest.raises(ValueError, match=rf"ParaRNNEstimator: (?:{field} of )?series 1 \(item_id 's1'\).*{message}"):
        list(transformation.apply(entries, is_train=True))


def test_the_network_names_the_covariate_or_category_it_cannot_read():
    """Called without the estimator's checks, the network still names ``feat_dynamic_real`` and the categories."""
    estimator = ParaRNNEstimator(FREQ, H, **TINY)
    inputs = first_prediction_batch(estimator, estimator.create_lightning_module())
    network = ParaRNNEstimator(FREQ, H, **TINY, **STATIC_CAT).create_lightning_module().model
    network(**inputs)  # these inputs fit it
    future = inputs["future_time_feat"].clone()
    future[1, 2, -1] = math.nan
    with pytest.raises(ValueError, match=r"feat_dynamic_real \(in past_time_feat/future_time_feat\) contains NaN"):
        network(**{**inputs, "future_time_feat": future})
    categories = torch.full_like(inputs["feat_static_cat"], 5)
    with pytest.raises(ValueError, match=r"feat_static_cat has values \[5\] outside .* raise cardinality"):
        network(**{**inputs, "feat_static_cat": categories})


def test_training_warns_once_of_each_field_the_settings_leave_unused():
    entries = [
        {
            **entry,
            "feat_dynamic_real": np.ones((2, len(entry["target"]))),
            "feat_static_cat": [1],
            "feat_static_real": [0.5, 1.0],
            "past_feat_dynamic_real": np.ones((1, len(entry["target"]))),
        }
        for entry in sine_series([30, 40])
    ]
    transformation = ParaRNNEstimator(FREQ, H, **TINY).create_transformation()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):  # two passes, as over a training set
            list(transformation.apply(entries, is_train=True))
        list(transformation.apply(entries, is_train=False))  # forecasting: no warning
    messages = sorted(str(w.message) for w in caught if "ParaRNNEstimator" in str(w.message))
    expected = [
        r"num_feat_dynamic_real=0 leaves the training data's feat_dynamic_real unused .* set num_feat_dynamic_real=2",
        r"num_feat_static_cat=0 leaves .* feat_static_cat unused .* set num_feat_static_cat=1 and cardinality",
        r"num_feat_static_real=0 leaves .* feat_static_real unused .* set num_feat_static_real=2",
        r"the training data's past_feat_dynamic_real .* is ignored: covariates known only in the past are not",
    ]
    assert len(messages) == len(expected)
    for message, pattern in zip(messages, expected, strict=True):
        assert re.search(pattern, message), message
