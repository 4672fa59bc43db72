"""One figure for forecasts, shared by ``pararnn-ts test`` / ``predict`` and the benchmark's plots.

    plot_forecasts(histories, forecasts, "forecasts.png", actuals=labels, title="ParaGRU on m1")

Each panel is one series on a time axis: the last ``history_windows · H`` observed steps, the actual values of
the forecast window when known (dashed), the median forecast and its 80% band (10%–90%).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from gluonts.model.forecast import Forecast
from matplotlib.figure import Figure

PLOTTED_SERIES = 4


def plot_forecasts(
    histories: Sequence[dict[str, Any]],
    forecasts: Sequence[Forecast],
    path: str | Path,
    actuals: Sequence[np.ndarray] | None = None,
    title: str | None = None,
    num_series: int = PLOTTED_SERIES,
    history_windows: int = 3,
) -> Figure:
    """Plot the first ``num_series`` forecasts after their ``histories`` (GluonTS entries) and save to ``path``.

    ``actuals``: the ``(H,)`` values of each forecast window, or ``None`` where they are unknown. Returns the
    figure (drawn without pyplot, so the session's matplotlib backend is left alone).
    """
    if actuals is not None and len(actuals) != len(forecasts):
        raise ValueError(f"plot_forecasts: {len(actuals)} actuals for {len(forecasts)} forecasts; give one each")
    shown = min(num_series, len(forecasts))
    if shown == 0:
        raise ValueError("plot_forecasts: no forecasts to plot")
    figure = Figure(figsize=(9, 2.4 * shown))
    axes = figure.subplots(shown, 1, squeeze=False)[:, 0]
    for number, (ax, history, forecast) in enumerate(zip(axes, histories, forecasts, strict=False)):
        target = np.asarray(history["target"], dtype=float)
        recent = target[-history_windows * forecast.prediction_length :]
        past = pd.period_range(end=forecast.start_date - 1, periods=len(recent)).to_timestamp()
        future = forecast.index.to_timestamp()
        ax.plot(past, recent, color="black", lw=1, label="observed")
        if actuals is not None:
            ax.plot(future, np.asarray(actuals[number], dtype=float), color="black", lw=1, ls="--", label="actual")
        ax.plot(future, forecast.quantile(0.5), color="C0", lw=1.2, label="median")
        ax.fill_between(future, forecast.quantile(0.1), forecast.quantile(0.9), color="C0", alpha=0.3, label="80%")
        ax.set_title(f"{history.get('item_id', '')}: forecast from {forecast.start_date}", fontsize=9)
    axes[0].legend(loc="upper left", fontsize=8)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return figure
