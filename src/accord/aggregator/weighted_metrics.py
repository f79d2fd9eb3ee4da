"""A round's metrics: their sample-weighted means per task, each count capped."""

from __future__ import annotations

import math
from array import array

from accord.aggregation.bounds import lower_median


class WeightedMetrics:
    """A round's ``task/metric`` values, averaged weighted by sample count, each count capped as
    the model's are: at ``sample_count_multiple`` x the lower median of that metric's counts
    (none without a multiple), which needs every count: each metric keeps its values and counts
in two float64 arrays (16 bytes a result, no Python object per result)."""

    def __init__(self, sample_count_multiple: float | None = None) -> None:
        self.sample_count_multiple = sample_count_multiple
        self._values: dict[tuple[str, str], tuple[array[float], array[float]]] = {}

    def add(self, task: str, metric: str, value: float, weight: float) -> None:
        values, counts = self._values.setdefault((task, metric), (array("d"), array("d")))
        values.append(value)
        counts.append(weight)

    def entries(self) -> list[tuple[str, str, array[float], array[float]]]:
        """Each metric's ``(task, metric, values, counts)``, in the order first added: ``add``
        them again, in order, to rebuild the same means (a resumed round: aggregator/round_tally.py)."""
        return [(task, metric, values, counts) for (task, metric), (values, counts) in self._values.items()]

    def means(self) -> dict[str, float]:
        """``task/metric`` -> its weighted mean (within the values' range: finite for finite values)."""
        means = {}
        for (task, metric), (values, counts) in self._values.items():
            cap = math.inf
            if self.sample_count_multiple is not None:
                cap = self.sample_count_multiple * lower_median(counts)
            weights = [min(count, cap) for count in counts]
            total = math.fsum(weights)
            if total > 0:
                means[f"{task}/{metric}"] = math.fsum(value * (weight / total) for value, weight in zip(values, weights))
        return means
