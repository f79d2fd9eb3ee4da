"""Whether the runtime still serves: until it is closed, or until the first failure that
stops it (a save or a round close that failed, a round past its deadline). The engine has
moved on in memory by then, so serving on would drift from the saved state; a restart
resumes from the last state that was saved."""

from __future__ import annotations

import logging
from collections.abc import Callable

from accord.errors import AccordError, RefusedError

log = logging.getLogger("accord.aggregator")

_SAVE_FAILED = "the aggregator could not save its state and stops"


class Serving:
    """The runtime's serving state; ``notify`` wakes its waiters. Not thread-safe: the runtime
    uses it under its lock."""

    def __init__(self, notify: Callable[[], None]) -> None:
        self._notify = notify
        #: why the aggregator stopped (what wait_until_done raises); None while it serves
        self.failure: AccordError | None = None
        #: set by the runtime's close
        self.closed = False

    @property
    def on(self) -> bool:
        """Neither closed nor stopped by a failure."""
        return not self.closed and self.failure is None

    def check(self) -> None:
        """Refuse (RefusedError) a result once the aggregator is stopping."""
        if not self.on:
            raise RefusedError("the aggregator is stopping; its saved state is where a restart resumes", kind="state")

    def stop(self, exc: Exception, what: str) -> AccordError:
        """Record why the aggregator stops serving (it stops taking results) and log it."""
        failure = exc if isinstance(exc, AccordError) else AccordError(f"{exc!r}")
        self.failure = AccordError(
            f"{what}: {failure.message}",
            "fix the cause (disk full? permissions?) and start it again: it resumes from the last saved point",
        )
        log.error("%s", self.failure)
        self._notify()
        return self.failure

    def save_failed(self, exc: Exception) -> None:
        """Stop on a failed save (the committer's; ``persist``'s too)."""
        self.stop(exc, _SAVE_FAILED)

    def close_failed(self, exc: Exception, round_number: int) -> AccordError:
        """Stop on a failed close of round ``round_number`` (an update's file unreadable,
        memory short): a restart closes the round again."""
        return self.stop(exc, f"the aggregator could not close round {round_number} and stops")

    def halt(self, exc: AccordError) -> None:
        """Stop with ``exc`` itself (a round past its deadline with too few reports: its
        RoundDeadlineError), unless a failure stopped it already."""
        if self.failure is None:
            log.error("%s", exc)
            self.failure = exc
        self._notify()

    def persist(self, action: Callable[[], None]) -> None:
        """Run ``action`` (saving state, closing a round); if it fails, the aggregator stops."""
        try:
            action()
        except Exception as exc:
            raise self.stop(exc, _SAVE_FAILED) from exc
        finally:
            self._notify()
