"""``fx plot``: the per-round curves of a metrics.jsonl file (aggregated, and each site's if
asked) drawn to a PNG with matplotlib's Agg canvas (the extra accord[plot]); no display, no
pyplot state."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from accord.errors import AccordError
from accord.files import atomic_write
from accord.imports import optional_module
from accord.metric_records import MetricRecord, read_metrics

AGGREGATOR = "aggregator"
#: the aggregator's own records (timing, bytes): plotted only when named with --metric
ROUND_TASK = "round"
COLUMNS = 2
#: the most panels drawn by default (the names of aggregated metrics come from the sites: there may be thousands)
DEFAULT_PANELS = 12


@dataclass(frozen=True)
class Plotted:
    """The metrics drawn, and the aggregated ones left out of a default plot (``--metric`` draws them)."""

    drawn: list[str]
    more: list[str]


def plot_metrics(
    metrics_path: Path, out: Path, metrics: Sequence[str] = (), sites: bool = False, first: Sequence[str] = ()
) -> Plotted:
    """Draw the aggregated curve of each ``task/metric`` in ``metrics``, one panel each, with each
    site's curve if ``sites``, to the PNG ``out`` (written atomically). By default: the aggregated
    metrics but the round's timing and bytes, at most DEFAULT_PANELS, those of ``first`` (the
    plan's best_metric, then its tasks) before the others; the rest are named in ``more``."""
    optional_module("matplotlib", "fx plot", "pip install 'accord[plot]'")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    records = _records(metrics_path)
    series = _series(records)
    known = listed(sorted(series)) or "none"
    for key in metrics:
        if key not in series:
            raise AccordError(f"{metrics_path} holds no aggregated metric {key!r}", f"pass --metric as task/metric, one of: {known}")
    candidates = _ordered([k for k in series if not k.startswith(f"{ROUND_TASK}/")], first)
    if not metrics and not candidates:
        raise AccordError(
            f"{metrics_path} holds no aggregated metric but the round's timing and bytes",
            f"choose them with --metric (one of: {known}), or plot it once a round reported metrics",
        )
    chosen = list(metrics) or candidates[:DEFAULT_PANELS]
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
    return Plotted(chosen, [] if metrics else candidates[DEFAULT_PANELS:])


def listed(names: Sequence[str], shown: int = 2 * DEFAULT_PANELS) -> str:
    """The first ``shown`` of ``names``, comma-separated, and how many more there are."""
    more = f", and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _ordered(keys: Sequence[str], first: Sequence[str]) -> list[str]:
    """``keys`` with the entries of ``first`` (a ``task/metric``, or a ``task``: its metrics) before
    the others, each group sorted."""
    rank = {name: place for place, name in enumerate(reversed(first), 1)}  # the first named ranks highest
    return sorted(keys, key=lambda key: (-max(rank.get(key, 0), rank.get(key.split("/", 1)[0], 0)), key))


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
