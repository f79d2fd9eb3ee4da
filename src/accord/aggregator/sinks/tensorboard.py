"""TensorBoard event files (the extra accord[tensorboard]): one event a closed round, holding a
scalar per record, its step the round number; built and written by the sink's own thread
(queued.py) through TensorBoard's event writer. TensorFlow is not imported."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from accord.aggregator.sinks.queued import QueuedSink
from accord.aggregator.sinks.tags import tag
from accord.imports import optional_module
from accord.metric_records import MetricRecord

INSTALL = "pip install 'accord[tensorboard]'"
SETTING = "aggregator.settings.metrics.tensorboard"


class TensorBoardSink(QueuedSink):
    """Writes each closed round's records as scalars under ``log_dir``."""

    def __init__(self, log_dir: Path) -> None:
        writer = optional_module("tensorboard.summary.writer.event_file_writer", SETTING, INSTALL)
        self._protos = optional_module("tensorboard.compat.proto.summary_pb2", SETTING, INSTALL)
        self._events = optional_module("tensorboard.compat.proto.event_pb2", SETTING, INSTALL)
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir = log_dir
        self._writer = writer.EventFileWriter(str(log_dir))
        super().__init__(self._add, "TensorBoard")

    def _add(self, records: Sequence[MetricRecord]) -> None:
        """One event a round, holding its records' scalars."""
        by_round: dict[int, list[MetricRecord]] = {}
        for record in records:
            by_round.setdefault(record.round, []).append(record)
        now, value = time.time(), self._protos.Summary.Value
        for number, held in by_round.items():
            summary = self._protos.Summary(value=[value(tag=tag(r), simple_value=r.value) for r in held])
            self._writer.add_event(self._events.Event(wall_time=now, step=number, summary=summary))

    def end(self) -> None:
        """Write out what is queued and close the event file."""
        self.close()
        self._writer.close()
