"""The runtime's deadline watcher: the thread that applies the straggler policy at the open
round's cut-offs and deadline (the engine's ``tick``), closing the round when it says so."""

from __future__ import annotations

import threading
from collections.abc import Callable

from accord.aggregator.committer import Committer
from accord.aggregator.engine import RoundEngine
from accord.aggregator.events import RoundOutcome


def watch_deadlines(
    cond: threading.Condition,
    engine: RoundEngine,
    committer: Committer,
    serving: Callable[[], bool],
    close_round: Callable[[RoundOutcome], None],
    halt: Callable[[Exception], None],
) -> None:
    """Apply the straggler policy at each wake-up, then sleep until the open round's next
    cut-off or deadline, while ``serving``; ``close_round`` takes the outcome of a round it
    closes, ``halt`` the error that ends it (a round past its deadline, a close that failed).

    Every change (a result in, a round opened) notifies ``cond``, so the watcher never sleeps
    past the earliest pending deadline, whatever round it is."""
    with cond:
        while serving():
            if committer.busy:  # the open round's policy applies once it is saved
                cond.wait()
                continue
            try:
                outcome = engine.tick()
                if outcome is not None:
                    close_round(outcome)
                    continue
            except Exception as exc:
                halt(exc)
                return
            due = engine.next_deadline()
            if due is None:
                return
            cond.wait(max(due - engine.clock(), 0.0))
