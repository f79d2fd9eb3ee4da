"""The pure round engine: assignment, FedAvg, refusals, best model; no network, no threads."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from mean_helper import Mean

from accord.aggregator.assigner import RandomGroupedAssigner, StaticGroupedAssigner
from accord.aggregator.engine import RoundEngine
from accord.errors import PlanError, RefusedError
from accord.messages import Action, TaskResult
from accord.plan.round_settings import TaskSpec

TASKS = {
    "aggregated_model_validation": TaskSpec(function="validate", kwargs={"apply": "global"}),
    "train": TaskSpec(function="train", kwargs={"epochs": 1}),
    "locally_tuned_model_validation": TaskSpec(function="validate", kwargs={"apply": "local"}),
}
ALL = [{"name": "all", "percentage": 1.0, "tasks": list(TASKS)}]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make_engine(collaborators=("a", "b"), rounds=2, model=None, clock=None, final_validation=False, **options) -> RoundEngine:
    model = model or {"w": np.zeros((2, 2), np.float32), "b": np.zeros(2, np.float32)}
    return RoundEngine(
        collaborators=collaborators,
        tasks=TASKS,
        assigner=RandomGroupedAssigner(collaborators, ALL),
        rounds_to_train=rounds,
        model=model,
        clock=clock or FakeClock(),
        final_validation=final_validation,
        **options,
    )


def result(name, task, round_number=0, n=10, metrics=None, tensors=None, seconds=0.0):
    return TaskResult(name, round_number, task, n, metrics or {}, tensors, False, seconds)


def honest(engine, result):
    """Submit ``result`` as an honest collaborator would: carrying the digest of the round's model."""
    return engine.submit(dataclasses.replace(result, model_digest=engine.model_digest))


def full_round(engine, values, round_number=0, acc=None):
    outcome = None
    for name, (value, n) in values.items():
        outcome = honest(engine, result(name, "aggregated_model_validation", round_number, n, {"accuracy": (acc or {}).get(name, 0.5)})) or outcome
        tensors = {"w": np.full((2, 2), value, np.float32), "b": np.full(2, value, np.float32)}
        outcome = honest(engine, result(name, "train", round_number, n, {"loss": 1.0}, tensors)) or outcome
        outcome = honest(engine, result(name, "locally_tuned_model_validation", round_number, n, {"accuracy": 0.9})) or outcome
    return outcome


def test_assignment_run_wait_quit() -> None:
    engine = make_engine(rounds=1)
    first = engine.assignment("a")
    assert first.action is Action.RUN and [t.name for t in first.tasks] == list(TASKS)
    assert [t.returns_model for t in first.tasks] == [False, True, False]
    full_round(engine, {"a": (1.0, 1)})
    assert engine.assignment("a").action is Action.WAIT  # b still owes its tasks
    outcome = full_round(engine, {"b": (3.0, 3)})
    assert outcome is not None and engine.finished
    assert engine.assignment("a").action is Action.QUIT


def test_fedavg_is_weighted_by_sample_count() -> None:
    engine = make_engine(rounds=1)
    outcome = full_round(engine, {"a": (1.0, 1), "b": (3.0, 3)}, acc={"a": 1.0, "b": 0.0})
    np.testing.assert_allclose(outcome.model["w"], np.full((2, 2), 2.5))
    assert outcome.model["w"].dtype == np.float32
    assert outcome.metrics["aggregated_model_validation/accuracy"] == pytest.approx(0.25)
    assert outcome.metrics["train/loss"] == pytest.approx(1.0)


def test_delta_updates_add_to_global() -> None:
    fedavg = Mean()
    fedavg.start_round({"w": np.ones(3, np.float32)})
    fedavg.add({"w": np.full(3, 2.0, np.float32)}, 1.0, is_delta=True)
    fedavg.add({"w": np.full(3, 4.0, np.float32)}, 1.0, is_delta=True)
    np.testing.assert_allclose(fedavg.result()["w"], np.full(3, 4.0))


def test_integer_tensors_keep_their_dtype_and_take_a_value_one_of_them_sent() -> None:
    fedavg = Mean()
    fedavg.start_round({"count": np.array(0, np.int64)})
    fedavg.add({"count": np.array(3, np.int64)}, 1.0)
    fedavg.add({"count": np.array(4, np.int64)}, 1.0)
    got = fedavg.result()["count"]
    assert got.dtype == np.int64 and int(got) == 3  # with 2 updates: the median of 0 (the global's), 3 and 4


