"""AggregatorRuntime: the thread-safe service around the pure RoundEngine.

It checks plan hashes, wakes long-polling collaborators when a round opens, bounds
concurrent uploads, subscribes the metrics sinks to the engine's events (``sinks``: more of
them; ``record_sinks`` get each closed round's records, with the bytes ``traffic`` counted),
writes the best/last model files, applies the straggler policy's deadlines and journals its state (aggregator/journal.py) so that a restart
resumes the open round: each result is on disk before it is acknowledged; a closed round's
files are written after, by the committer thread (aggregator/committer.py). Both the gRPC
server and the in-process transport serve this same object.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import TYPE_CHECKING

from accord.aggregator.committer import Committer, RoundCommit
from accord.aggregator.event_log import EventLog, events_path, events_sink
from accord.aggregator.events import RoundOutcome, Sink
from accord.aggregator.journal import Journal
from accord.aggregator.metrics import MetricsLog
from accord.aggregator.placement import initial_model
from accord.aggregator.plan_engine import assigner_for, engine_for, strategy_for
from accord.aggregator.reporting import RecordSink, ResultLog, log_stop, metrics_sink, phase_sink, report_closed
from accord.aggregator.saved import SavedRound
from accord.aggregator.shamir_pool import shamir_pool_for
from accord.aggregator.staging import StagedFile
from accord.aggregator.status import RoundStatus
from accord.aggregator.watch import Watchers
from accord.errors import AccordError, RefusedError
from accord.messages import Action, FederationInfo, TaskAssignment, TaskResult
from accord.plan.identity import shown_hash
from accord.plan.loader import Plan
from accord.tensors.space import MEMORY
from accord.tensors.state import ModelState, StateView

if TYPE_CHECKING:
    from accord.audit.trail import AuditTrail
    from accord.secagg.signing import Verifier
    from accord.transport.traffic import Traffic

log = logging.getLogger("accord.aggregator")


class AggregatorRuntime:
    """Serves one federation described by ``plan``; see module docstring."""

    def __init__(
        self,
        plan: Plan,
        model: ModelState | None = None,
        clock: Callable[[], float] = time.monotonic,
        sinks: Sequence[Sink] = (),
        fresh: bool = False,
        verify_sites: Verifier | None = None,
        traffic: Traffic | None = None,
        record_sinks: Sequence[RecordSink] = (),
        audit: AuditTrail | None = None,
    ) -> None:
        self.plan = plan
        settings = plan.model.aggregator.settings
        self.settings = settings
        assigner = assigner_for(plan)
        strategy = strategy_for(plan)  # refused before any saved state is touched
        if verify_sites is not None:  # the deployment's: secure rounds signed (aggregator/serve.py)
            from accord.strategies.secure import signed

            strategy = signed(strategy, verify_sites)
        self._shamir = shamir_pool_for(strategy)
        self.workspace_hash = plan.workspace_hash()  # once: the code does not change while serving
        log.info("workspace hash %s (plan + src/ + requirements.txt; every site must have the same)", self.workspace_hash)
        self.journal = Journal(plan.resolve_path(settings.state_dir), plan.hash)
        saved = None if fresh or model is not None else self.journal.load()
        if saved is None:
            self.journal.clear()
        initial, space = (model, MEMORY) if model is not None else initial_model(plan, saved, self.journal)
        self.engine = engine_for(plan, assigner, strategy, initial, clock, saved, space=space)
        self.metrics_log = MetricsLog(plan.resolve_path(settings.metrics_path))
        self.metrics_log.keep_before(saved.round_number if saved else 0)
        #: logs/events.jsonl (fx dashboard): the engine's events, and refusals (the gRPC server's on_refusal)
        self.event_log = EventLog(events_path(self.metrics_log.path), fresh=saved is None)
        self.event_log.write("started", round=self.engine.round_number, resumed=saved is not None)
        for sink in (metrics_sink(self.metrics_log, traffic, record_sinks), events_sink(self.event_log), phase_sink, *sinks):  # aggregator/events.py
            self.engine.events.subscribe(sink)
        self._cond = threading.Condition()
        self._uploads = threading.BoundedSemaphore(settings.max_concurrent_uploads)
        self._told_to_quit: set[str] = set()
        self._opened_at = time.time()
        self._stragglers: tuple[str, ...] = ()
        self._bounded: tuple[str, ...] = ()
        self._failure: AccordError | None = None
        self._closed = False
        self._watchers = Watchers()
        self._result_log = ResultLog()
        self._committer = Committer(self._cond, self.journal, self._commit_failed)
        if self.engine.stopped:  # before round 0: a target epsilon that no round fits
            log_stop(self.engine.stopped)
        self._audit = audit  # the signed chain of what was accepted (accord/audit/; the deployment's)
        with self._cond:
            if audit is not None:
                audit.begin(saved is not None, plan.hash, self.workspace_hash)
                audit.model(self.engine.round_number, self.engine.model_digest)
            if saved is None:
                self._committer.write(self._round_commit())
            elif saved.finished:
                log.info(
                    "the federation saved in %s has finished: collaborators are told so "
                    "(fx aggregator start --fresh runs it again)",
                    self.journal.path,
                )
            else:
                self._replay(saved)
            self._watchers.moved_to(self.engine.epoch)
        self._watch = threading.Thread(target=self._watch_deadlines, name="accord-deadlines", daemon=True)
        self._watch.start()

    # -- AggregatorService -----------------------------------------------------

    def _check(self, collaborator: str, plan_hash: str) -> None:
        self.engine.check_member(collaborator)
        if plan_hash != self.plan.hash:
            raise RefusedError(
                f"collaborator {collaborator!r} has plan hash {shown_hash(plan_hash)}, the aggregator's "
                f"is {shown_hash(self.plan.hash)}: the plans differ",
                "use the same plan.yaml as the aggregator (fx workspace import)",
                kind="plan",
            )

    def _check_workspace(self, collaborator: str, workspace_hash: str) -> None:
        if workspace_hash != self.workspace_hash:
            raise RefusedError(
                f"collaborator {collaborator!r} has workspace hash {shown_hash(workspace_hash)}, the "
                f"aggregator's is {shown_hash(self.workspace_hash)}: its code (src/, requirements.txt) or plan differs",
                "import the federation's workspace archive again (fx workspace import) and compare the "
                "workspace hash it prints with the operator's",
                kind="plan",
            )

    def join(self, collaborator: str, plan_hash: str, workspace_hash: str | None = None) -> FederationInfo:
        """Admit a collaborator whose name is in the plan and whose plan and workspace hashes match.

        ``workspace_hash`` None: the transport carries none (in-process: the same workspace).
        """
        try:
            self._check(collaborator, plan_hash)
            if workspace_hash is not None:
                self._check_workspace(collaborator, workspace_hash)
        except RefusedError as exc:
            log.warning("refused %s at join: %s", collaborator, exc.message)
            raise
        with self._cond:
            log.info("collaborator %s joined (round %d)", collaborator, self.engine.round_number)
            return FederationInfo(
                self.plan.hash, self.engine.rounds_to_train, self.engine.round_number, self.workspace_hash
            )

    def check_member(self, collaborator: str) -> None:
        """Refuse (RefusedError) a name that the plan does not list."""
        self.engine.check_member(collaborator)

    def get_tasks(self, collaborator: str, plan_hash: str, timeout: float) -> TaskAssignment:
        """Tasks for the current round, waiting up to ``timeout`` for a round to open."""
        self._check(collaborator, plan_hash)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                remaining = deadline - time.monotonic()
                assignment = self._assignment_now(collaborator, final=remaining <= 0)
                if assignment is not None:
                    return assignment
                self._cond.wait(remaining)

    def poll_tasks(self, collaborator: str, plan_hash: str, final: bool) -> TaskAssignment | None:
        """The tasks of the current round without waiting: None while it says WAIT, unless ``final``.

        With ``watch`` this lets a server long-poll without holding a thread.
        """
        self._check(collaborator, plan_hash)
        with self._cond:
            return self._assignment_now(collaborator, final)

    def watch(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` whenever a round opens or the federation ends; returns the unsubscribe.

        It is called under the runtime's lock, from whichever thread made the change: it must
        not block (e.g. ``loop.call_soon_threadsafe``).
        """
        with self._cond:
            key = self._watchers.add(listener)
        return lambda: self._unwatch(key)

    def _unwatch(self, key: int) -> None:
        with self._cond:
            self._watchers.remove(key)

    def _assignment_now(self, collaborator: str, final: bool) -> TaskAssignment | None:
        assignment = self.engine.assignment(collaborator)
        if assignment.action is Action.WAIT and not final:
            return None
        if assignment.action is Action.QUIT:
            self._told_to_quit.add(collaborator)
            self._notify()
        return assignment

    def _notify(self) -> None:
        """Wake the runtime's waiters; tell the listeners when the round or the end changed."""
        self._cond.notify_all()
        self._watchers.moved_to(self.engine.epoch)

    def get_model(self, collaborator: str, plan_hash: str, round_number: int) -> ModelState:
        """The global model of the current round (read-only: the engine never mutates it)."""
        self._check(collaborator, plan_hash)
        with self._cond:
            if round_number != self.engine.round_number or self.engine.finished:
                raise RefusedError(
                    f"model of round {round_number} requested, but the current round is "
                    f"{self.engine.round_number}",
                    kind="state",
                )
            return self.engine.model

    def expect(
        self, collaborator: str, plan_hash: str, round_number: int, task: str, model_digest: str, failure: str = ""
    ) -> None:
        """Refuse, before any tensor is received, a result that is not owed now or was not
        computed from this round's global model (its ``model_digest``; a ``failure`` has none)."""
        try:
            self._check(collaborator, plan_hash)
            with self._cond:
                self.engine.check_owed(collaborator, round_number, task, model_digest, bool(failure))
        except RefusedError as exc:
            log.warning("refused result from %s: %s", collaborator, exc.message)
            raise

    def submit(self, result: TaskResult, plan_hash: str) -> None:
        """Take a task result; closes the round (and wakes waiters) when it is the last one.

        Identity and plan hash are checked here, once; whether the result is owed is checked
        by the engine as it takes it (the round may have closed meanwhile). The result is on
        disk before it is acknowledged: its tensors are written outside the lock, then a
        journal record names them once the engine has accepted the result. A result that
        closes a round is acknowledged once its record is: the close's files are the
        committer's; a result of the next round waits here until they are committed.
        """
        staged = None
        try:
            self._check(result.collaborator, plan_hash)
            with self._cond:
                self._check_serving()
            staged = self.journal.stage(result)
            kept = self.journal.view(staged)
            if kept is not None:  # the engine reads the tensors from their saved file
                result = replace(result, tensors=kept)
            with self._cond:
                self._wait_committed()
                self._check_serving()
                phased = self.engine.in_phases
                outcome = self._take(result, kept)
                self._result_log.took(result)
                # a multi-phase round journals no result (its phases folded what they keep): a
                # restart runs its phases again, with a fresh round seed
                if not result.failure and not phased:  # recorded even when it closes the round: a rollback replays it
                    self._persist(lambda: self._record(result, staged))
                    staged = None
                if outcome is not None:
                    self._persist(functools.partial(self._finish_round, outcome, self._committer.hand))
                elif result.failure and not phased:  # for the status only: after a restart the site owes its tasks again
                    self._persist(lambda: self.journal.add_failure(result.collaborator))
        except RefusedError as exc:
            log.warning("refused result from %s: %s", result.collaborator, exc.message)
            raise
        finally:
            self.journal.discard(staged)

    def _record(self, result: TaskResult, staged: str | None) -> None:
        """Journal an accepted result, then chain it in the audit trail (a kill between the two:
        the replay chains it)."""
        self.journal.add_result(result, staged)
        if self._audit is not None:
            self._audit.result(result)

    def _take(self, result: TaskResult, kept: StateView | None) -> RoundOutcome | None:
        """``engine.submit``; if closing the round fails (an update's file unreadable, memory
        short), the aggregator stops as on a failed save: a restart closes the round again."""
        try:
            return self.engine.submit(result, kept)
        except RefusedError:
            raise
        except Exception as exc:
            raise self._stop(exc, f"the aggregator could not close round {self.engine.round_number} and stops") from exc

    def _stop(self, exc: Exception, what: str) -> AccordError:
        """Record why the aggregator stops serving (it stops taking results) and log it."""
        failure = exc if isinstance(exc, AccordError) else AccordError(f"{exc!r}")
        self._failure = AccordError(
            f"{what}: {failure.message}",
            "fix the cause (disk full? permissions?) and start it again: it resumes from the last saved point",
        )
        log.error("%s", self._failure)
        self._notify()
        return self._failure

    def _wait_committed(self) -> None:
        """Wait (under the lock) until the last closed round's files are committed, or the
        aggregator stops."""
        while self._committer.busy and self._failure is None and not self._closed:
            self._cond.wait()

    def _commit_failed(self, exc: Exception) -> None:
        self._stop(exc, "the aggregator could not save its state and stops")

    def _check_serving(self) -> None:
        if self._closed or self._failure is not None:
            raise RefusedError("the aggregator is stopping; its saved state is where a restart resumes", kind="state")

    def _persist(self, action: Callable[[], None]) -> None:
        """Run ``action`` (saving state, closing a round); if it fails, the aggregator stops.

        The engine has already moved on in memory, so serving on would drift from the saved
        state; a restart resumes from the last state that was saved.
        """
        try:
            action()
        except Exception as exc:
            raise self._stop(exc, "the aggregator could not save its state and stops") from exc
        finally:
            self._notify()

    def upload_slot(self) -> AbstractContextManager[None]:
        """Bounds how many updates are buffered at once (memory O(model), not O(collaborators))."""
        return _Slot(self._uploads)

    def receiving(self, collaborator: str, round_number: int, task: str) -> StagedFile:
        """The file an upload's tensors are written to as they arrive (aggregator/staging.py)."""
        return self.journal.receiving(self.expected_tensors(), f"the {task} result of {collaborator} for round {round_number}")

    def expected_tensors(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        """name -> (dtype, shape) of the tensors a result may carry now: the global model's, or
        in a multi-phase round the training reply's (secure aggregation's masked update)."""
        with self._cond:
            return self.engine.expected_tensors()

    # -- lifecycle --------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.engine.finished

    def wait_until_done(self, quit_grace: float = 10.0, timeout: float | None = None) -> bool:
        """Block until all rounds ran, then up to ``quit_grace`` s for every collaborator to hear QUIT.

        Raises the RoundDeadlineError of a round that reached its deadline with too few reports.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self.engine.finished or self._committer.busy:  # the end committed too
                if self._failure is not None:
                    raise self._failure
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
            grace_end = time.monotonic() + quit_grace
            everyone = set(self.engine.collaborators)
            while not everyone <= self._told_to_quit and time.monotonic() < grace_end:
                self._cond.wait(grace_end - time.monotonic())
        return True

    def close(self) -> None:
        """Stop taking results, commit the last closed round, stop the deadline watcher (the
        saved state stays for a restart)."""
        with self._cond:
            self._closed = True
            self._notify()
        self._committer.stop()
        self._watch.join()
        self.journal.close()
        if self._shamir is not None:
            self._shamir.close()
        if self._audit is not None:
            with self._cond:
                try:
                    self._audit.close()
                except OSError as exc:  # the saved state is whole: a restart seals the chain
                    log.error("the audit trail %s could not be sealed at stop: %s", self._audit.path, exc)

    def _watch_deadlines(self) -> None:
        """Apply the straggler policy at each wake-up, then sleep until the open round's next
        cut-off or deadline. Every change (a result in, a round opened) notifies ``_cond``, so
        the watcher never sleeps past the earliest pending deadline, whatever round it is."""
        with self._cond:
            while not self._closed and self._failure is None:
                if self._committer.busy:  # the open round's policy applies once it is saved
                    self._cond.wait()
                    continue
                try:
                    outcome = self.engine.tick()
                    if outcome is not None:
                        self._persist(functools.partial(self._finish_round, outcome, self._committer.hand))
                        continue
                except AccordError as exc:
                    if self._failure is None:
                        log.error("%s", exc)
                        self._failure = exc
                    self._notify()
                    return
                except Exception as exc:  # closing the round failed (see _take)
                    self._stop(exc, f"the aggregator could not close round {self.engine.round_number} and stops")
                    return
                due = self.engine.next_deadline()
                if due is None:
                    return
                self._cond.wait(max(due - self.engine.clock(), 0.0))

    def _replay(self, saved: SavedRound) -> None:
        """Feed the saved results of the open round back into the engine, in their order."""
        names = [f"{r['collaborator']}/{r['task']}" for r in saved.results]
        log.info(
            "resuming round %d from %s with %d results already received%s",
            saved.round_number,
            self.journal.path,
            len(names),
            f" ({', '.join(names)})" if names else "",
        )
        for entry, result in zip(saved.results, saved.received()):
            # each was checked against this round's model when it came
            stamped = replace(result, model_digest=self.engine.model_digest)
            outcome = self.engine.submit(stamped, self.journal.view(entry["tensors"]))
            if self._audit is not None:
                self._audit.result(result, replay=True)
            if outcome is not None:
                self._finish_round(outcome, self._committer.write)
        if self.engine.round_number == saved.round_number:  # not closed by the replay
            self.journal.mark_resumed()

    def _round_commit(self, outcome: RoundOutcome | None = None) -> RoundCommit:
        """The open round's start with the strategy's state (or that the federation finished),
        and, after ``outcome``, the ``last`` and ``best`` model files to publish with it."""
        engine, settings = self.engine, self.settings
        links = {}
        if outcome is not None:
            links[self.plan.resolve_path(settings.last_state_path)] = True  # outcome.model is engine.model
            if outcome.best_model is not None:  # the new model, or the one the round validated
                links[self.plan.resolve_path(settings.best_state_path)] = outcome.best_model is outcome.model
        status = RoundStatus(engine, self._opened_at, self._stragglers, self._bounded)
        return RoundCommit(
            engine.round_number, engine.model, engine.best_score, status.data, engine.strategy_state, engine.finished, links
        )

    def _finish_round(self, outcome: RoundOutcome, commit: Callable[[RoundCommit], None]) -> None:
        """Report a closed round (its metrics are written by the engine's sink) and have
        ``commit`` save the next one's start with the models (the committer's ``hand``, or its
        ``write`` at once while replaying)."""
        self._stragglers = outcome.stragglers
        self._bounded = report_closed(self.engine, outcome)
        self._opened_at = time.time()
        if self._audit is not None:  # the next round's model, and the chain's head signed
            self._audit.model(self.engine.round_number, self.engine.model_digest)
            self._audit.seal()
        commit(self._round_commit(outcome))


class _Slot(AbstractContextManager[None]):
    def __init__(self, semaphore: threading.BoundedSemaphore) -> None:
        self._semaphore = semaphore

    def __enter__(self) -> None:
        self._semaphore.acquire()

    def __exit__(self, *exc: object) -> None:
        self._semaphore.release()
