"""Metrics: per-collaborator records and their sample-weighted means per task."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from accord.aggregation.bounds import lower_median
from accord.errors import AccordError
from accord.files import atomic_write


@dataclass(frozen=True)
class MetricRecord:
    """One value: round, origin (collaborator or ``aggregator``), task, metric name, value."""

    round: int
    origin: str
    task: str
    metric: str
    value: float

    def as_dict(self) -> dict[str, object]:
        """The record as metrics.jsonl holds it (``asdict`` without its deep copy: 10x faster)."""
        return {"round": self.round, "origin": self.origin, "task": self.task, "metric": self.metric, "value": self.value}


class WeightedMetrics:
    """A round's ``task/metric`` values, averaged weighted by sample count, each count capped as
    the model's are: at ``sample_count_multiple`` x the lower median of that metric's counts
    (none without a multiple). One ``(value, count)`` is kept per result: O(sites x metrics)."""

    def __init__(self, sample_count_multiple: float | None = None) -> None:
        self.sample_count_multiple = sample_count_multiple
        self._values: dict[str, list[tuple[float, float]]] = {}

    def add(self, task: str, metric: str, value: float, weight: float) -> None:
        self._values.setdefault(f"{task}/{metric}", []).append((value, weight))

    def means(self) -> dict[str, float]:
        """``task/metric`` -> its weighted mean (within the values' range: finite for finite values)."""
        means = {}
        for key, entries in self._values.items():
            cap = math.inf
            if self.sample_count_multiple is not None:
                cap = self.sample_count_multiple * lower_median([count for _, count in entries])
            weights = [min(count, cap) for _, count in entries]
            total = math.fsum(weights)
            if total > 0:
                means[key] = math.fsum(value * (weight / total) for (value, _), weight in zip(entries, weights))
        return means


class MetricsLog:
    """Appends records to a JSON-lines file (one object per line)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def keep_before(self, round_number: int) -> None:
        """Drop the records of rounds from ``round_number`` on (they will be written again)."""
        kept = [r for r in read_metrics(self.path) if r.round < round_number]
        atomic_write(self.path, "".join(json.dumps(r.as_dict()) + "\n" for r in kept).encode("utf-8"))

    def write(self, records: Iterable[MetricRecord]) -> None:
        text = "".join(json.dumps(record.as_dict()) + "\n" for record in records)
        with self.path.open("a", encoding="utf-8") as out:
            out.write(text)


def read_metrics(path: Path) -> list[MetricRecord]:
    """Read a metrics.jsonl file back; a last line cut short (a killed writer) is left out."""
    if not path.is_file():
        return []
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(MetricRecord(**json.loads(line)))
        except (ValueError, TypeError):
            if number < len(lines):
                raise AccordError(f"{path}, line {number}, is not a metric record", "remove or repair that line") from None
    return records
