"""TensorBoard event files (the extra accord[tensorboard]): one scalar per record of each closed
round, its step the round number (one event a round). TensorBoard's own event writer queues each event for its
writer thread, so the sink stays quick under the runtime's lock; TensorFlow is not imported."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from accord.aggregator.metrics import MetricRecord
from accord.aggregator.sinks.tags import tag
from accord.imports import optional_module

INSTALL = "pip install 'accord[tensorboard]'"


class TensorBoardSink:
    """Writes each closed round's records as scalars under ``log_dir``."""

    def __init__(self, log_dir: Path) -> None:
        writer = optional_module(
            "tensorboard.summary.writer.event_file_writer", "aggregator.settings.metrics.tensorboard", INSTALL
        )
        self._protos = optional_module("tensorboard.compat.proto.summary_pb2", "aggregator.settings.metrics.tensorboard", INSTALL)
        self._events = optional_module("tensorboard.compat.proto.event_pb2", "aggregator.settings.metrics.tensorboard", INSTALL)
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir = log_dir
        self._writer = writer.EventFileWriter(str(log_dir))

    def __call__(self, records: Sequence[MetricRecord]) -> None:
        """One event a round, holding its records' scalars (a round's records share its number)."""
        by_round: dict[int, list[MetricRecord]] = {}
        for record in records:
            by_round.setdefault(record.round, []).append(record)
        now, value = time.time(), self._protos.Summary.Value
        for number, held in by_round.items():
            summary = self._protos.Summary(value=[value(tag=tag(r), simple_value=r.value) for r in held])
            self._writer.add_event(self._events.Event(wall_time=now, step=number, summary=summary))

    def close(self) -> None:
        """Write out what is queued and close the event file."""
        self._writer.close()
