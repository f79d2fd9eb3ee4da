"""``fx plot``: the per-round curves of a metrics.jsonl file (aggregated, and each site's if
asked) drawn to a PNG with matplotlib's Agg canvas (the extra accord[plot]); no display, no
pyplot state."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

from accord.aggregator.metrics import MetricRecord, read_metrics
from accord.errors import AccordError
from accord.files import atomic_write
from accord.imports import optional_module

AGGREGATOR = "aggregator"
#: the aggregator's own records (timing, bytes): plotted only when named with --metric
ROUND_TASK = "round"
COLUMNS = 2


def plot_metrics(metrics_path: Path, out: Path, metrics: Sequence[str] = (), sites: bool = False) -> list[str]:
    """Draw the aggregated curve of each ``task/metric`` in ``metrics`` (default: every aggregated
    metric but the round's timing and bytes), one panel each, with each site's curve if
    ``sites``, to the PNG ``out`` (written atomically); returns the metrics drawn."""
    optional_module("matplotlib", "fx plot", "pip install 'accord[plot]'")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    records = _records(metrics_path)
    series = _series(records)
    chosen = list(metrics) or sorted(k for k in series if not k.startswith(f"{ROUND_TASK}/"))
    for key in chosen:
        if key not in series:
            known = ", ".join(sorted(series)) or "none"
            raise AccordError(f"{metrics_path} holds no aggregated metric {key!r}", f"pass --metric as task/metric, one of: {known}")
    rows = math.ceil(len(chosen) / COLUMNS)
    columns = min(len(chosen), COLUMNS)
    figure = Figure(figsize=(6 * columns, 3.6 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    for index, key in enumerate(chosen, 1):
        axes = figure.add_subplot(rows, columns, index)
        if sites:
            for site, points in sorted(_site_series(records, key).items()):
                axes.plot(*zip(*sorted(points.items())), linewidth=0.8, alpha=0.6, label=site)
        axes.plot(*zip(*sorted(series[key].items())), marker="o", linewidth=2, color="black", label="aggregated")
        axes.set_title(key)
        axes.set_xlabel("round")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(True, alpha=0.3)
        if sites:
            axes.legend(fontsize="small")
    image = io.BytesIO()
    figure.savefig(image, format="png")
    atomic_write(out, image.getvalue())
    return chosen


def _records(path: Path) -> list[MetricRecord]:
    if not path.is_file():
        raise AccordError(f"no metrics file at {path}", "run the federation first (its aggregator writes it), or pass -w its workspace")
    records = read_metrics(path)
    if not records:
        raise AccordError(f"{path} holds no metric records", "plot it once a round has closed")
    return records


def _series(records: Sequence[MetricRecord]) -> dict[str, dict[int, float]]:
    """``task/metric`` -> round -> the aggregated value."""
    series: dict[str, dict[int, float]] = {}
    for r in records:
        if r.origin == AGGREGATOR:
            series.setdefault(f"{r.task}/{r.metric}", {})[r.round] = r.value
    return series


def _site_series(records: Sequence[MetricRecord], key: str) -> dict[str, dict[int, float]]:
    """site -> round -> its value of ``key`` (task/metric)."""
    task, metric = key.split("/", 1)
    series: dict[str, dict[int, float]] = {}
    for r in records:
        if r.origin != AGGREGATOR and r.task == task and r.metric == metric:
            series.setdefault(r.origin, {})[r.round] = r.value
    return series
