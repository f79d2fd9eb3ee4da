"""What a multi-phase round took besides the updates its phases fold (pure): its sample-weighted
metrics, the sites' metric records, who failed at its site and the slowest task time.

A phase checkpoint carries it (aggregator/phase_checkpoint.py), taken as the phase opens, so
a round resumed there (secure aggregation's ``unmask``) closes with the mask phase's metrics,
records, failures and best-model judgement of an uninterrupted run: written once a round,
O(records), beside the phases' own state; nothing per result. Plain JSON values, parsed
strictly: metric values and sample counts are what the sites sent in the clear (they weigh the
round's metrics as for every result), no secret; read back, each must be what a result may
carry (aggregator/result_checks.py: a count in 1..MAX_SAMPLE_COUNT, a value of magnitude at most
MAX_METRIC_MAGNITUDE, a metric name METRIC_NAME matches), so a file no site could have made is
not resumed from (it would skew the round's means, or overflow them as the round closes).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from accord.aggregator.open_round import OpenRound
from accord.aggregator.result_checks import MAX_METRIC_MAGNITUDE, MAX_SAMPLE_COUNT, METRIC_NAME


@dataclass(frozen=True)
class RoundTally:
    """An open round's metrics (``task, metric, values, counts``, as WeightedMetrics.entries
    holds them), records (``origin, task, metric, value``, in order), failures (site -> why)
    and slowest task seconds."""

    metrics: tuple[tuple[str, str, tuple[float, ...], tuple[float, ...]], ...] = ()
    records: tuple[tuple[str, str, str, float], ...] = ()
    failed: Mapping[str, str] = field(default_factory=dict)
    slowest: float = 0.0

    @classmethod
    def of(cls, current: OpenRound) -> RoundTally:
        """What ``current`` took so far."""
        metrics = tuple((task, metric, tuple(values), tuple(counts)) for task, metric, values, counts in current.metrics.entries())
        records = tuple((r.origin, r.task, r.metric, r.value) for r in current.records)
        return cls(metrics, records, dict(current.failed), current.slowest_task_seconds())

    def names(self) -> set[str]:
        """The sites it names (a resumed round's assigned sites must include them)."""
        return {origin for origin, *_ in self.records} | set(self.failed)

    def restore(self, current: OpenRound) -> None:
        """Add what it holds to ``current`` (its round resumed), as the results that made it did."""
        for task, metric, values, counts in self.metrics:
            for value, count in zip(values, counts):
                current.metrics.add(task, metric, value, count)
        for origin, task, metric, value in self.records:
            current.records.add(origin, task, metric, value)
        current.failed.update(self.failed)
        current.slowest_done = max(current.slowest_done, self.slowest)

    def to_json(self) -> dict[str, Any]:
        return {
            "metrics": [[task, metric, list(values), list(counts)] for task, metric, values, counts in self.metrics],
            "records": [list(record) for record in self.records],
            "failed": dict(self.failed),
            "slowest": self.slowest,
        }

    @classmethod
    def from_json(cls, data: Any) -> RoundTally:
        """The tally ``to_json`` wrote; ValueError (or TypeError, KeyError) if it is malformed."""
        metrics = []
        for task, metric, values, counts in _list(data["metrics"]):
            if len(_list(values)) != len(_list(counts)):
                raise ValueError("a metric's values and counts differ in number")
            metrics.append((_text(task), _metric(metric), tuple(map(_value, values)), tuple(map(_count, counts))))
        records = tuple((_text(o), _text(t), _metric(m), _value(v)) for o, t, m, v in _list(data["records"]))
        failed = data["failed"]
        if not isinstance(failed, dict):
            raise TypeError("the failures are not a mapping")
        return cls(tuple(metrics), records, {_text(k): _text(v) for k, v in failed.items()}, _number(data["slowest"]))


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(f"{type(value).__name__} where a list belongs")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{type(value).__name__} where a name belongs")
    return value


def _metric(value: Any) -> str:
    name = _text(value)
    if not METRIC_NAME.fullmatch(name):
        raise ValueError(f"{name[:64]!r} where a metric name belongs")
    return name


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{type(value).__name__} where a number belongs")
    try:
        number = float(value)
    except OverflowError:  # an int beyond a float
        raise ValueError("an integer beyond a float where a number belongs") from None
    if not math.isfinite(number):
        raise ValueError(f"{number!r} where a finite number belongs")
    return number


def _value(value: Any) -> float:
    number = _number(value)
    if abs(number) > MAX_METRIC_MAGNITUDE:
        raise ValueError(f"metric value {number!r}: of magnitude at most {MAX_METRIC_MAGNITUDE:g}")
    return number


def _count(value: Any) -> float:
    number = _number(value)
    if not 0 < number <= MAX_SAMPLE_COUNT:
        raise ValueError(f"sample count {number!r}: expected 1..{MAX_SAMPLE_COUNT}")
    return number
