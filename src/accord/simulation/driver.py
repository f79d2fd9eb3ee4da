"""One simulated federation's rounds: the deployment's RoundEngine (the plan's strategy,
sampling, assigner and straggler policy) fed by a backend's batches of clients."""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from typing import Any

from accord.aggregator.engine import RoundEngine
from accord.aggregator.events import RoundOutcome
from accord.aggregator.reporting import report_closed
from accord.errors import AccordError, RefusedError
from accord.messages import TaskResult
from accord.simulation.backends import Backend
from accord.simulation.clients import ClientJob, ClientRun
from accord.simulation.spool import RoundSpool

log = logging.getLogger("accord.simulation")

#: batches in flight per worker (enough to keep each busy; results held are O(workers))
_IN_FLIGHT_PER_WORKER = 2
#: client errors kept with their exception (the others are counted)
_ERRORS_KEPT = 100


class Stopped(AccordError):
    """A client failed and the simulation was told to stop at the first failure."""


class TimedOut(AccordError):
    """The simulation passed its timeout."""


@dataclass
class ClientErrors:
    """The first error of each failed client (up to ``_ERRORS_KEPT`` of them) and their count."""

    first: dict[str, BaseException] = field(default_factory=dict)
    count: int = 0

    def add(self, cid: str, error: BaseException) -> None:
        self.count += 1
        if len(self.first) < _ERRORS_KEPT:
            self.first.setdefault(cid, error)


class RoundDriver:
    """Runs the engine's open round on the backend: each cohort member's tasks in batches, the
    results submitted to the engine as they come (their tensors spooled to disk), the
    straggler policy ticked at its deadlines; returns each closed round's outcome."""

    def __init__(
        self,
        engine: RoundEngine,
        backend: Backend,
        client_fn: Any,
        setup: Any,
        spool: RoundSpool,
        clock: Callable[[], float] = time.monotonic,
        stop_on_error: bool = False,
    ) -> None:
        self.engine = engine
        self.backend = backend
        self.client_fn = backend.share(client_fn)
        self.setup = backend.share(setup)
        self.spool = spool
        self.clock = clock
        self.stop_on_error = stop_on_error
        self.errors = ClientErrors()

    def run_round(self, deadline: float | None = None) -> RoundOutcome:
        """Run the open round to its close; AccordError past ``deadline`` (clock time)."""
        engine, current = self.engine, self.engine.current
        assert current is not None
        batches = self._batches()
        model = self.backend.share(engine.model)
        pending: set[Future[list[ClientRun]]] = set()
        try:
            while True:
                while batches and len(pending) < _IN_FLIGHT_PER_WORKER * self.backend.workers:
                    job, cids = batches.popleft()
                    pending.add(self.backend.run(self.client_fn, self.setup, job, model, cids))
                ahead = (engine.next_deadline() or self.clock()) - self.clock()
                if deadline is not None:
                    ahead = min(ahead, deadline - self.clock())
                if not pending:  # everyone ran: the policy closes the round, or says why it cannot
                    outcome = engine.tick()
                    if outcome is not None:
                        return self._closed(outcome)
                    raise AccordError(f"round {current.number} cannot close: every client ran and it still waits")
                done, pending = wait(pending, timeout=max(ahead, 0.0), return_when=FIRST_COMPLETED)
                if not done:
                    if deadline is not None and self.clock() >= deadline:
                        raise TimedOut("the simulation did not finish in time", "raise its timeout")
                    outcome = engine.tick()  # RoundDeadlineError when too few reported in time
                    if outcome is not None:
                        return self._closed(outcome)
                for future in done:
                    for run in future.result():
                        outcome = self._take(run)
                        if outcome is not None:
                            return self._closed(outcome)
        finally:
            for future in pending:  # a closed round's late clients: not waited for
                future.cancel()

    def _batches(self) -> deque[tuple[ClientJob, list[str]]]:
        """The open round's cohort in batches, clients with the same tasks together."""
        engine, current = self.engine, self.engine.current
        assert current is not None
        groups: dict[tuple[str, ...], list[str]] = {}
        for cid, names in current.outstanding.items():
            groups.setdefault(tuple(names), []).append(cid)
        size = max(1, min(self.backend.max_batch, math.ceil(len(current.outstanding) / (4 * self.backend.workers))))
        batches: deque[tuple[ClientJob, list[str]]] = deque()
        for cids in groups.values():
            assignment = engine.assignment(cids[0])
            job = ClientJob(current.number, assignment.tasks, assignment.config, engine.model_digest, current.phase)
            batches.extend((job, cids[start : start + size]) for start in range(0, len(cids), size))
        return batches

    def _take(self, run: ClientRun) -> RoundOutcome | None:
        """Submit one client's results; a refused one ends its part in the round as a failure."""
        if run.error is not None:
            self.errors.add(run.cid, run.error)
            if self.stop_on_error:
                raise Stopped(f"client {run.cid!r} failed: {run.error}")
        number = self.engine.round_number
        for result in run.results:
            stored = self.spool.keep(number, result.tensors) if result.tensors else None
            try:
                outcome = self.engine.submit(result, stored)
            except RefusedError as exc:
                log.warning("round %d: the result of client %s for %s was refused: %s", number, run.cid, result.task, exc.message)
                self.errors.add(run.cid, exc)
                failure = TaskResult(run.cid, number, result.task, 0, {}, failure=f"its result was refused ({exc.kind})", phase=result.phase)
                return self.engine.submit(failure)
            if outcome is not None:
                return outcome
        return None

    def _closed(self, outcome: RoundOutcome) -> RoundOutcome:
        report_closed(self.engine, outcome)
        return outcome
