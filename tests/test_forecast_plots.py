"""The shared forecast figure: each panel's lines are the history, actuals and quantiles it was given, in time."""

from __future__ import annotations

import matplotlib.dates as mdates
import numpy as np
import pandas as pd
import pytest
from gluonts.model.forecast import SampleForecast

from pararnn_ts.forecast.plots import plot_forecasts

H = 4


def monthly_case(rng: np.random.Generator, length: int, item: str) -> tuple[dict, SampleForecast, np.ndarray]:
    start = pd.Period("2000-01", freq="M")
    history = {"start": start, "target": rng.normal(size=length), "item_id": item}
    forecast = SampleForecast(rng.normal(size=(50, H)), start_date=start + length, item_id=item)
    return history, forecast, rng.normal(size=H)


def line(ax, label: str):
    (found,) = [artist for artist in ax.get_lines() if artist.get_label() == label]
    return mdates.num2date(found.get_xdata(orig=False)), found.get_ydata()


def test_panels_show_the_given_history_actuals_and_quantiles_at_their_times(tmp_path):
    rng = np.random.default_rng(0)
    cases = [monthly_case(rng, length, f"s{length}") for length in (5, 30, 13)]
    histories, forecasts, actuals = (list(column) for column in zip(*cases, strict=True))
    path = tmp_path / "sub" / "f.png"
    figure = plot_forecasts(histories, forecasts, path, actuals=actuals, title="t", num_series=2)

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(figure.axes) == 2
    for ax, (history, forecast, actual) in zip(figure.axes, cases, strict=False):
        length = len(history["target"])
        times = pd.date_range("2000-01-01", periods=length + H, freq="MS")
        shown = min(length, 3 * H)
        x, y = line(ax, "observed")
        np.testing.assert_array_equal(y, history["target"][-shown:])
        assert [t.replace(tzinfo=None) for t in x] == list(times[length - shown : length])
        x, y = line(ax, "actual")
        np.testing.assert_array_equal(y, actual)
        assert [t.replace(tzinfo=None) for t in x] == list(times[length:])
        _, y = line(ax, "median")
        np.testing.assert_allclose(y, np.quantile(forecast.samples, 0.5, axis=0, method="nearest"))
        band = ax.collections[0].get_paths()[0].vertices[:, 1]
        low, high = np.quantile(forecast.samples, [0.1, 0.9], axis=0, method="nearest")
        np.testing.assert_allclose([band.min(), band.max()], [low.min(), high.max()])
        assert history["item_id"] in ax.get_title()


def test_unknown_actuals_draw_no_actual_line_and_mismatches_are_refused(tmp_path):
    rng = np.random.default_rng(1)
    history, forecast, actual = monthly_case(rng, 9, "a")
    figure = plot_forecasts([history], [forecast], tmp_path / "f.png")
    assert "actual" not in [artist.get_label() for artist in figure.axes[0].get_lines()]
    with pytest.raises(ValueError, match="2 actuals for 1 forecasts"):
        plot_forecasts([history], [forecast], tmp_path / "g.png", actuals=[actual, actual])
    with pytest.raises(ValueError, match="no forecasts"):
        plot_forecasts([], [], tmp_path / "h.png")
