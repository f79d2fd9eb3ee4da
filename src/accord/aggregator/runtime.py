"""AggregatorRuntime: the thread-safe service around the pure RoundEngine.

It checks plan hashes (aggregator/hash_checks.py), wakes long-polling collaborators when a
round opens, bounds concurrent uploads, subscribes the metrics sinks to the engine's events
(``sinks``: more of them; ``record_sinks`` get each closed round's records, with the bytes
``traffic`` counted), writes the best/last model files (aggregator/publishing.py), applies the
straggler policy's deadlines (aggregator/deadlines.py) and journals its state
(aggregator/journal.py) so that a restart resumes the open round: each result is on disk
before it is acknowledged; a closed round's files are written after, by the committer thread
(aggregator/committer.py). Built from the plan by aggregator/startup.py. Both the gRPC server
and the in-process transport serve this same object. ``pooled_masks``: a secure round's masks
expanded over worker processes (aggregator/mask_pool.py), which only the serving CLI asks for.
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

from accord.aggregation.bounds import StreamedChecks
from accord.aggregator import phase_checkpoint
from accord.aggregator.committer import Committer
from accord.aggregator.deadlines import watch_deadlines
from accord.aggregator.events import PhaseOpened, RoundOutcome, Sink
from accord.aggregator.hash_checks import check_plan_hash, check_workspace_hash
from accord.aggregator.owed import ExcusedRefusal
from accord.aggregator.publishing import RoundPublisher
from accord.aggregator.reporting import RecordSink, ResultLog, log_stop
from accord.aggregator.serving_state import Serving
from accord.aggregator.staging import StagedFile
from accord.aggregator.startup import open_logs, start_engine
from accord.aggregator.watch import Watchers
from accord.errors import AccordError, RefusedError
from accord.messages import Action, FederationInfo, TaskAssignment, TaskResult
from accord.plan.loader import Plan
from accord.tensors.state import ModelState, StateView, tensor_specs

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
        pooled_masks: bool = False,
    ) -> None:
        self.plan = plan
        settings = plan.model.aggregator.settings
        self.settings = settings
        started = start_engine(plan, model, clock, fresh, verify_sites, pooled_masks)
        self.engine, self.journal, saved = started.engine, started.journal, started.saved
        self._masks = started.masks
        self.workspace_hash = started.workspace_hash
        #: metrics.jsonl, and logs/events.jsonl (fx dashboard): the engine's events, and refusals (the gRPC server's on_refusal)
        self.metrics_log, self.event_log = open_logs(plan, started, traffic, record_sinks, sinks)
        self._cond = threading.Condition()
        self._uploads = threading.BoundedSemaphore(settings.max_concurrent_uploads)
        self._told_to_quit: set[str] = set()
        self._model_specs: tuple[ModelState, dict[str, tuple[str, tuple[int, ...]]]] | None = None  # expected_tensors'
        self._publisher = RoundPublisher(plan, self.engine, self.journal, audit)
        self._serving = Serving(self._notify)
        self._watchers = Watchers()
        self._result_log = ResultLog()
        self._committer = Committer(self._cond, self.journal, self._serving.save_failed)
        self.engine.events.subscribe(self._checkpoint_phase)
        if self.engine.stopped:  # before round 0: a target epsilon that no round fits
            log_stop(self.engine.stopped)
        self._audit = audit  # the signed chain of what was accepted (accord/audit/; the deployment's)
        with self._cond:
            if audit is not None:
                audit.begin(saved is not None, plan.hash, self.workspace_hash)
                audit.model(self.engine.round_number, self.engine.model_digest)
            if saved is None:
                self._committer.write(self._publisher.commit())
            elif saved.finished:
                log.info(
                    "the federation saved in %s has finished: collaborators are told so "
                    "(fx aggregator start --fresh runs it again)",
                    self.journal.path,
                )
            else:
                self._publisher.replay(saved, self._committer.write)
            self._watchers.moved_to(self.engine.epoch)
        self._watch = threading.Thread(
            target=watch_deadlines,
            args=(self._cond, self.engine, self._committer, lambda: self._serving.on, self._close_round, self._halt),
            name="accord-deadlines",
            daemon=True,
        )
        self._watch.start()

    # -- AggregatorService -----------------------------------------------------

    def _check(self, collaborator: str, plan_hash: str) -> None:
        self.engine.check_member(collaborator)
        check_plan_hash(collaborator, plan_hash, self.plan.hash)

    def join(self, collaborator: str, plan_hash: str, workspace_hash: str | None = None) -> FederationInfo:
        """Admit a collaborator whose name is in the plan and whose plan and workspace hashes match.

        ``workspace_hash`` None: the transport carries none (in-process: the same workspace).
        """
        try:
            self._check(collaborator, plan_hash)
            if workspace_hash is not None:
                check_workspace_hash(collaborator, workspace_hash, self.workspace_hash)
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
                self._serving.check()
            measured = result.tensors.measured() if isinstance(result.tensors, StagedFile) else None
            staged = self.journal.stage(result)
            kept = self.journal.view(staged)
            if kept is not None:  # the engine reads the tensors from their saved file
                result = replace(result, tensors=kept, measured=measured)
            with self._cond:
                self._wait_committed()
                self._serving.check()
                phased = self.engine.in_phases
                try:
                    outcome = self._take(result, kept)
                except ExcusedRefusal as exc:  # refused, but excusing its sender may close the round
                    if exc.outcome is not None:
                        self._close_round(exc.outcome)
                    raise
                self._result_log.took(result)
                # a multi-phase round journals no result (its phases folded what they keep): a
                # restart resumes from its phase checkpoint (secure: unmask), else runs its phases again
                if not result.failure and not phased:  # recorded even when it closes the round: a rollback replays it
                    self._serving.persist(lambda: self._record(result, staged))
                    staged = None
                if outcome is not None:
                    self._close_round(outcome)
                elif result.failure and not phased:  # for the status only: after a restart the site owes its tasks again
                    self._serving.persist(lambda: self.journal.add_failure(result.collaborator))
        except RefusedError as exc:
            log.warning("refused result from %s: %s", result.collaborator, exc.message)
            raise
        finally:
            self.journal.discard(staged)

    def _checkpoint_phase(self, event: object) -> None:
        """As a phase opens (under the lock, before it is served), save its checkpoint, if its
        round's phases keep one (secure aggregation's unmask: aggregator/phase_checkpoint.py)."""
        if isinstance(event, PhaseOpened):
            checkpoint = self.engine.phase_checkpoint()
            if checkpoint is not None:
                self._serving.persist(lambda: phase_checkpoint.save(self.journal.directory, checkpoint))

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
            raise self._serving.close_failed(exc, self.engine.round_number) from exc

    def _close_round(self, outcome: RoundOutcome) -> None:
        """Report the round ``outcome`` closed and hand its files to the committer."""
        self._serving.persist(functools.partial(self._publisher.finish, outcome, self._committer.hand))

    def _halt(self, exc: Exception) -> None:
        """The deadline watcher's end: a round past its deadline, or a close that failed."""
        if isinstance(exc, AccordError):
            self._serving.halt(exc)
        else:
            self._serving.close_failed(exc, self.engine.round_number)

    def _wait_committed(self) -> None:
        """Wait (under the lock) until the last closed round's files are committed, or the
        aggregator stops."""
        while self._committer.busy and self._serving.on:
            self._cond.wait()

    def upload_slot(self) -> AbstractContextManager[None]:
        """Bounds how many updates are buffered at once (memory O(model), not O(collaborators))."""
        return _Slot(self._uploads)

    def receiving(self, collaborator: str, round_number: int, task: str, is_delta: bool = False) -> StagedFile:
        """The file an upload's tensors are written to as they arrive (aggregator/staging.py); an
        update of the global model's tensors is measured as it arrives (``StreamedChecks``)."""
        with self._cond:
            specs, model = self.engine.expected_tensors(), self.engine.model
        checks = StreamedChecks(model, is_delta) if specs == tensor_specs(model) else None
        return self.journal.receiving(specs, f"the {task} result of {collaborator} for round {round_number}", checks)

    def expected_tensors(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        """name -> (dtype, shape) of the tensors a result may carry now: the global model's, or
        in a multi-phase round those of the open phase's replies (RoundPhases.tensor_specs:
        secure aggregation's masked update, a signed round's correction in unmask). The
        global model's are worked out once per model (asked for by every result of its round)."""
        with self._cond:
            if self.engine.in_phases:
                return self.engine.expected_tensors()
            model = self.engine.model
            if self._model_specs is None or self._model_specs[0] is not model:
                self._model_specs = (model, self.engine.expected_tensors())
            return dict(self._model_specs[1])

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
                if self._serving.failure is not None:
                    raise self._serving.failure
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
            self._serving.closed = True
            self._notify()
        self._committer.stop()
        self._watch.join()
        self.journal.close()
        if self._masks is not None:
            self._masks.close()
        if self._audit is not None:
            with self._cond:
                try:
                    self._audit.close(finished=self.finished)
                except OSError as exc:  # the saved state is whole: a restart seals the chain
                    log.error("the audit trail %s could not be sealed at stop: %s", self._audit.path, exc)


class _Slot(AbstractContextManager[None]):
    def __init__(self, semaphore: threading.BoundedSemaphore) -> None:
        self._semaphore = semaphore

    def __enter__(self) -> None:
        self._semaphore.acquire()

    def __exit__(self, *exc: object) -> None:
        self._semaphore.release()
