"""The aggregator's round state machine: pure (no sockets, threads or sleeps; time is injected)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from accord.aggregation.bounds import UNBOUNDED, BoundEvent, UpdateBounds
from accord.aggregator.assigner import Assigner, uniform_tasks
from accord.aggregator.events import EventBus, PhaseOpened, ResultAccepted, ResultFailed, RoundClosed, RoundOpened, RoundOutcome
from accord.aggregator.metrics import MetricRecord, WeightedMetrics
from accord.aggregator.result_checks import check_report, check_result, measured_against
from accord.aggregator.stragglers import Decision, StragglerPolicy
from accord.errors import AccordError, RefusedError
from accord.messages import Action, ConfigValue, Task, TaskAssignment, TaskResult
from accord.plan.schema import TaskSpec
from accord.strategies.base import Strategy
from accord.strategies.fedavg import FedAvg
from accord.strategies.seam import EVERYONE, Accumulator, Aggregate, ClientSampling, Reply, RoundContext, RoundPhases
from accord.tensors.digest import model_digest
from accord.tensors.space import MEMORY, TensorSpace
from accord.tensors.state import ModelState, all_finite, tensor_specs


class RoundDeadlineError(AccordError):
    """A round reached its deadline with fewer reports than the straggler policy's minimum."""


