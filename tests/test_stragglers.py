"""Straggler policies: pure decisions, and the engine closing rounds without the late."""

from __future__ import annotations

import numpy as np
import pytest
from test_engine import FakeClock, full_round, honest, make_engine, result

from accord.aggregator.round_policy import RoundDeadlineError
from accord.aggregator.stragglers import Decision, StragglerPolicy
from accord.errors import PlanError, RefusedError
from accord.messages import Action, TaskResult
from accord.plan.loader import validate_plan

CUTOFF = StragglerPolicy("cutoff_time", cutoff_seconds=10.0, min_reports=2, round_deadline_seconds=100.0)


@pytest.mark.parametrize(
    "policy, elapsed, reported, assigned, expected",
    [
        (StragglerPolicy(), 5.0, 3, 3, Decision.CLOSE),
        (StragglerPolicy(), 5.0, 2, 3, Decision.WAIT),
        (StragglerPolicy(round_deadline_seconds=60), 60.0, 1, 3, Decision.CLOSE),
        (StragglerPolicy(round_deadline_seconds=60), 60.0, 0, 3, Decision.FAIL),
        (CUTOFF, 9.9, 2, 3, Decision.WAIT),
        (CUTOFF, 10.0, 2, 3, Decision.CLOSE),
        (CUTOFF, 50.0, 1, 3, Decision.WAIT),
        (CUTOFF, 100.0, 1, 3, Decision.FAIL),
        (CUTOFF, 10.0, 1, 1, Decision.CLOSE),  # min_reports is capped by the assigned count
        (StragglerPolicy("percentage", percentage=0.5), 0.0, 1, 4, Decision.WAIT),
        (StragglerPolicy("percentage", percentage=0.5), 0.0, 2, 4, Decision.CLOSE),
        (StragglerPolicy("percentage", percentage=0.5, min_reports=3), 0.0, 2, 4, Decision.WAIT),
    ],
)
def test_policy_decisions(policy, elapsed, reported, assigned, expected) -> None:
    assert policy.decide(elapsed, reported, assigned) is expected


def test_next_check_points_at_the_cutoff_then_the_deadline() -> None:
    assert CUTOFF.next_check(0.0) == 10.0
    assert CUTOFF.next_check(12.0) == 88.0


def engine_with(policy, names=("a", "b", "c"), rounds=2):
    clock = FakeClock()
    engine = make_engine(collaborators=names, rounds=rounds, clock=clock)
    engine.policy = policy
    return engine, clock


def test_cutoff_closes_the_round_without_the_straggler_who_then_gets_the_next_round() -> None:
    engine, clock = engine_with(CUTOFF)
    assert full_round(engine, {"a": (1.0, 1), "b": (3.0, 3)}) is None
    honest(engine, result("c", "aggregated_model_validation", 0, 5, {"accuracy": 0.1}))
    clock.now = 9.0
    assert engine.tick() is None
    assert engine.next_deadline() == 10.0
    clock.now = 10.0
    outcome = engine.tick()
    assert outcome is not None and outcome.stragglers == ("c",)
    np.testing.assert_allclose(outcome.model["w"], 2.5)  # c's train never came: not averaged
    assert outcome.metrics["aggregated_model_validation/accuracy"] == pytest.approx((0.5 * 4 + 0.1 * 5) / 9)
    with pytest.raises(RefusedError, match="came after that round closed") as late:
        honest(engine, result("c", "train", 0, 5, {}, {"w": np.ones((2, 2), np.float32), "b": np.ones(2, np.float32)}))
    assert late.value.kind == "state"
    assert engine.assignment("c").action is Action.RUN and engine.assignment("c").round_number == 1


def test_percentage_closes_on_the_report_that_reaches_it() -> None:
    engine, _ = engine_with(StragglerPolicy("percentage", percentage=0.6), names=("a", "b", "c", "d"))
    assert full_round(engine, {"a": (1.0, 1), "b": (1.0, 1)}) is None
    outcome = full_round(engine, {"c": (4.0, 2)})
    assert outcome is not None and outcome.stragglers == ("d",)
    assert engine.round_number == 1


def test_a_deadline_with_too_few_reports_fails_with_who_is_missing() -> None:
    engine, clock = engine_with(StragglerPolicy(min_reports=2, round_deadline_seconds=30.0))
    full_round(engine, {"a": (1.0, 1)})
    clock.now = 30.0
    with pytest.raises(RoundDeadlineError, match=r"1 of 3 reports.*b, c") as failed:
        engine.tick()
    assert "min_reports" in failed.value.fix


def test_the_plan_checks_policy_settings(tmp_path) -> None:
    with pytest.raises(PlanError, match="cutoff_seconds"):
        validate_plan({"straggler_handling_policy": {"settings": {"policy": "cutoff_time"}}}, tmp_path)
    # sites are certified one at a time: too few collaborators for min_reports is refused
    # when the aggregator starts, not when the plan loads (tests/test_trust_e2e.py enrols them)
    plan = validate_plan(
        {"collaborators": ["a", "b"], "straggler_handling_policy": {"settings": {"min_reports": 3}}}, tmp_path
    )
    from accord.aggregator.runtime import AggregatorRuntime

    with pytest.raises(PlanError, match="min_reports is 3, but the plan lists only 2 collaborators"):
        AggregatorRuntime(plan)


def runtime_with(workspace_factory, **policy):
    from accord.aggregator.runtime import AggregatorRuntime
    from accord.workspace.initialize import initialize_model

    plan = workspace_factory(["alpha", "beta"], rounds=2, overrides={"straggler_handling_policy.settings": policy})
    initialize_model(plan)
    return AggregatorRuntime(plan)


