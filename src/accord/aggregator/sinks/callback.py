"""``aggregator.settings.metrics.callback`` (OpenFL's ``log_metric_callback``): a function of the
workspace called with each metric of each closed round, on the sink's own thread (queued.py),
so a slow or failing function never holds the runtime's lock nor stops the federation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from accord.aggregator.sinks.queued import QueuedSink
from accord.metric_records import MetricRecord


class CallbackSink(QueuedSink):
    """Calls ``function(origin, task, metric, value, round)`` for each record, in order."""

    def __init__(self, function: Callable[..., Any], template: str) -> None:
        self._function = function
        super().__init__(self._call, f"metrics callback {template}")

    def _call(self, records: Sequence[MetricRecord]) -> None:
        for record in records:
            self._function(record.origin, record.task, record.metric, record.value, record.round)
