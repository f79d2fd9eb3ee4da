"""A round's metrics: their sample-weighted means per task, each count capped."""

from __future__ import annotations

import math

from accord.aggregation.bounds import lower_median


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