def report(runtime, name: str) -> None:
    """``name``'s three results of the open round, as an honest collaborator sends them."""
    from accord.messages import TaskResult

    number, digest, model = runtime.engine.round_number, runtime.engine.model_digest, runtime.engine.model
    for task in ("aggregated_model_validation", "train", "locally_tuned_model_validation"):
        tensors = dict(model) if task == "train" else None
        result = TaskResult(name, number, task, 10, {"accuracy": 0.5}, tensors, False, 0.1, model_digest=digest)
        runtime.submit(result, runtime.plan.hash)


def wait_for_round(runtime, number: int) -> None:
    import time

    for _ in range(400):
        if runtime.engine.round_number >= number:
            return
        time.sleep(0.05)
    raise AssertionError(f"round {number} did not open (at round {runtime.engine.round_number})")


def test_the_watcher_closes_at_the_cutoff_though_the_deadline_is_far_also_in_a_round_opened_meanwhile(
    workspace_factory,
) -> None:
    """Round 0 closes on its last report while the watcher sleeps towards round 0's one-hour
    deadline; round 1 must still close at its own cut-off, without its straggler."""
    runtime = runtime_with(
        workspace_factory, policy="cutoff_time", cutoff_seconds=0.3, min_reports=1, round_deadline_seconds=3600
    )
    try:
        report(runtime, "alpha")
        report(runtime, "beta")
        assert runtime.engine.round_number == 1  # closed by beta's last result, not by time
        report(runtime, "alpha")
        wait_for_round(runtime, 2)  # beta never reports round 1: closed at the cut-off
        assert runtime._publisher.stragglers == ("beta",)
    finally:
        runtime.close()


def test_the_runtime_fails_at_the_deadline_with_too_few_reports(workspace_factory) -> None:
    runtime = runtime_with(
        workspace_factory, policy="cutoff_time", cutoff_seconds=0.2, min_reports=1, round_deadline_seconds=0.5
    )
    try:
        report(runtime, "alpha")
        wait_for_round(runtime, 1)  # closed at the cut-off (or the deadline) without beta
        with pytest.raises(RoundDeadlineError, match="round 1 reached its deadline"):
            runtime.wait_until_done(timeout=30)  # nobody reports in round 1
    finally:
        runtime.close()


def test_failed_sites_owe_nothing_and_count_as_not_reported() -> None:
    """A site's failure ends its part in the round; min_reports counts successful reports only."""
    engine, _clock = engine_with(StragglerPolicy(min_reports=2, round_deadline_seconds=100.0))
    full_round(engine, {"a": (1.0, 1)})
    failure = TaskResult("c", 0, "aggregated_model_validation", 0, {}, failure="data file /x does not exist")
    assert honest(engine, failure) is None
    assert engine.assignment("c").action is Action.WAIT  # nothing more owed
    assert engine.reported() == ["a"]
    outcome = full_round(engine, {"b": (3.0, 1)})
    assert outcome is not None and outcome.failed == ("c",) and outcome.stragglers == ()
    np.testing.assert_allclose(outcome.model["w"], 2.0)


def test_a_round_that_can_no_longer_reach_min_reports_fails_at_once() -> None:
    engine, _ = engine_with(StragglerPolicy(min_reports=2, round_deadline_seconds=100.0))
    full_round(engine, {"a": (1.0, 1)})
    for name in ("b", "c"):
        honest(engine, TaskResult(name, 0, "train", 0, {}, failure=f"{name} broke"))
    with pytest.raises(RoundDeadlineError, match=r"round 0 cannot close .*1 of 3 reports.*b failed: b broke; c failed: c broke"):
        engine.tick()
    with pytest.raises(RefusedError, match="reports a failure but carries data"):
        engine2, _ = engine_with(StragglerPolicy())
        honest(engine2, TaskResult("a", 0, "train", 0, {"loss": 1.0}, failure="x"))


def test_a_result_after_the_deadline_is_taken_and_only_tick_fails() -> None:
    engine, clock = engine_with(StragglerPolicy(min_reports=3, round_deadline_seconds=30.0))
    clock.now = 31.0
    assert honest(engine, result("a", "aggregated_model_validation", 0, 5, {"accuracy": 0.5})) is None
    with pytest.raises(RoundDeadlineError):
        engine.tick()


def test_the_policy_counts_reports_without_walking_the_sites(monkeypatch) -> None:
    """Each result updates the open round's counters in O(1): ``reported()`` (which walks every
    assigned site) is never called while results come in, and the round still closes on time."""
    engine, clock = engine_with(CUTOFF)
    monkeypatch.setattr(engine, "reported", lambda: pytest.fail("reported() walked every site on a result"))
    assert full_round(engine, {"a": (1.0, 1)}) is None
    assert engine.current is not None and engine.current.reported_count == 1
    honest(engine, TaskResult("c", 0, "aggregated_model_validation", 0, {}, failure="c broke"))
    assert engine.current.reported_count == 1 and len(engine.current.failed) == 1
    clock.now = 10.0
    assert engine.tick() is None  # the cut-off passed with one report of the two needed
    outcome = full_round(engine, {"b": (3.0, 3)})  # nobody owes anything more
    assert outcome is not None and outcome.failed == ("c",) and outcome.stragglers == ()
    assert engine.current is not None and engine.current.reported_count == 0  # round 1 opened
