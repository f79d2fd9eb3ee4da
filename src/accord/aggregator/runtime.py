"""AggregatorRuntime: the thread-safe service around the pure RoundEngine.

It checks plan hashes, wakes long-polling collaborators when a round opens, bounds
concurrent uploads, logs metrics and writes the init/best/last model files. Both the
gRPC server and the in-process transport serve this same object.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import AbstractContextManager
from typing import Callable

from accord.aggregator.engine import RoundEngine, RoundOutcome
from accord.aggregator.metrics import MetricRecord, MetricsLog
from accord.errors import RefusedError
from accord.messages import Action, FederationInfo, TaskAssignment, TaskResult
from accord.plan.loader import Plan
from accord.plan.objects import build
from accord.tensors.state import ModelState, load_state, save_state

log = logging.getLogger("accord.aggregator")


class AggregatorRuntime:
    """Serves one federation described by ``plan``; see module docstring."""

    def __init__(
        self,
        plan: Plan,
        model: ModelState | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_round: Callable[[RoundOutcome], None] | None = None,
    ) -> None:
        self.plan = plan
        settings = plan.model.aggregator.settings
        self.settings = settings
        collaborators = plan.model.collaborators
        if not collaborators:
            raise RefusedError(
                "the plan lists no collaborators",
                "add names under `collaborators:` in the plan (fx collaborator certify does it)",
                kind="identity",
            )
        assigner_section = plan.model.assigner
        assigner = build(
            "assigner",
            assigner_section.template,
            assigner_section.settings.model_dump(),
            plan.workspace,
            collaborators=collaborators,
        )
        initial = model if model is not None else load_state(plan.resolve_path(settings.init_state_path))
        self.engine = RoundEngine(
            collaborators=collaborators,
            tasks=plan.model.tasks.settings,
            assigner=assigner,
            rounds_to_train=settings.rounds_to_train,
            model=initial,
            clock=clock,
            best_metric=settings.best_metric,
            maximize=settings.best_direction == "maximize",
            final_validation=settings.final_validation,
            delta_updates=plan.model.collaborator.settings.delta_updates,
        )
        self.metrics_log = MetricsLog(plan.resolve_path(settings.metrics_path))
        self.on_round = on_round
        self._cond = threading.Condition()
        self._uploads = threading.BoundedSemaphore(settings.max_concurrent_uploads)
        self._told_to_quit: set[str] = set()

    # -- AggregatorService -----------------------------------------------------

    def _check(self, collaborator: str, plan_hash: str) -> None:
        self.engine.check_member(collaborator)
        if plan_hash != self.plan.hash:
            raise RefusedError(
                f"collaborator {collaborator!r} has plan hash {plan_hash[:16]}..., the aggregator's "
                f"is {self.plan.hash[:16]}...: the plans differ",
                "use the same plan.yaml as the aggregator (fx workspace import)",
                kind="plan",
            )

    def join(self, collaborator: str, plan_hash: str) -> FederationInfo:
        """Admit a collaborator whose name is in the plan and whose plan hash matches."""
        try:
            self._check(collaborator, plan_hash)
        except RefusedError as exc:
            log.warning("refused %s at join: %s", collaborator, exc.message)
            raise
        with self._cond:
            log.info("collaborator %s joined (round %d)", collaborator, self.engine.round_number)
            return FederationInfo(self.plan.hash, self.engine.rounds_to_train, self.engine.round_number)

    def get_tasks(self, collaborator: str, plan_hash: str, timeout: float) -> TaskAssignment:
        """Tasks for the current round, waiting up to ``timeout`` for a round to open."""
        self._check(collaborator, plan_hash)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                assignment = self.engine.assignment(collaborator)
                remaining = deadline - time.monotonic()
                if assignment.action is not Action.WAIT or remaining <= 0:
                    break
                self._cond.wait(remaining)
            if assignment.action is Action.QUIT:
                self._told_to_quit.add(collaborator)
                self._cond.notify_all()
            return assignment

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

    def expect(self, collaborator: str, plan_hash: str, round_number: int, task: str) -> None:
        """Refuse, before any tensor is received, a result that is not owed now."""
        try:
            self._check(collaborator, plan_hash)
            with self._cond:
                self.engine.expect(collaborator, round_number, task)
        except RefusedError as exc:
            log.warning("refused result from %s: %s", collaborator, exc.message)
            raise

    def submit(self, result: TaskResult, plan_hash: str) -> None:
        """Take a task result; closes the round (and wakes waiters) when it is the last one."""
        try:
            self._check(result.collaborator, plan_hash)
            with self._cond:
                outcome = self.engine.submit(result)
                self._log_result(result)
                if outcome is not None:
                    try:
                        self._finish_round(outcome)
                    finally:
                        self._cond.notify_all()
        except RefusedError as exc:
            log.warning("refused result from %s: %s", result.collaborator, exc.message)
            raise

    def upload_slot(self) -> AbstractContextManager[None]:
        """Bounds how many updates are buffered at once (memory O(model), not O(collaborators))."""
        return _Slot(self._uploads)

    def expected_tensors(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        """name -> (dtype, shape) of the global model."""
        return {name: (str(t.dtype), tuple(t.shape)) for name, t in self.engine.model.items()}

    # -- lifecycle --------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.engine.finished

    def wait_until_done(self, quit_grace: float = 10.0, timeout: float | None = None) -> bool:
        """Block until all rounds ran, then up to ``quit_grace`` s for every collaborator to hear QUIT."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self.engine.finished:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
            grace_end = time.monotonic() + quit_grace
            everyone = set(self.engine.collaborators)
            while not everyone <= self._told_to_quit and time.monotonic() < grace_end:
                self._cond.wait(grace_end - time.monotonic())
        return True

    # -- reporting --------------------------------------------------------------

    def _log_result(self, result: TaskResult) -> None:
        shown = "  ".join(f"{k}={v:.4f}" for k, v in result.metrics.items())
        log.info(
            "round %d  %-12s %-32s %s  (n=%d, %.2fs)",
            result.round_number,
            result.collaborator,
            result.task,
            shown,
            result.sample_count,
            result.task_seconds,
        )

    def _finish_round(self, outcome: RoundOutcome) -> None:
        settings = self.settings
        save_state(self.plan.resolve_path(settings.last_state_path), outcome.model)
        if outcome.best_model is not None:
            save_state(self.plan.resolve_path(settings.best_state_path), outcome.best_model)
        timing = {"round_seconds": outcome.wall_seconds, "overhead_seconds": outcome.overhead_seconds}
        records = list(outcome.records)
        records += [MetricRecord(outcome.round_number, "aggregator", *key.split("/", 1), value) for key, value in outcome.metrics.items()]
        records += [MetricRecord(outcome.round_number, "aggregator", "round", k, v) for k, v in timing.items()]
        self.metrics_log.write(records)
        shown = "  ".join(f"{k}={v:.4f}" for k, v in sorted(outcome.metrics.items()))
        best = f"  new best {settings.best_metric}={outcome.best_score:.4f}" if outcome.best_model is not None else ""
        label = (
            "final validation of the last model"
            if self.engine.is_final_validation(outcome.round_number)
            else f"round {outcome.round_number} of {self.engine.rounds_to_train}"
        )
        log.info(
            "%s done in %.3fs (overhead %.3fs): %s%s",
            label,
            outcome.wall_seconds,
            outcome.overhead_seconds,
            shown,
            best,
        )
        if self.on_round is not None:
            self.on_round(outcome)


class _Slot(AbstractContextManager[None]):
    def __init__(self, semaphore: threading.BoundedSemaphore) -> None:
        self._semaphore = semaphore

    def __enter__(self) -> None:
        self._semaphore.acquire()

    def __exit__(self, *exc: object) -> None:
        self._semaphore.release()
