"""What each round publishes: its RoundCommit (the round's start with the strategy's state and
status, after a close the ``last`` and ``best`` model files) and, with an audit trail, the
round's model and the chain's signed head; and the replay of a saved open round at resume."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from accord.aggregator.committer import RoundCommit
from accord.aggregator.engine import RoundEngine
from accord.aggregator.events import RoundOutcome
from accord.aggregator.journal import Journal
from accord.aggregator.reporting import report_closed
from accord.aggregator.saved import SavedRound
from accord.aggregator.status import RoundStatus
from accord.plan.loader import Plan

if TYPE_CHECKING:
    from accord.audit.trail import AuditTrail

log = logging.getLogger("accord.aggregator")


class RoundPublisher:
    """Builds each round's RoundCommit and keeps what its status shows of the last close (when
    the open round opened, the last close's stragglers and bounded updates). Not thread-safe:
    the runtime calls it under its lock."""

    def __init__(self, plan: Plan, engine: RoundEngine, journal: Journal, audit: AuditTrail | None) -> None:
        self._plan = plan
        self._engine = engine
        self._journal = journal
        self._audit = audit
        self.opened_at = time.time()
        self.stragglers: tuple[str, ...] = ()
        self.bounded: tuple[str, ...] = ()

    def commit(self, outcome: RoundOutcome | None = None) -> RoundCommit:
        """The open round's start with the strategy's state (or that the federation finished),
        and, after ``outcome``, the ``last`` and ``best`` model files to publish with it."""
        engine, settings = self._engine, self._plan.model.aggregator.settings
        links = {}
        if outcome is not None:
            links[self._plan.resolve_path(settings.last_state_path)] = True  # outcome.model is engine.model
            if outcome.best_model is not None:  # the new model, or the one the round validated
                links[self._plan.resolve_path(settings.best_state_path)] = outcome.best_model is outcome.model
        status = RoundStatus(engine, self.opened_at, self.stragglers, self.bounded)
        return RoundCommit(
            engine.round_number, engine.model, engine.best_score, status.data, engine.strategy_state, engine.finished, links
        )

    def finish(self, outcome: RoundOutcome, commit: Callable[[RoundCommit], None]) -> None:
        """Report a closed round (its metrics are written by the engine's sink) and have
        ``commit`` save the next one's start with the models (the committer's ``hand``, or its
        ``write`` at once while replaying)."""
        self.stragglers = outcome.stragglers
        self.bounded = report_closed(self._engine, outcome)
        self.opened_at = time.time()
        if self._audit is not None:  # the next round's model, and the chain's head signed
            self._audit.model(self._engine.round_number, self._engine.model_digest)
            self._audit.seal()
        commit(self.commit(outcome))

    def replay(self, saved: SavedRound, commit: Callable[[RoundCommit], None]) -> None:
        """Feed the saved results of the open round back into the engine, in their order; a
        round they close is committed with ``commit``."""
        engine = self._engine
        names = [f"{r['collaborator']}/{r['task']}" for r in saved.results]
        log.info(
            "resuming round %d from %s with %d results already received%s",
            saved.round_number,
            self._journal.path,
            len(names),
            f" ({', '.join(names)})" if names else "",
        )
        for entry, result in zip(saved.results, saved.received()):
            # each was checked against this round's model when it came
            stamped = replace(result, model_digest=engine.model_digest)
            outcome = engine.submit(stamped, self._journal.view(entry["tensors"]))
            if self._audit is not None:
                self._audit.result(result, replay=True)
            if outcome is not None:
                self.finish(outcome, commit)
        if engine.round_number == saved.round_number:  # not closed by the replay
            self._journal.mark_resumed()