@pytest.mark.parametrize(
    "bad, reason",
    [
        ({"w": np.zeros((3, 2), np.float32), "b": np.zeros(2, np.float32)}, "shape"),
        ({"w": np.zeros((2, 2), np.float64), "b": np.zeros(2, np.float32)}, "dtype"),
        ({"w": np.full((2, 2), np.nan, np.float32), "b": np.zeros(2, np.float32)}, "NaN"),
        ({"w": np.zeros((2, 2), np.float32)}, "missing"),
        ({"w": np.zeros((2, 2), np.float32), "b": np.zeros(2, np.float32), "x": np.zeros(1, np.float32)}, "unexpected"),
    ],
)
def test_bad_updates_are_refused_and_round_goes_on(bad, reason) -> None:
    engine = make_engine(rounds=1)
    with pytest.raises(RefusedError, match=reason):
        honest(engine, result("a", "train", 0, 5, {}, bad))
    assert "train" in [t.name for t in engine.assignment("a").tasks]  # still owed


def test_refusals_of_state_and_identity() -> None:
    engine = make_engine(rounds=2)
    with pytest.raises(RefusedError, match="not in the plan"):
        honest(engine, result("mallory", "train"))
    with pytest.raises(RefusedError, match="current round is 0"):
        honest(engine, result("a", "aggregated_model_validation", round_number=1))
    with pytest.raises(RefusedError, match="sample count 0"):
        honest(engine, result("a", "aggregated_model_validation", n=0))
    with pytest.raises(RefusedError, match="nan"):
        honest(engine, result("a", "aggregated_model_validation", metrics={"accuracy": float("nan")}))
    honest(engine, result("a", "aggregated_model_validation", metrics={"accuracy": 0.5}))
    with pytest.raises(RefusedError, match="already received"):
        honest(engine, result("a", "aggregated_model_validation", metrics={"accuracy": 0.5}))


def test_best_model_is_the_validated_global_model() -> None:
    clock = FakeClock()
    engine = make_engine(rounds=3, clock=clock)
    first = full_round(engine, {"a": (1.0, 1), "b": (1.0, 1)}, 0, acc={"a": 0.2, "b": 0.2})
    assert first.best_score == pytest.approx(0.2)
    np.testing.assert_array_equal(first.best_model["w"], np.zeros((2, 2)))  # round 0's input model
    second = full_round(engine, {"a": (2.0, 1), "b": (2.0, 1)}, 1, acc={"a": 0.1, "b": 0.1})
    assert second.best_model is None
    clock.now = 5.0
    third = full_round(engine, {"a": (3.0, 1), "b": (3.0, 1)}, 2, acc={"a": 0.9, "b": 0.9})
    np.testing.assert_array_equal(third.best_model["w"], np.full((2, 2), 2.0))
    assert third.wall_seconds == pytest.approx(5.0)


def test_overhead_is_wall_minus_slowest_collaborator() -> None:
    clock = FakeClock()
    engine = make_engine(rounds=1, clock=clock)
    honest(engine, result("a", "aggregated_model_validation", seconds=1.0))
    honest(engine, result("b", "aggregated_model_validation", seconds=2.0))
    for name in ("a", "b"):
        honest(engine, result(name, "train", tensors={"w": np.zeros((2, 2), np.float32), "b": np.zeros(2, np.float32)}, seconds=1.0))
    clock.now = 3.5
    honest(engine, result("a", "locally_tuned_model_validation"))
    outcome = honest(engine, result("b", "locally_tuned_model_validation"))
    assert outcome.slowest_task_seconds == pytest.approx(3.0)
    assert outcome.overhead_seconds == pytest.approx(0.5)


def test_random_grouped_assigner_splits_by_percentage_and_is_seeded() -> None:
    names = [f"c{i}" for i in range(10)]
    groups = [
        {"name": "train", "percentage": 0.5, "tasks": ["train"]},
        {"name": "validate", "percentage": 0.5, "tasks": ["aggregated_model_validation"]},
    ]
    assigner = RandomGroupedAssigner(names, groups, seed=1)
    table = {n: assigner.tasks_for(n, 0) for n in names}
    assert sum(1 for t in table.values() if t == ("train",)) == 5
    again = RandomGroupedAssigner(names, groups, seed=1)
    assert table == {n: again.tasks_for(n, 0) for n in names}
    assert any(assigner.tasks_for(n, 1) != table[n] for n in names)


def test_assigner_percentages_must_sum_to_one() -> None:
    with pytest.raises(PlanError, match="sum to"):
        RandomGroupedAssigner(["a"], [{"name": "g", "percentage": 0.5, "tasks": ["train"]}])