@dataclass
class _Round:
    number: int
    opened_at: float
    outstanding: dict[str, list[str]]  # the cohort's owed tasks: O(cohort), not O(members)
    #: what the strategy knows of the round, and the accumulator folding its replies
    context: RoundContext
    accumulator: Accumulator
    assigned: tuple[str, ...] = ()
    #: digest of this round's global model (tensors/digest.py); a result must carry it
    model_digest: str = ""
    #: collaborator -> why its task failed at its site (it owes nothing more this round)
    failed: dict[str, str] = field(default_factory=dict)
    #: how many assigned collaborators have sent all their results (kept per result: O(1))
    reported_count: int = 0
    metrics: WeightedMetrics = field(default_factory=WeightedMetrics)
    records: list[MetricRecord] = field(default_factory=list)
    task_seconds: dict[str, float] = field(default_factory=dict)
    #: the strategy's config for the round
    config: dict[str, ConfigValue] = field(default_factory=dict)
    #: the round's open phase: ``train``, or one of ``phases.names``
    phase: str = "train"
    #: replies the strategy (or the open phase) needs: the straggler policy's min_reports is raised to it
    min_replies: int = 1
    #: the phases beyond ``train`` (Strategy.phased), None for a single-phase round
    phases: RoundPhases | None = None
    phase_index: int = 0
    #: when the open phase opened (the straggler policy's clock: per phase)
    phase_opened_at: float = 0.0
    #: who takes part in the open phase (the cohort, then each phase's repliers)
    members: tuple[str, ...] = ()
    #: how many of the open phase's members reported a failure (``reported_count``: replied)
    phase_failed: int = 0
    #: the cohort's tasks, owed in the tasks phase of a multi-phase round
    tasks: dict[str, list[str]] = field(default_factory=dict)
    #: members a phase ended without (a multi-phase round's stragglers)
    dropped: set[str] = field(default_factory=set)


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
        self._round: _Round | None = None
        #: why the strategy stopped training early (a privacy budget spent), if it did
        self.stopped: str | None = None
        #: the strategy's state as of the open round's start, before its ``select`` and
        #: ``configure`` ran (a restart restores it and runs them again): what the runtime saves
        self.strategy_state = self.strategy.snapshot()
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
    def current(self) -> _Round | None:
        """The open round (None once finished); read-only use."""
        return self._round

    def reported(self) -> list[str]:
        """Collaborators assigned to the open round who have sent all their results (a site
        whose task failed owes nothing more but has not reported). O(collaborators): for a
        status shown at round boundaries; the policy uses the open round's ``reported_count``."""
        current = self._round
        if current is None:
            return []
        return [c for c in current.assigned if not current.outstanding.get(c) and c not in current.failed]

    @property
    def epoch(self) -> tuple[int, str, bool]:
        """(round, open phase, finished): what changes when a long-polling site may have new work."""
        return self.round_number, "" if self._round is None else self._round.phase, self.finished

    @property
    def in_phases(self) -> bool:
        """Whether the open round runs phases beyond ``train`` (Strategy.phased)."""
        return self._round is not None and self._round.phases is not None

    def expected_tensors(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        """name -> (dtype, shape) of the tensors a result may carry now: the global model's, or the
        open round's phases' training reply's (RoundPhases.tensor_specs)."""
        current = self._round
        if current is not None and current.phases is not None:
            return dict(current.phases.tensor_specs())
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
        if collaborator not in self._members:
            raise RefusedError(
                f"collaborator {collaborator!r} is not in the plan's collaborators list",
                "have the federation operator add it (fx collaborator certify) and share the plan",
                kind="identity",
            )

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
        """Refuse a result that is not owed now, or (unless it reports a ``failure``, which
        carries no update) was not computed from this round's global model (``model_digest``:
        tensors/digest.py); returns the collaborator's outstanding tasks.

        Membership is the caller's admission check (``check_member``), not repeated here: a
        name the plan does not list has no entry in the round, and is refused as at admission.
        """
        current = self._round
        if round_number < self.round_number:
            now = "the federation has finished" if current is None else f"the current round is {current.number}"
            raise RefusedError(
                f"result from {collaborator} for {task[:64]!r} of round {round_number} came after that "
                f"round closed ({now}): dropped, unless an earlier copy was received in time",
                "nothing to do: the collaborator goes on with the current round",
                kind="state",
            )
        if current is None or round_number != current.number:
            raise RefusedError(
                f"result from {collaborator} is for round {round_number}, "
                f"but the current round is {self.round_number}",
                kind="state",
            )
        owed = current.outstanding.get(collaborator)
        if owed is None:  # a member outside the round's cohort (or a name the plan does not list)
            self.check_member(collaborator)
            owed = []
        if task not in owed:
            raise RefusedError(
                f"result from {collaborator} for task {task[:64]!r} of round "
                f"{round_number} was not assigned or was already received",
                kind="state",
            )
        if not failure and model_digest != current.model_digest:
            raise RefusedError(
                f"result from {collaborator} for {task[:64]!r} of round {round_number} was computed from "
                f"another model (digest {model_digest[:16]!r}) than this round's global model (digest "
                f"{current.model_digest[:16]}...): a replayed or stale result, dropped",
                "nothing to do for an honest collaborator: it fetches this round's model again "
                "(the aggregator may have rolled back to an earlier saved state)",
                kind="state",
            )
        return owed

    def submit(self, result: TaskResult, stored: Mapping | None = None) -> RoundOutcome | None:
        """Take one task result; returns the outcome when it completes the round.

        What may have changed since the result was admitted is checked again (``check_owed``:
        the round may have closed, the task been received meanwhile); identity is the
        caller's check, once, where the result came in.

        ``stored`` is the same tensors as the aggregation should keep them until the round
        closes (a lazy view of the saved copy); by default ``result.tensors``. A result
        reporting a ``failure`` at the site ends that collaborator's part in the round: it
        owes nothing more and counts as not reported (what it sent before stays).
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
            current.failed[result.collaborator] = result.failure
            current.phase_failed += 1
            owed.clear()
            self.events.emit(ResultFailed(current.number, result.collaborator, result.failure))
            return self._apply_policy(may_fail=False)
        phases = current.phases
        if phases is not None and current.phase != phases.tasks_phase:
            return self._take_phase_reply(current, phases, result, owed)
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
        if spec.returns_model and phases is None:
            assert result.tensors is not None
            measured = measured_against(result, self.model)
            norms = None if measured is None else measured.norms
            current.accumulator.add(Reply(result.collaborator, result.tensors, float(result.sample_count), result.is_delta, stored, norms))
        for metric, value in result.metrics.items():
            current.metrics.add(result.task, metric, value, result.sample_count)
            current.records.append(
                MetricRecord(current.number, result.collaborator, result.task, metric, value)
            )
        owed.remove(result.task)
        self.events.emit(ResultAccepted(current.number, result.collaborator, result.task, result.sample_count, dict(result.metrics)))
        if not owed:
            current.reported_count += 1
        current.task_seconds[result.collaborator] = (
            current.task_seconds.get(result.collaborator, 0.0) + max(result.task_seconds, 0.0)
        )
        return self._apply_policy(may_fail=False)

    def _take_phase_reply(self, current: _Round, phases: RoundPhases, result: TaskResult, owed: list[str]) -> RoundOutcome | None:
        """A reply of a phase beyond the tasks: bytes only, folded by the round's phases."""
        if result.tensors or result.metrics:
            raise RefusedError(
                f"result from {result.collaborator} for phase {current.phase!r} carries tensors or metrics; "
                "a phase reply carries its payload only",
                kind="payload",
            )
        phases.take(current.phase, result.collaborator, result.payload, None, 0.0)
        owed.clear()
        current.reported_count += 1
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
        reported, members = current.reported_count, len(current.members)
        decision = self.policy.decide(
            self.clock() - current.phase_opened_at, reported, members, current.phase_failed, current.min_replies
        )
        if current.phases is not None and members < current.min_replies:  # a phase cannot reach its threshold
            decision = Decision.FAIL
        unready = decision is Decision.CLOSE and current.phases is not None and not current.phases.can_close(current.phase)
        if unready:  # the phase's replies do not let it end yet: wait for the others until nobody owes more or the deadline
            owing = any(current.outstanding.get(c) for c in current.members)
            timely = self.clock() - current.phase_opened_at < self.policy.round_deadline_seconds
            decision = Decision.WAIT if owing and timely else Decision.FAIL
        if decision is Decision.CLOSE:
            return self._end_phase(current)
        if decision is Decision.FAIL and may_fail:
            waiting = sorted(c for c in current.members if current.outstanding.get(c))
            failed = "; ".join(f"{c} failed: {why}" for c, why in sorted(current.failed.items()))
            when = (
                f"reached its deadline of {self.policy.round_deadline_seconds:g} s"
                if waiting
                else "cannot close (nobody owes anything more)"
            )
            needed = current.min_replies if current.phases is not None else self.policy.needed(members, current.min_replies)
            where = f"phase {current.phase!r} of round {current.number}" if current.phases is not None else f"round {current.number}"
            raise RoundDeadlineError(
                f"{where} {when} with {reported} of {members} reports "
                f"(at least {needed} needed)"
                + (f"; still waiting for {', '.join(waiting)}" if waiting else "")
                + (f"; {failed}" if failed else "")
                + ("; its replies do not let the phase end (secure aggregation: too few reveals to unmask)" if unready else ""),
                "bring the missing collaborators back (fix the failed ones) and restart the aggregator "
                "(it resumes this round), or lower straggler_handling_policy.settings.min_reports",
            )
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
        self._round = current = _Round(
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
            self._begin_phase(current, 0, assigned)

    def _begin_phase(self, current: _Round, index: int, members: tuple[str, ...]) -> None:
        """Open phase ``index`` of a multi-phase round for ``members``: in the tasks phase each
        owes its tasks, in any other one reply named as the phase."""
        phases = current.phases
        assert phases is not None
        name = phases.names[index]
        phases.begin(name, members)  # first: if it refuses, the round stays in the phase it was in
        current.phase_index, current.phase, current.members = index, name, members
        current.outstanding = {c: list(current.tasks[c]) if name == phases.tasks_phase else [name] for c in members}
        current.reported_count = current.phase_failed = 0
        current.phase_opened_at = self.clock()
        current.min_replies = phases.min_replies(name, len(members))
        self.events.emit(PhaseOpened(current.number, name, members))

    def _end_phase(self, current: _Round) -> RoundOutcome | None:
        """The open phase ends (the policy said so): the next phase opens with those who
        replied, or, after the last one, the round closes."""
        phases = current.phases
        if phases is None or current.phase_index + 1 >= len(phases.names):
            return self._close_round()
        late = [c for c in current.members if current.outstanding.get(c)]
        replied = tuple(c for c in current.members if not current.outstanding.get(c) and c not in current.failed)
        self._begin_phase(current, current.phase_index + 1, replied)
        current.dropped.update(late)
        return self._apply_policy(may_fail=False)

    def _stops(self, context: RoundContext) -> bool:
        """Whether the strategy stops training before this round (``stopped`` says why)."""
        self.stopped = self.strategy.stop_reason(context)
        return self.stopped is not None

    def _cohort_tasks(self, number: int) -> dict[str, list[str]]:
        """The tasks of round ``number`` of the strategy's cohort of those the assigner gives tasks
        (all of them in the final validation); drawn from the members themselves, in O(cohort),
        when the assigner gives everyone the same tasks (``uniform_tasks``)."""
        shared = None if self.is_final_validation(number) else uniform_tasks(self.assigner, number)
        if shared is not None:
            return {c: list(shared) for c in self.strategy.select(number, self.collaborators if shared else (), self.sampling)}
        outstanding = {c: names for c in self.collaborators if (names := self._tasks_of(c, number))}
        if self.is_final_validation(number):
            return outstanding
        cohort = frozenset(self.strategy.select(number, list(outstanding), self.sampling))
        return {c: names for c, names in outstanding.items() if c in cohort}

    def _tasks_of(self, collaborator: str, number: int) -> list[str]:
        names = list(self.assigner.tasks_for(collaborator, number))
        if self.is_final_validation(number):
            names = [n for n in names if self.tasks[n].validates_global]
        return names

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
            slowest_task_seconds=max(current.task_seconds.values(), default=0.0),
            stragglers=tuple(c for c in current.assigned if current.outstanding.get(c) or c in current.dropped),
            bounds=tuple(aggregate.events),
            failed=tuple(sorted(current.failed)),
        )
        self.round_number += 1
        self._open_round(self.round_number)
        self.events.emit(RoundClosed(outcome))
        return outcome

    def _finished(self, current: _Round, aggregate: Aggregate) -> ModelState:
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
