"""Multi-phase rounds in the pure engine (Strategy.phased): who owes what in each phase, the
per-phase straggler clock and threshold, payloads both ways, and single-phase rounds unchanged."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from test_engine import TASKS, FakeClock, make_engine

from accord.aggregator.events import PhaseOpened
from accord.aggregator.round_policy import RoundDeadlineError
from accord.aggregator.stragglers import StragglerPolicy
from accord.errors import RefusedError
from accord.messages import Action, TaskResult
from accord.strategies.base import Strategy
from accord.strategies.seam import Aggregate, RoundContext

NAMES = ("a", "b", "c")


class EchoPhases:
    """Two phases before the tasks and one after: ``hello`` and ``roster`` take bytes, ``tasks``
    takes each site's update (as one float vector), ``close`` takes bytes; the result is the
    plain mean of the updates of the sites that replied in ``close``."""

    names = ("hello", "roster", "tasks", "close")
    tasks_phase = "tasks"

    def __init__(self, context: RoundContext, threshold: int) -> None:
        self.context, self.threshold = context, threshold
        self.began: list[tuple[str, tuple[str, ...]]] = []
        self.taken: dict[str, dict[str, bytes]] = {}
        self.updates: dict[str, np.ndarray] = {}

    def begin(self, phase, members):
        self.began.append((phase, members))

    def min_replies(self, phase, members):
        return self.threshold

    def can_close(self, phase):
        return True

    def excused(self, phase):
        return {}

    def checkpoint(self, phase):
        return None

    def resume(self, phase, state):
        raise RefusedError("no checkpoints", kind="state")

    def payload(self, phase, collaborator):
        return f"{phase}:{collaborator}".encode()

    def tensor_specs(self, phase):
        return {"vector": ("float64", (2,))} if phase == "tasks" else {}

    def take(self, phase, collaborator, payload, tensors, weight):
        if payload == b"bad":
            raise RefusedError("bad payload", kind="payload")
        self.taken.setdefault(phase, {})[collaborator] = payload
        if tensors is not None:
            self.updates[collaborator] = np.asarray(tensors["vector"])

    def result(self):
        closing = self.taken.get("close", {})
        mean = np.mean([self.updates[c] for c in closing], axis=0)
        return Aggregate({"w": np.full((2, 2), mean[0], np.float32), "b": np.full(2, mean[1], np.float32)})


class Phased(Strategy):
    def __init__(self, threshold: int = 2) -> None:
        self.threshold = threshold
        self.rounds: list[EchoPhases] = []

    def phased(self, context):
        self.rounds.append(EchoPhases(context, self.threshold))
        return self.rounds[-1]


def reply(engine, name, phase, task=None, payload=b"", tensors=None, n=0, failure=""):
    return engine.submit(
        TaskResult(name, engine.round_number, task or phase, n, {}, tensors, model_digest=engine.model_digest,
                   phase=phase, payload=payload, failure=failure)
    )


def tasks_phase(engine, name, value):
    engine.submit(TaskResult(name, engine.round_number, "aggregated_model_validation", 5, {"accuracy": 0.5},
                             model_digest=engine.model_digest, phase="tasks"))
    engine.submit(TaskResult(name, engine.round_number, "train", 5, {}, {"vector": np.array([value, -value])},
                             model_digest=engine.model_digest, phase="tasks"))
    return engine.submit(TaskResult(name, engine.round_number, "locally_tuned_model_validation", 5, {"accuracy": 0.5},
                                    model_digest=engine.model_digest, phase="tasks"))


def test_a_phased_round_runs_each_phase_for_the_previous_ones_repliers() -> None:
    strategy = Phased()
    engine = make_engine(NAMES, rounds=1, strategy=strategy)
    events = []
    engine.events.subscribe(events.append)
    phases = strategy.rounds[0]
    assert engine.in_phases and engine.current.phase == "hello"
    given = engine.assignment("a")
    assert given.action is Action.RUN and given.phase == "hello" and given.payload == b"hello:a"
    assert [t.name for t in given.tasks] == ["hello"]
    assert engine.expected_tensors() == {}  # a reply of this phase carries no tensors
    for name in NAMES:
        assert reply(engine, name, "hello", payload=name.encode()) is None
    assert engine.current.phase == "roster" and engine.epoch == (0, "roster", False)
    reply(engine, "a", "roster", payload=b"x")
    assert engine.assignment("a").action is Action.WAIT  # it owes nothing more in this phase
    reply(engine, "b", "roster", payload=b"y")
    reply(engine, "c", "roster", payload=b"z")
    assert engine.current.phase == "tasks"
    given = engine.assignment("b")
    assert given.phase == "tasks" and [t.name for t in given.tasks] == list(TASKS) and given.payload == b"tasks:b"
    assert engine.expected_tensors() == {"vector": ("float64", (2,))}
    for name, value in zip(NAMES, (1.0, 2.0, 6.0)):
        tasks_phase(engine, name, value)
    assert engine.current.phase == "close"
    reply(engine, "a", "close", payload=b"1")
    reply(engine, "b", "close", payload=b"2")
    outcome = reply(engine, "c", "close", payload=b"3")
    assert outcome is not None and outcome.stragglers == ()
    np.testing.assert_allclose(outcome.model["w"], 3.0)
    np.testing.assert_allclose(outcome.model["b"], -3.0)
    assert outcome.metrics["aggregated_model_validation/accuracy"] == pytest.approx(0.5)
    assert [b[0] for b in phases.began] == ["hello", "roster", "tasks", "close"]
    assert [e.phase for e in events if isinstance(e, PhaseOpened)] == ["roster", "tasks", "close", ]


def test_a_site_late_in_one_phase_is_left_out_of_the_next_under_the_cutoff() -> None:
    """cutoff_time applies to each phase from its opening; a site that missed a phase owes
    nothing in the later ones, and its late reply is refused."""
    clock = FakeClock()
    policy = StragglerPolicy("cutoff_time", cutoff_seconds=5.0, min_reports=1)
    strategy = Phased(threshold=2)
    engine = make_engine(NAMES, rounds=1, strategy=strategy, clock=clock, policy=policy)
    reply(engine, "a", "hello")
    reply(engine, "b", "hello")
    clock.now = 4.0
    reply(engine, "c", "hello")  # the roster phase opens at 4 s
    clock.now = 8.0  # past the round's first 5 s, not 5 s into the roster phase
    reply(engine, "a", "roster")
    reply(engine, "b", "roster")
    assert engine.tick() is None and engine.current.phase == "roster"  # c may still come
    assert engine.next_deadline() == pytest.approx(9.0)
    clock.now = 9.5
    assert engine.tick() is None  # the roster phase ended at its cut-off: the tasks phase opened
    assert engine.current.phase == "tasks"
    assert engine.current.members == ("a", "b")
    assert engine.assignment("c").action is Action.WAIT
    with pytest.raises(RefusedError, match=r"not assigned or was already received"):
        reply(engine, "c", "roster")
    opened = clock.now
    tasks_phase(engine, "a", 1.0)
    tasks_phase(engine, "b", 3.0)
    assert engine.current.phase == "close" and engine.current.phase_opened_at == opened
    reply(engine, "a", "close")
    outcome = reply(engine, "b", "close")
    assert outcome is not None and outcome.stragglers == ("c",)
    np.testing.assert_allclose(outcome.model["w"], 2.0)


def test_a_phase_with_fewer_members_than_its_threshold_fails_the_round_at_the_tick() -> None:
    clock = FakeClock()
    policy = StragglerPolicy("cutoff_time", cutoff_seconds=5.0, min_reports=1, round_deadline_seconds=60.0)
    engine = make_engine(NAMES, rounds=1, strategy=Phased(threshold=3), clock=clock, policy=policy)
    reply(engine, "a", "hello")
    reply(engine, "b", "hello")
    reply(engine, "c", "hello", failure="its task failed")
    assert engine.current.phase == "hello"  # nobody owes anything more, but 2 < 3: it never ends
    with pytest.raises(RoundDeadlineError, match=r"phase 'hello' of round 0 cannot close .* \(at least 3 needed\); c failed"):
        engine.tick()


def test_phase_replies_are_refused_when_malformed_misplaced_or_carrying_data() -> None:
    engine = make_engine(NAMES, rounds=1, strategy=Phased())
    with pytest.raises(RefusedError, match="bad payload"):
        reply(engine, "a", "hello", payload=b"bad")
    with pytest.raises(RefusedError, match="is in phase 'hello'"):
        reply(engine, "a", "roster", task="hello")
    with pytest.raises(RefusedError, match="carries its payload only"):
        engine.submit(TaskResult("a", 0, "hello", 0, {"loss": 1.0}, model_digest=engine.model_digest, phase="hello"))
    with pytest.raises(RefusedError, match="carries its payload only"):  # its tensor_specs("hello") name none
        reply(engine, "a", "hello", tensors={"vector": np.zeros(2)})
    with pytest.raises(RefusedError, match="another model"):
        engine.submit(TaskResult("a", 0, "hello", 0, {}, model_digest="0" * 64, phase="hello"))
    reply(engine, "a", "hello")
    with pytest.raises(RefusedError, match="already received"):
        reply(engine, "a", "hello")


def test_a_single_phase_round_refuses_a_payload_and_is_unchanged() -> None:
    engine = make_engine(NAMES, rounds=1)
    assert not engine.in_phases and engine.current.phase == "train" and engine.assignment("a").payload == b""
    with pytest.raises(RefusedError, match="takes none"):
        engine.submit(
            TaskResult("a", 0, "aggregated_model_validation", 5, {"accuracy": 0.5}, model_digest=engine.model_digest, payload=b"x")
        )
    assert engine.expected_tensors() == {"w": ("float32", (2, 2)), "b": ("float32", (2,))}


def test_the_final_validation_round_has_one_phase() -> None:
    strategy = Phased()
    engine = make_engine(("a", "b"), rounds=1, strategy=strategy, final_validation=True)
    for name in ("a", "b"):
        reply(engine, name, "hello")
    for name in ("a", "b"):
        reply(engine, name, "roster")
    for name, value in (("a", 1.0), ("b", 2.0)):
        tasks_phase(engine, name, value)
    reply(engine, "a", "close")
    reply(engine, "b", "close")
    assert engine.round_number == 1 and not engine.in_phases and engine.current.phase == "train"
    assert len(strategy.rounds) == 1
    assert dataclasses.asdict(engine.assignment("a"))["phase"] == "train"
