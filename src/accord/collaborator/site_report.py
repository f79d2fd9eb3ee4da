"""What a site shows of its own work: a line per task and one per round on its console (and
so in its log file), and the same figures as metric records in its own metrics file."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from accord.collaborator.transfers import Transfers, shown_bytes
from accord.messages import TaskResult
from accord.metric_records import MetricRecord, MetricsLog

log = logging.getLogger("accord.collaborator")

#: a site's own log and metrics files, relative to its workspace (the aggregator's are logs/metrics.jsonl
#: and its console: a workspace that serves both, as fx quickstart's does, keeps them apart)
SITE_LOG = "logs/collaborator-{name}.log"
SITE_METRICS = "logs/collaborator-{name}-metrics.jsonl"


class SiteReport:
    """Reports each task this site ran (its metrics, samples and seconds) and each round it
    worked in (its tasks, seconds and the bytes ``transfers`` counted down and up since the
    last round); ``metrics`` (None: none written) takes the same figures as MetricRecords
    (origin: this site), in the aggregator's metrics.jsonl format."""

    def __init__(
        self,
        name: str,
        transfers: Transfers,
        metrics: MetricsLog | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.transfers = transfers
        self.metrics = metrics
        self._clock = clock
        self._round_started = clock()
        self._down = self._up = 0
        self._tasks = 0

    def round_started(self) -> None:
        """A round's assignment arrived: its time and traffic count from now."""
        self._round_started = self._clock()
        self._down, self._up = self.transfers.down, self.transfers.up
        self._tasks = 0

    def task_done(self, result: TaskResult) -> None:
        """``result`` was sent: its line and records."""
        self._tasks += 1
        shown = "  ".join(f"{key}={value:.4f}" for key, value in sorted(result.metrics.items()))
        log.info(
            "%s: round %d  %-32s %s  (n=%d, %.2fs)",
            self.name,
            result.round_number,
            result.task,
            shown,
            result.sample_count,
            result.task_seconds,
        )
        if self.metrics is not None:
            figures = {**result.metrics, "sample_count": result.sample_count, "task_seconds": result.task_seconds}
            self.metrics.write(
                MetricRecord(result.round_number, self.name, result.task, key, float(value)) for key, value in figures.items()
            )

    def round_done(self, round_number: int) -> None:
        """Every task of ``round_number``'s assignment was sent: the round's line and records."""
        seconds = self._clock() - self._round_started
        down, up = self.transfers.down - self._down, self.transfers.up - self._up
        log.info(
            "%s: round %d done here: %d task%s in %.2fs, %s down, %s up",
            self.name,
            round_number,
            self._tasks,
            "" if self._tasks == 1 else "s",
            seconds,
            shown_bytes(down),
            shown_bytes(up),
        )
        if self.metrics is not None:
            figures = {"round_seconds": seconds, "bytes_down": down, "bytes_up": up}
            self.metrics.write(MetricRecord(round_number, self.name, "round", key, float(value)) for key, value in figures.items())
