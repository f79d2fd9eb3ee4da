"""A closed round's files written off the acknowledgement path, by one thread of their own.

The runtime closes a round in memory under its lock (the engine's maths), records the closing
result and acknowledges it; what the close leaves to write (the next round's model, the
strategy's tensors, ``last``/``best`` and the snapshot: ``Journal.open_round``) is handed to
the ``Committer``, which writes it outside the lock while the sites already fetch the next
round's tasks and model from memory. Until it has committed, the runtime journals nothing of
the next round (``busy``): a restart in between replays the closed round's journal, which
closes it again to the same model.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accord.aggregator.journal import Journal
from accord.strategies.seam import StrategyState
from accord.tensors.state import ModelState

log = logging.getLogger("accord.aggregator")


@dataclass(frozen=True)
class RoundCommit:
    """The start of round ``round_number`` (or, ``finished``, the end) as it is to be saved."""

    round_number: int
    model: ModelState
    best_score: float | None
    status: dict[str, Any]
    strategy: StrategyState
    finished: bool
    #: files to publish -> True for ``model``, False for the model of the round that closed
    links: Mapping[Path, bool] = field(default_factory=dict)


class Committer:
    """Writes each ``RoundCommit`` handed to it to ``journal``, one at a time, in its thread.

    ``cond`` is the runtime's condition: ``hand`` and ``busy`` are called under it, and it is
    notified when a commit is done. A failed write calls ``failed(exc)`` under it and the
    thread ends with the commit still pending: nothing more is journaled (the runtime stops).
    """

    def __init__(
        self,
        cond: threading.Condition,
        journal: Journal,
        failed: Callable[[Exception], None],
    ) -> None:
        self._cond = cond
        self._journal = journal
        self._failed = failed
        self._pending: RoundCommit | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="accord-commit", daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        """A closed round's files are not committed yet (call under the condition)."""
        return self._pending is not None

    def write(self, commit: RoundCommit) -> None:
        """Write ``commit`` now, in the calling thread (a fresh start's first round, a replayed close)."""
        self._journal.open_round(
            commit.round_number, commit.model, commit.best_score, commit.status, commit.strategy, commit.finished, commit.links
        )

    def hand(self, commit: RoundCommit) -> None:
        """Queue ``commit`` (call under the condition; the previous one must be done)."""
        assert self._pending is None, "a round closed before the previous one was committed"
        self._pending = commit
        self._cond.notify_all()

    def stop(self) -> None:
        """Finish the pending commit, if any, and end the thread (call without the condition)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._stopping:
                    self._cond.wait()
                commit = self._pending
            if commit is None:
                return
            try:
                self.write(commit)
            except Exception as exc:
                with self._cond:
                    self._failed(exc)
                return
            log.debug("round %d committed", commit.round_number)
            with self._cond:
                self._pending = None
                self._cond.notify_all()
