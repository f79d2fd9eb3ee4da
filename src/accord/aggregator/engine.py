"""The aggregator's round state machine: pure (no sockets, threads or sleeps; time is injected)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from accord.aggregation.bounds import UNBOUNDED, BoundEvent, UpdateBounds
from accord.aggregator.assigner import Assigner
from accord.aggregator.cohort import cohort_tasks
from accord.aggregator.events import EventBus, PhaseOpened, ResultFailed, RoundClosed, RoundOpened, RoundOutcome
from accord.aggregator.open_round import OpenRound
from accord.aggregator.owed import ExcusedRefusal, check_member, check_owed
from accord.aggregator.phase_checkpoint import PhaseCheckpoint, checkpoint_of, resume_phase
from accord.aggregator.result_checks import check_report, check_result, measured_against
from accord.aggregator.round_policy import deadline_error, decide
from accord.aggregator.stragglers import Decision, StragglerPolicy
from accord.aggregator.weighted_metrics import WeightedMetrics
from accord.errors import RefusedError
from accord.messages import Action, Task, TaskAssignment, TaskResult
from accord.plan.round_settings import TaskSpec
from accord.strategies.base import Strategy
from accord.strategies.fedavg import FedAvg
from accord.strategies.seam import EVERYONE, Aggregate, ClientSampling, RoundContext
from accord.tensors.digest import model_digest
from accord.tensors.space import MEMORY, TensorSpace
from accord.tensors.state import ModelState, all_finite, tensor_specs


class RoundEngine:
    """Runs ``rounds_to_train`` rounds: assigns tasks, takes results, aggregates, judges the best.

    Everything is decided here; adapters (gRPC service, in-process transport) only move
    messages and persist what an outcome says. A round closes when everyone assigned has
    reported, or earlier as the straggler ``policy`` allows (``submit`` and ``tick`` ask it).
    """

    def __init__(
        self,
        *,
        collaborators: Sequence[str],
        tasks: Mapping[str, TaskSpec],
        assigner: Assigner,
        rounds_to_train: int,
        model: ModelState,
        clock: Callable[[], float],
        best_metric: str = "aggregated_model_validation/accuracy",
        maximize: bool = True,
        strategy: Strategy | None = None,
        bounds: UpdateBounds = UNBOUNDED,
        sampling: ClientSampling = EVERYONE,
        round_number: int = 0,
        best_score: float | None = None,
        final_validation: bool = True,
        delta_updates: bool | None = None,
        policy: StragglerPolicy | None = None,
        space: TensorSpace = MEMORY,
        resume: PhaseCheckpoint | None = None,
    ) -> None:
        self.collaborators = tuple(collaborators)
        self._members = frozenset(self.collaborators)
        self.tasks = dict(tasks)
        self.assigner = assigner
        self.rounds_to_train = rounds_to_train
        self.model = model
        self.clock = clock
        self.best_metric = best_metric
        self.maximize = maximize
        self.best_score = best_score
        self.delta_updates = delta_updates
        self.strategy = strategy or FedAvg()
        self.bounds = bounds
        self.sampling = sampling
        #: where each round's strategy writes the models it computes (tensors/space.py)
        self.space = space
        self.policy = policy or StragglerPolicy()
        self.round_number = round_number
        self.total_rounds = rounds_to_train + (1 if final_validation else 0)
        #: subscribe sinks here (aggregator/events.py); round ``round_number`` opens before any can
        self.events = EventBus()
        self._round: OpenRound | None = None
        #: why the strategy stopped training early (a privacy budget spent), if it did
        self.stopped: str | None = None
        #: the strategy's state as of the open round's start, before its ``select`` and
        #: ``configure`` ran (a restart restores it and runs them again): what the runtime saves
        self.strategy_state = self.strategy.snapshot()
        #: where the first round resumes its phases (a restart's; None: from the first phase)
        self._resume = resume
        self._open_round(round_number)

    # -- queries ---------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """All training rounds (and the final validation of the last model, if planned) are done."""
        return self.round_number >= self.total_rounds

    def is_final_validation(self, round_number: int) -> bool:
        """Round ``rounds_to_train``, when planned, only validates the last model; it trains nothing."""
        return self.rounds_to_train <= round_number < self.total_rounds

    @property
    def current(self) -> OpenRound | None:
        """The open round (None once finished); read-only use."""
        return self._round

    def reported(self) -> list[str]:
        """Collaborators assigned to the open round who have sent all their results (a site
        whose task failed owes nothing more but has not reported). O(collaborators): for a
        status shown at round boundaries; the policy uses the open round's ``reported_count``."""
        return [] if self._round is None else self._round.reported()

    @property
    def epoch(self) -> tuple[int, str, bool]:
        """(round, open phase, finished): what changes when a long-polling site may have new work."""
        return self.round_number, "" if self._round is None else self._round.phase, self.finished

    @property
    def in_phases(self) -> bool:
        """Whether the open round runs phases beyond ``train`` (Strategy.phased)."""
        return self._round is not None and self._round.phases is not None

    def expected_tensors(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        """name -> (dtype, shape) of the tensors a result may carry now: the global model's, or
        those of a reply in the open round's phase (RoundPhases.tensor_specs)."""
        current = self._round
        if current is not None and current.phases is not None:
            return dict(current.phases.tensor_specs(current.phase))
        return tensor_specs(self.model)

    @property
    def model_digest(self) -> str:
        """Digest of the open round's global model, which each of its results must carry."""
        return "" if self._round is None else self._round.model_digest

    def next_deadline(self) -> float | None:
        """Clock time of the open round's next cut-off or deadline still ahead (its
        ``opened_at`` plus that mark; now, once both passed); None when finished."""
        current = self._round
        if current is None:
            return None
        now = self.clock()
        return now + self.policy.next_check(now - current.phase_opened_at)

    def check_member(self, collaborator: str) -> None:
        """Refuse a name that the plan does not list."""
        check_member(self._members, collaborator)

    def assignment(self, collaborator: str) -> TaskAssignment:
        """What ``collaborator`` should do now: RUN its outstanding tasks, WAIT, or QUIT."""
        self.check_member(collaborator)
        if self.finished or self._round is None:
            return TaskAssignment(Action.QUIT, self.round_number)
        current = self._round
        names = current.outstanding.get(collaborator)
        if not names:
            return TaskAssignment(Action.WAIT, self.round_number)
        phases = current.phases
        if phases is None or current.phase == phases.tasks_phase:
            tasks = tuple(
                Task(n, self.tasks[n].function, dict(self.tasks[n].kwargs), self.tasks[n].returns_model)
                for n in names
            )
        else:  # a phase beyond the tasks: one reply named as the phase
            tasks = (Task(current.phase, "phase"),)
        payload = b"" if phases is None else phases.payload(current.phase, collaborator)
        return TaskAssignment(Action.RUN, self.round_number, tasks, dict(current.config), current.phase, payload)

    # -- commands --------------------------------------------------------------

    def expect(
        self, collaborator: str, round_number: int, task: str, model_digest: str, failure: bool = False
    ) -> list[str]:
        """Refuse a result from a name the plan does not list, or one ``check_owed`` refuses;
        returns the collaborator's outstanding tasks."""
        self.check_member(collaborator)
        return self.check_owed(collaborator, round_number, task, model_digest, failure)

    def check_owed(
        self, collaborator: str, round_number: int, task: str, model_digest: str, failure: bool = False
    ) -> list[str]:
        """Refuse a result that is not owed now, or not computed from this round's global model
        (aggregator/owed.py); returns the collaborator's outstanding tasks."""
        return check_owed(self._round, self.round_number, self._members, collaborator, round_number, task, model_digest, failure)

    def submit(self, result: TaskResult, stored: Mapping | None = None) -> RoundOutcome | None:
        """Take one task result; returns the outcome when it completes the round.

        What may have changed since the result was admitted is checked again (``check_owed``:
        the round may have closed, the task been received meanwhile); identity is the
        caller's check, once, where the result came in.

        ``stored`` is the same tensors as the aggregation should keep them until the round
        closes (a lazy view of the saved copy); by default ``result.tensors``. A result
        reporting a ``failure`` at the site ends that collaborator's part in the round: it
        owes nothing more and counts as not reported (what it sent before stays). A phase reply
        refused whose sender the round's phases then excuse (RoundPhases.excused) ends its part
        too: ExcusedRefusal carries the outcome, if that closed the round.
        """
        owed = self.check_owed(
            result.collaborator, result.round_number, result.task, result.model_digest, bool(result.failure)
        )
        current = self._round
        assert current is not None
        if result.phase != current.phase:
            raise RefusedError(
                f"result from {result.collaborator} is for phase {result.phase[:32]!r} of round {current.number}, "
                f"which is in phase {current.phase!r}",
                kind="state",
            )
        if result.failure:
            if result.tensors or result.metrics or result.payload:
                raise RefusedError(f"result from {result.collaborator} reports a failure but carries data", kind="payload")
            current.take_failure(result.collaborator, result.failure, owed)
            self.events.emit(ResultFailed(current.number, result.collaborator, result.failure))
            return self._apply_policy(may_fail=False)
        phases = current.phases
        if phases is not None and current.phase != phases.tasks_phase:
            try:
                current.take_phase_reply(phases, result, owed)
            except RefusedError as exc:
                why = phases.excused(current.phase).get(result.collaborator)
                if why is None:
                    raise
                current.take_failure(result.collaborator, why, owed)
                self.events.emit(ResultFailed(current.number, result.collaborator, why))
                raise ExcusedRefusal(exc, self._apply_policy(may_fail=False)) from exc
            return self._apply_policy(may_fail=False)
        if result.payload and phases is None:
            raise RefusedError(
                f"result from {result.collaborator} carries a phase payload, but phase {current.phase!r} takes none",
                kind="payload",
            )
        spec = self.tasks[result.task]
        if phases is not None and spec.returns_model:  # the masked update: the phases fold it, not an accumulator
            check_report(result)
            phases.take(current.phase, result.collaborator, result.payload, result.tensors, float(result.sample_count))
        else:
            check_result(result, spec, self.model, self.delta_updates)
        fold = spec.returns_model and phases is None
        measured = measured_against(result, self.model) if fold else None
        norms = None if measured is None else measured.norms
        self.events.emit(current.take_result(result, owed, fold, stored, norms))
        return self._apply_policy(may_fail=False)

    def tick(self) -> RoundOutcome | None:
        """Apply the straggler policy to the time elapsed; the outcome if that closed the round.

        Raises RoundDeadlineError when the round's deadline passed with too few reports.
        """
        return None if self._round is None else self._apply_policy(may_fail=True)

    def _apply_policy(self, may_fail: bool) -> RoundOutcome | None:
        """Close the round if the policy says so; a failed deadline is raised by ``tick`` only,
        so a result that just came is acknowledged (it is saved) before the aggregator stops."""
        current = self._round
        assert current is not None
        decision, unready = decide(current, self.policy, self.clock())
        if decision is Decision.CLOSE:
            return self._end_phase(current)
        if decision is Decision.FAIL and may_fail:
            raise deadline_error(current, self.policy, unready)
        return None

    # -- internals -------------------------------------------------------------

    def _open_round(self, number: int) -> None:
        while number < self.total_rounds:
            outstanding = self._cohort_tasks(number)
            assigned = tuple(c for c, names in outstanding.items() if names)
            context = RoundContext(number, self.model, self.bounds, assigned, len(self.collaborators), self.space)
            if assigned and (self.is_final_validation(number) or not self._stops(context)):
                break
            number = self.round_number = max(number + 1, self.rounds_to_train) if self.stopped else number + 1
        if number >= self.total_rounds:
            self._round = None
            return
        final = self.is_final_validation(number)
        config = {} if final else self.strategy.checked_config(number)
        opened_at = self.clock()
        self._round = current = OpenRound(
            number=number,
            opened_at=opened_at,
            outstanding=outstanding,
            assigned=assigned,
            model_digest=model_digest(self.model, number),
            metrics=WeightedMetrics(self.bounds.sample_count_multiple),
            context=context,
            accumulator=self.strategy.accumulator(context),
            config=config,
            min_replies=self.strategy.min_replies(len(assigned)),
            phases=None if final else self.strategy.phased(context),
            phase_opened_at=opened_at,
            members=assigned,
            tasks=outstanding,
        )
        self.events.emit(RoundOpened(number, assigned, dict(config), final))
        if current.phases is not None:
            self.events.emit(self._resumed(current) or current.begin_phase(0, assigned, self.clock()))

    def phase_checkpoint(self) -> PhaseCheckpoint | None:
        """The open phase's checkpoint (RoundPhases.checkpoint) with what the round took so far
        (RoundTally: its metrics, records, failures), to save before serving it; None when its
        round's phases keep none."""
        current = self._round
        if current is None or current.phases is None:
            return None
        state = current.phases.checkpoint(current.phase)
        return None if state is None else checkpoint_of(current, state)

    def _resumed(self, current: OpenRound) -> PhaseOpened | None:
        """Open the phase a restart's checkpoint names, if it fits this round; else None."""
        saved, self._resume = self._resume, None
        return None if saved is None else resume_phase(current, saved, self.strategy, self.clock())

    def _end_phase(self, current: OpenRound) -> RoundOutcome | None:
        """The open phase ends (the policy said so): the next phase opens with those who
        replied, or, after the last one, the round closes."""
        phases = current.phases
        if phases is None or current.phase_index + 1 >= len(phases.names):
            return self._close_round()
        self.events.emit(current.next_phase(self.clock()))
        return self._apply_policy(may_fail=False)

    def _stops(self, context: RoundContext) -> bool:
        """Whether the strategy stops training before this round (``stopped`` says why)."""
        self.stopped = self.strategy.stop_reason(context)
        return self.stopped is not None

    def _cohort_tasks(self, number: int) -> dict[str, list[str]]:
        return cohort_tasks(
            number,
            collaborators=self.collaborators,
            assigner=self.assigner,
            strategy=self.strategy,
            sampling=self.sampling,
            tasks=self.tasks,
            final_validation=self.is_final_validation(number),
        )

    def _close_round(self) -> RoundOutcome:
        current = self._round
        assert current is not None
        previous = self.model
        if self.is_final_validation(current.number):  # nothing trained: the strategy takes no step
            aggregate = Aggregate(previous)
        else:
            aggregate = current.accumulator.result() if current.phases is None else current.phases.result()
            self.model = self._finished(current, aggregate)
        self.strategy_state = self.strategy.snapshot()
        aggregated = current.metrics.means()
        if not self.is_final_validation(current.number):
            aggregated.update(self.strategy.report())
        best_model, best_score = self._judge_best(aggregated, previous)
        outcome = RoundOutcome(
            round_number=current.number,
            model=self.model,
            metrics=aggregated,
            records=current.records,
            best_model=best_model,
            best_score=best_score,
            wall_seconds=self.clock() - current.opened_at,
            slowest_task_seconds=current.slowest_task_seconds(),
            stragglers=current.stragglers(),
            bounds=tuple(aggregate.events),
            failed=tuple(sorted(current.failed)),
        )
        self.round_number += 1
        self._open_round(self.round_number)
        self.events.emit(RoundClosed(outcome))
        return outcome

    def _finished(self, current: OpenRound, aggregate: Aggregate) -> ModelState:
        """The strategy's next model; the round's input model, with an event, if a float tensor
        of it is not finite (a server step can overflow where the mean did not)."""
        model = self.strategy.finish(current.context, aggregate)
        for name, tensor in model.items():
            array = np.asarray(tensor)
            if array.dtype.kind == "f" and not all_finite(array):
                detail = f"its step made tensor {name!r} non-finite: the round's input model is kept"
                aggregate.events.append(BoundEvent(f"strategy {type(self.strategy).__name__}", "held", 0.0, 0.0, detail))
                return self.model
        return model

    def _judge_best(self, aggregated: dict[str, float], previous: ModelState) -> tuple[ModelState | None, float | None]:
        score = aggregated.get(self.best_metric)
        if score is None:
            return None, None
        improved = self.best_score is None or (score > self.best_score if self.maximize else score < self.best_score)
        if not improved:
            return None, None
        self.best_score = score
        task = self.best_metric.split("/")[0]
        judged_global = self.tasks[task].validates_global
        return (previous if judged_global else self.model), score
