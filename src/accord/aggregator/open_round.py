"""The open round's state (pure): who owes what, what came in, and its phases' progress."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from accord.aggregator.events import PhaseOpened, ResultAccepted
from accord.aggregator.weighted_metrics import WeightedMetrics
from accord.errors import RefusedError
from accord.messages import ConfigValue, TaskResult
from accord.metric_records import RoundRecords
from accord.strategies.seam import Accumulator, Reply, RoundContext, RoundPhases


@dataclass
class OpenRound:
    """One round while it is open; the engine (aggregator/engine.py) changes it, others read it."""

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
    #: the sites' metric records, as columns (metric_records.RoundRecords: ~20 bytes a record)
    records: RoundRecords = field(init=False)
    #: task seconds summed per collaborator that still owes a task; those done are folded into
    #: ``slowest_done`` as they finish, so what is kept is O(collaborators owing), not O(cohort)
    task_seconds: dict[str, float] = field(default_factory=dict)
    slowest_done: float = 0.0
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

    def __post_init__(self) -> None:
        self.records = RoundRecords(self.number)

    def slowest_task_seconds(self) -> float:
        """The most task seconds any collaborator spent in the round (those owing still: so far)."""
        return max([self.slowest_done, *self.task_seconds.values()])

    def reported(self) -> list[str]:
        """Assigned collaborators who have sent all their results. O(collaborators)."""
        return [c for c in self.assigned if not self.outstanding.get(c) and c not in self.failed]

    def owing(self) -> list[str]:
        """The open phase's members who still owe something, in their order."""
        return [c for c in self.members if self.outstanding.get(c)]

    def stragglers(self) -> tuple[str, ...]:
        """Assigned collaborators the round closes without (owing, or dropped by a phase)."""
        return tuple(c for c in self.assigned if self.outstanding.get(c) or c in self.dropped)

    def begin_phase(self, index: int, members: tuple[str, ...], now: float) -> PhaseOpened:
        """Open phase ``index`` of a multi-phase round for ``members``: in the tasks phase each
        owes its tasks, in any other one reply named as the phase. Returns the event to announce."""
        phases = self.phases
        assert phases is not None
        name = phases.names[index]
        phases.begin(name, members)  # first: if it refuses, the round stays in the phase it was in
        self.phase_index, self.phase, self.members = index, name, members
        self.outstanding = {c: list(self.tasks[c]) if name == phases.tasks_phase else [name] for c in members}
        self.reported_count = self.phase_failed = 0
        self.phase_opened_at = now
        self.min_replies = phases.min_replies(name, len(members))
        return PhaseOpened(self.number, name, members)

    def next_phase(self, now: float) -> PhaseOpened:
        """End the open phase: the next opens with those who replied; those who did not are dropped."""
        late = self.owing()
        replied = tuple(c for c in self.members if not self.outstanding.get(c) and c not in self.failed)
        opened = self.begin_phase(self.phase_index + 1, replied, now)
        self.dropped.update(late)
        return opened

    def take_failure(self, collaborator: str, failure: str, owed: list[str]) -> None:
        """A site's task failed: it owes nothing more this round."""
        self.failed[collaborator] = failure
        self.phase_failed += 1
        owed.clear()

    def take_phase_reply(self, phases: RoundPhases, result: TaskResult, owed: list[str]) -> None:
        """A reply of a phase beyond the tasks: bytes, and the tensors the phase takes if any
        (RoundPhases.tensor_specs), folded by the round's phases."""
        takes_tensors = bool(phases.tensor_specs(self.phase))
        if result.metrics or (result.tensors and not takes_tensors):
            carried = "its payload and the tensors its phase names only" if takes_tensors else "its payload only"
            raise RefusedError(
                f"result from {result.collaborator} for phase {self.phase!r} carries tensors or metrics; a phase reply carries {carried}",
                kind="payload",
            )
        phases.take(self.phase, result.collaborator, result.payload, result.tensors or None, 0.0)
        owed.clear()
        self.reported_count += 1

    def take_result(
        self, result: TaskResult, owed: list[str], fold: bool, stored: Mapping | None, norms: Mapping[str, float] | None = None
    ) -> ResultAccepted:
        """Record a checked task result (its update folded by the accumulator if ``fold``, with the
        change norms measured as it arrived when given); returns the event to announce."""
        if fold:
            assert result.tensors is not None
            self.accumulator.add(Reply(result.collaborator, result.tensors, float(result.sample_count), result.is_delta, stored, norms))
        for metric, value in result.metrics.items():
            self.metrics.add(result.task, metric, value, result.sample_count)
            self.records.add(result.collaborator, result.task, metric, value)
        owed.remove(result.task)
        seconds = self.task_seconds.pop(result.collaborator, 0.0) + max(result.task_seconds, 0.0)
        if owed:
            self.task_seconds[result.collaborator] = seconds
        else:
            self.reported_count += 1
            self.slowest_done = max(self.slowest_done, seconds)
        return ResultAccepted(self.number, result.collaborator, result.task, result.sample_count, dict(result.metrics))
