"""A record sink whose writing is done by a thread of its own: the runtime's lock is held only
to queue a round's records (O(1)); the thread writes the rounds in order, one at a time (so
a store that races with itself, MLflow's file store, never sees two at once). A failed write is
warned of once (and counted at the close), never a reason to stop the federation."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence

from accord.aggregator.metrics import MetricRecord

log = logging.getLogger("accord.aggregator")


class QueuedSink:
    """Calls ``write`` with each round's records on the thread ``name``; ``close`` drains it."""

    def __init__(self, write: Callable[[Sequence[MetricRecord]], None], name: str) -> None:
        self._write = write
        self.name = name
        self.failures = 0
        self._queue: queue.SimpleQueue[Sequence[MetricRecord] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=f"accord-{name}", daemon=True)
        self._thread.start()

    def __call__(self, records: Sequence[MetricRecord]) -> None:
        self._queue.put(records)

    def _run(self) -> None:
        while (records := self._queue.get()) is not None:
            try:
                self._write(records)
            except Exception as exc:  # the library's or its server's
                self.failures += 1
                if self.failures == 1:
                    log.warning("%s: a round's metrics were not written: %s", self.name, str(exc)[:500])

    def close(self) -> None:
        """Write what is queued and stop the thread."""
        self._queue.put(None)
        self._thread.join()
        if self.failures:
            log.warning("%s: the metrics of %d rounds were not written", self.name, self.failures)