def test_static_grouped_assigner() -> None:
    groups = [
        {"name": "trainers", "collaborators": ["a"], "tasks": ["train"]},
        {"name": "validators", "collaborators": ["b"], "tasks": ["aggregated_model_validation"]},
    ]
    assigner = StaticGroupedAssigner(["a", "b"], groups)
    assert assigner.tasks_for("a", 3) == ("train",)
    assert assigner.tasks_for("b", 0) == ("aggregated_model_validation",)
    with pytest.raises(PlanError, match="in no StaticGroupedAssigner group"):
        StaticGroupedAssigner(["a", "b", "c"], groups)


def test_final_validation_round_validates_the_last_model_only() -> None:
    engine = make_engine(rounds=1, final_validation=True)
    full_round(engine, {"a": (1.0, 1), "b": (3.0, 1)})
    assert not engine.finished
    final = engine.assignment("a")
    assert final.round_number == 1 and [t.name for t in final.tasks] == ["aggregated_model_validation"]
    honest(engine, result("a", "aggregated_model_validation", 1, 1, {"accuracy": 0.9}))
    outcome = honest(engine, result("b", "aggregated_model_validation", 1, 1, {"accuracy": 0.9}))
    assert engine.finished and engine.assignment("b").action is Action.QUIT
    np.testing.assert_array_equal(outcome.model["w"], np.full((2, 2), 2.0))  # unchanged by validation
    np.testing.assert_array_equal(outcome.best_model["w"], np.full((2, 2), 2.0))
    assert outcome.metrics == {"aggregated_model_validation/accuracy": pytest.approx(0.9)}


def test_fedavg_leaves_the_updates_untouched_and_handles_scalars() -> None:
    fedavg = Mean()
    fedavg.start_round({"w": np.zeros(2, np.float32), "step": np.array(0.0, np.float32), "n": np.array(0, np.int64)})
    first = {"w": np.ones(2, np.float32), "step": np.array(2.0, np.float32), "n": np.array(2, np.int64)}
    second = {"w": np.full(2, 3.0, np.float32), "step": np.array(4.0, np.float32), "n": np.array(4, np.int64)}
    fedavg.add(first, 1.0)
    fedavg.add(second, 1.0)
    model = fedavg.result()
    np.testing.assert_array_equal(first["w"], np.ones(2))  # not scaled in place
    assert model["w"] is not first["w"]
    assert isinstance(model["step"], np.ndarray) and model["step"].shape == () and float(model["step"]) == 3.0
    assert isinstance(model["n"], np.ndarray) and int(model["n"]) == 2  # median of 0, 2 and 4


def test_a_delta_flag_against_the_plan_is_refused() -> None:
    engine = RoundEngine(
        collaborators=("a",), tasks=TASKS, assigner=RandomGroupedAssigner(("a",), ALL), rounds_to_train=1,
        model={"w": np.zeros(2, np.float32)}, clock=FakeClock(), delta_updates=False,
    )
    update = TaskResult("a", 0, "train", 5, {}, {"w": np.ones(2, np.float32)}, is_delta=True)
    with pytest.raises(RefusedError, match="delta_updates=False"):
        honest(engine, update)


def test_a_result_must_carry_the_digest_of_its_rounds_model() -> None:
    """The digest binds a result to one round's model: another round's, or none, is refused."""
    from accord.tensors.digest import model_digest

    engine = make_engine()
    first = engine.model_digest
    assert first == model_digest(engine.model, 0) and first != model_digest(engine.model, 1)
    full_round(engine, {"a": (1.0, 1), "b": (3.0, 1)})
    assert engine.round_number == 1 and engine.model_digest == model_digest(engine.model, 1)
    for digest in (first, "", "0" * 64):
        stale = dataclasses.replace(result("a", "aggregated_model_validation", 1, 5, {"accuracy": 0.5}), model_digest=digest)
        with pytest.raises(RefusedError, match=r"computed from another model.*replayed or stale") as refused:
            engine.submit(stale)
        assert refused.value.kind == "state"
    assert engine.current.outstanding["a"] == list(TASKS)  # nothing was taken


def test_the_digest_covers_names_dtypes_shapes_and_bytes() -> None:
    from accord.tensors.digest import model_digest

    base = {"w": np.zeros((2, 2), np.float32), "b": np.zeros(2, np.float32)}
    variants = [
        {"w": np.zeros((4,), np.float32), "b": base["b"]},
        {"w": np.zeros((2, 2), np.int32), "b": base["b"]},
        {"v": base["w"], "b": base["b"]},
        {"w": np.eye(2, dtype=np.float32), "b": base["b"]},
        {"w": base["w"]},
    ]
    digests = {model_digest(v, 0) for v in variants}
    assert len(digests) == len(variants) and model_digest(base, 0) not in digests
    assert model_digest(dict(reversed(list(base.items()))), 0) == model_digest(base, 0)  # canonical order
    assert model_digest({k: v.astype(">f4") for k, v in base.items()}, 0) == model_digest(base, 0)  # byte order
