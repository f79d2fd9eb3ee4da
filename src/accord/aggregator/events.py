"""What the round engine announces: a round opened, a result accepted or failed, a round closed.

Sinks subscribe to these (metrics files, logs, and later TensorBoard, MLflow, Prometheus); the
engine calls them synchronously, in order, from whichever thread drove it (the runtime's,
under its lock), so a sink must be quick and must not call back into the engine. The events
are plain values: a sink cannot change the engine's state through them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from accord.aggregation.bounds import BoundEvent
from accord.metric_records import MetricRecord
from accord.tensors.state import ModelState


@dataclass
class RoundOutcome:
    """What closing a round produced: the new model, its metrics and timings."""

    round_number: int
    model: ModelState
    metrics: dict[str, float]
    records: Sequence[MetricRecord]
    best_model: ModelState | None
    best_score: float | None
    wall_seconds: float
    slowest_task_seconds: float
    stragglers: tuple[str, ...] = ()
    #: what the update bounds did: counts capped, updates clipped, refused or dropped
    bounds: tuple[BoundEvent, ...] = ()
    failed: tuple[str, ...] = ()

    @property
    def overhead_seconds(self) -> float:
        """Round wall time minus the slowest collaborator's task time: the framework's own cost."""
        return max(self.wall_seconds - self.slowest_task_seconds, 0.0)


@dataclass(frozen=True)
class RoundOpened:
    """Round ``round_number`` opened: whom it asks (``cohort``) and the strategy's config."""

    round_number: int
    cohort: tuple[str, ...]
    config: dict[str, bool | int | float | str] = field(default_factory=dict)
    final_validation: bool = False


@dataclass(frozen=True)
class ResultAccepted:
    """One task result was accepted (its metrics as the site reported them)."""

    round_number: int
    collaborator: str
    task: str
    sample_count: int
    metrics: dict[str, float]


@dataclass(frozen=True)
class ResultFailed:
    """A site reported that its task failed; it owes nothing more this round."""

    round_number: int
    collaborator: str
    reason: str


@dataclass(frozen=True)
class PhaseOpened:
    """Phase ``phase`` of a multi-phase round opened for ``members`` (Strategy.phased)."""

    round_number: int
    phase: str
    members: tuple[str, ...]


@dataclass(frozen=True)
class RoundClosed:
    """A round closed with ``outcome`` (the engine has already opened the next one)."""

    outcome: RoundOutcome


EngineEvent = RoundOpened | PhaseOpened | ResultAccepted | ResultFailed | RoundClosed
Sink = Callable[[EngineEvent], None]


class EventBus:
    """The engine's subscribers, called in the order they subscribed."""

    def __init__(self) -> None:
        self._sinks: dict[int, Sink] = {}
        self._next = 0

    def subscribe(self, sink: Sink) -> Callable[[], None]:
        """Call ``sink`` with every event from now on; returns the unsubscribe."""
        key, self._next = self._next, self._next + 1
        self._sinks[key] = sink

        def unsubscribe() -> None:
            self._sinks.pop(key, None)

        return unsubscribe

    def emit(self, event: EngineEvent) -> None:
        for sink in list(self._sinks.values()):
            sink(event)
