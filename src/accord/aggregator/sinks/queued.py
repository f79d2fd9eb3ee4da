"""A record sink whose writing is done by a thread of its own: the runtime's lock is held only
to queue a round's records (O(1)); the thread writes the rounds in order, one at a time (so
a store that races with itself, MLflow's file store, never sees two at once). A failed write is
warned of once (and counted at the close), never a reason to stop the federation; a write that
hangs (a tracking server that stopped answering) holds the close CLOSE_SECONDS at most."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence

from accord.aggregator.guarded import Guarded
from accord.metric_records import MetricRecord

log = logging.getLogger("accord.aggregator")

#: how long the close waits for the queued rounds to be written
CLOSE_SECONDS = 10.0


class QueuedSink:
    """Calls ``write`` with each round's records on the thread ``name``; ``close`` drains it."""

    def __init__(self, write: Callable[[Sequence[MetricRecord]], None], name: str) -> None:
        self._write = Guarded(write, name)
        self.name = name
        self._last: Callable[[], None] | None = None
        self._queue: queue.SimpleQueue[Sequence[MetricRecord] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=f"accord-{name}", daemon=True)
        self._thread.start()

    def __call__(self, records: Sequence[MetricRecord]) -> None:
        self._queue.put(records)

    def _run(self) -> None:
        while (records := self._queue.get()) is not None:
            self._write(records)
        if self._last is not None:
            self._last()

    @property
    def failures(self) -> int:
        """The rounds whose records were not written."""
        return self._write.failures

    def close(self, last: Callable[[], None] | None = None) -> bool:
        """Write what is queued, then call ``last`` on the thread (it must not raise: ending a run),
        and stop it; waits CLOSE_SECONDS at most. Returns whether all was done (else a warning
        says what was not)."""
        self._last = last
        self._queue.put(None)
        self._thread.join(CLOSE_SECONDS)
        if self._thread.is_alive():  # a daemon thread: it does not hold the process's exit
            unwritten = self._queue.qsize()  # those queued and the one being written (the end marker stands for it)
            left = f"the records of {unwritten} rounds were not written" if unwritten else "its closing call did not finish"
            log.warning("%s: still busy after %gs; the aggregator stops without it: %s", self.name, CLOSE_SECONDS, left)
            return False
        if self.failures:
            log.warning("%s: the metrics of %d rounds were not written", self.name, self.failures)
        return True
