"""Update bounds: capped sample counts, bounded norms, float64 means, non-finite results dropped."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from mean_helper import Mean
from test_engine import make_engine, result

from accord.aggregation.bounds import UNBOUNDED, Update, UpdateBounds, bound_updates, change_norms, lower_median
from accord.aggregator.runtime import AggregatorRuntime
from accord.aggregator.status import describe, read_status
from accord.aggregator.weighted_metrics import WeightedMetrics
from accord.errors import AccordError, RefusedError
from accord.messages import TaskResult
from accord.metric_records import read_metrics
from accord.tensors.state import StateView, load_state, save_state
from accord.workspace.initialize import initialize_model

GLOBAL = {"w": np.zeros((4, 3), np.float32), "b": np.zeros(3, np.float32), "steps": np.array(10, np.int64)}


def shifted(value: float, steps: int = 10) -> dict[str, np.ndarray]:
    return {"w": np.full((4, 3), value, np.float32), "b": np.full(3, value, np.float32), "steps": np.array(steps, np.int64)}


def average(updates, bounds, model=GLOBAL, is_delta=False) -> tuple[dict, Mean]:
    fedavg = Mean(bounds)
    fedavg.start_round(model)
    for name, tensors, count in updates:
        fedavg.add(tensors, count, is_delta, name)
    return fedavg.result(), fedavg


HONEST = [(f"h{i}", shifted(1.0 + 0.01 * i), 700 + i) for i in range(5)]


def test_lower_median() -> None:
    assert lower_median([4, 1, 3, 2]) == 2 and lower_median([5]) == 5 and lower_median([3, 1, 2]) == 2


def test_a_huge_sample_count_is_capped_at_a_multiple_of_the_median() -> None:
    model, fedavg = average([*HONEST, ("liar", shifted(-1.0), 10**12)], UpdateBounds(sample_count_multiple=2.0, norm_multiple=None))
    [event] = fedavg.events
    assert (event.collaborator, event.kind, event.value, event.bound) == ("liar", "capped", 10**12, 2 * 702)
    assert "liar declared 1000000000000 samples: counted as 1404" in event.describe()
    honest = sum(c for _, _, c in HONEST)
    expected = (sum((1.0 + 0.01 * i) * (700 + i) for i in range(5)) - 1404) / (honest + 1404)
    np.testing.assert_allclose(model["w"], expected, rtol=1e-6)
    unbounded, _ = average([*HONEST, ("liar", shifted(-1.0), 10**12)], UNBOUNDED)
    assert float(unbounded["w"][0, 0]) == pytest.approx(-1.0, abs=1e-6)  # the attack is real without the cap


@pytest.mark.parametrize("mode", ["clip", "refuse"])
def test_an_update_past_the_norm_bound_is_clipped_or_refused(mode) -> None:
    attacker = ("big", shifted(-100.0), 700)
    model, fedavg = average([*HONEST, attacker], UpdateBounds(norm_multiple=3.0, on_norm_exceeded=mode))
    [event] = fedavg.events
    assert event.collaborator == "big" and event.kind == ("clipped" if mode == "clip" else "refused")
    assert event.value == pytest.approx(100 * np.sqrt(15)) and event.bound == pytest.approx(3 * 1.02 * np.sqrt(15))
    assert "2 of 2 tensors past norm_multiple 3 x the round's median norm of their change; 'w' 32.7x its bound" in event.describe()
    honest_sum = sum((1.0 + 0.01 * i) * (700 + i) for i in range(5))
    if mode == "clip":  # scaled to 3x the median norm: -3.06 per element
        expected = (honest_sum - 3 * 1.02 * 700) / (sum(c for _, _, c in HONEST) + 700)
    else:
        expected = honest_sum / sum(c for _, _, c in HONEST)
    np.testing.assert_allclose(model["w"], expected, rtol=1e-5)
    assert int(model["steps"]) == 10  # counters are not clipped and keep their dtype
    assert model["steps"].dtype == np.int64


def test_an_absolute_bound_applies_when_tighter() -> None:
    updates = [Update(f"s{i}", shifted(1.0), 1, False, {"w": norm}) for i, norm in enumerate([1.0, 2.0, 3.0])]
    weighted, events = bound_updates(updates, UpdateBounds(norm_multiple=3.0, max_update_norm=1.5))
    assert [e.collaborator for e in events] == ["s1", "s2"] and events[0].bound == pytest.approx(1.5)
    assert "norm 2 past max_update_norm 1.5" in events[0].describe()
    assert [w.scale("w") for w in weighted] == pytest.approx([1.0, 0.75, 0.5])


def test_each_tensor_is_bounded_by_its_own_median_and_optimizer_state_by_none() -> None:
    honest = [Update(f"h{i}", {}, 10, False, {"w": 0.1, "b": 16.0}) for i in range(4)]
    attacker = Update("a", {}, 10, False, {"w": 16.0, "b": 0.1})  # the honest total norm, spent on w
    weighted, [event] = bound_updates([*honest, attacker], UpdateBounds(norm_multiple=1.5))
    assert event.collaborator == "a" and "1 of 2 tensors past" in event.describe() and "'w' 107x its bound" in event.describe()
    assert weighted[-1].scale("w") == pytest.approx(0.15 / 16.0) and weighted[-1].scale("b") == 1.0
    model = {"w": np.zeros(2, np.float32), "__opt__.w.step": np.zeros((), np.float32)}
    norms = change_norms(model, Update("s", {"w": np.ones(2, np.float32), "__opt__.w.step": np.array(16.0, np.float32)}, 1, False, {}))
    assert norms == {"w": pytest.approx(np.sqrt(2))}


def test_values_near_float32_max_average_in_float64() -> None:
    huge = np.finfo(np.float32).max
    updates = [(f"s{i}", shifted(huge), 10**12) for i in range(3)]
    model, fedavg = average(updates, UNBOUNDED)
    assert np.isfinite(model["w"]).all() and float(model["w"][0, 0]) == huge  # float32 sums would overflow
    assert fedavg.events == []


def test_a_delta_that_makes_the_model_non_finite_is_dropped_and_the_round_closes_with_the_rest() -> None:
    model = {"w": np.full(3, 60000.0, np.float16)}
    honest = [(f"h{i}", {"w": np.full(3, 1.0, np.float16)}, 10) for i in range(3)]
    attack = ("overflow", {"w": np.full(3, 65504.0, np.float16)}, 10**12)
    new, fedavg = average([*honest, attack], UNBOUNDED, model=model, is_delta=True)
    [event] = fedavg.events
    assert event.collaborator == "overflow" and event.kind == "dropped_non_finite" and "'w'" in event.describe()
    np.testing.assert_array_equal(new["w"], np.full(3, 60001.0, np.float16))
    alone, fedavg = average([attack], UNBOUNDED, model=model, is_delta=True)
    assert alone["w"] is model["w"] and [e.kind for e in fedavg.events] == ["dropped_non_finite"]  # the previous model


def test_a_lazy_view_of_the_saved_file_averages_like_the_arrays(tmp_path) -> None:
    files = []
    for index, (_name, tensors, _count) in enumerate(HONEST):
        files.append(save_state(tmp_path / f"u{index}.safetensors", {**tensors, "empty": np.zeros((0, 2), np.float32)}))
    view = StateView(files[0])
    assert list(view) == ["w", "b", "steps", "empty"] and view["steps"].shape == () and view["empty"].shape == (0, 2)
    np.testing.assert_array_equal(view["w"], HONEST[0][1]["w"])
    reference = {**GLOBAL, "empty": np.zeros((0, 2), np.float32)}
    direct = Mean(UpdateBounds())
    lazy = Mean(UpdateBounds())
    for fedavg in (direct, lazy):
        fedavg.start_round(reference)
    for (name, tensors, count), path in zip(HONEST, files):
        tensors = {**tensors, "empty": np.zeros((0, 2), np.float32)}
        direct.add(tensors, count, False, name)
        lazy.add(tensors, count, False, name, stored=StateView(path))
    expected, got = direct.result(), lazy.result()
    assert all(np.array_equal(expected[k], got[k]) for k in expected)


def test_the_round_outcome_carries_the_events_and_metric_names_are_strict() -> None:
    engine = make_engine(rounds=1, bounds=UpdateBounds())
    def submit(item: TaskResult):
        return engine.submit(dataclasses.replace(item, model_digest=engine.model_digest))

    for name in ("a", "b"):
        submit(result(name, "aggregated_model_validation", metrics={"accuracy": 0.5}))
    with pytest.raises(RefusedError) as refused:
        submit(result("a", "train", metrics={"loss\n[INFO] round 9 done\x1b[2J": 0.1}, tensors={"w": np.ones((2, 2), np.float32), "b": np.ones(2, np.float32)}))
    assert "'loss\\n[INFO] round 9 done\\x1b[2J'" in refused.value.message
    submit(result("a", "train", n=10, tensors={"w": np.ones((2, 2), np.float32), "b": np.ones(2, np.float32)}))
    submit(result("b", "train", n=10**9, tensors={"w": np.ones((2, 2), np.float32), "b": np.ones(2, np.float32)}))
    submit(result("a", "locally_tuned_model_validation"))
    outcome = submit(result("b", "locally_tuned_model_validation"))
    assert [(e.collaborator, e.kind) for e in outcome.bounds] == [("b", "capped")]


NAMES = ["alpha", "beta", "gamma"]


def hostile_round(runtime: AggregatorRuntime) -> list[TaskResult]:
    """One round: alpha and beta honest, gamma claims 10^12 samples with a 100x change."""
    number = runtime.engine.round_number
    out = []
    for name, shift, count in (("alpha", 0.01, 100), ("beta", 0.02, 120), ("gamma", -1.0, 10**12)):
        model = {k: (v + shift if v.dtype.kind == "f" else v) for k, v in runtime.engine.model.items()}
        for task in (t.name for t in runtime.engine.assignment(name).tasks):
            tensors = model if task == "train" else None
            digest = runtime.engine.model_digest
            out.append(TaskResult(name, number, task, count, {"accuracy": 0.5}, tensors, False, 0.1, digest))
    return out


def run_hostile(runtime: AggregatorRuntime, plan, stop_after: int | None = None) -> None:
    sent = 0
    while not runtime.finished:
        for item in hostile_round(runtime):
            if sent == stop_after:
                return
            runtime.submit(item, plan.hash)
            sent += 1


def test_bounds_hold_through_the_runtime_and_a_restart_gives_the_same_model(workspace_factory) -> None:
    reference_plan, plan = (workspace_factory(NAMES, rounds=2) for _ in range(2))
    for each in (reference_plan, plan):
        initialize_model(each)
    reference = AggregatorRuntime(reference_plan)
    run_hostile(reference, reference_plan)
    reference.close()
    first = AggregatorRuntime(plan)
    run_hostile(first, plan, stop_after=17)  # round 1, with gamma's train result saved
    first.close()
    shown = describe(read_status(plan))
    assert "update bounds that bit in the previous round: gamma: capped, gamma: clipped" in shown
    second = AggregatorRuntime(plan)
    run_hostile(second, plan)
    second.close()
    expected = load_state(reference_plan.resolve_path("save/last.safetensors"))
    got = load_state(plan.resolve_path("save/last.safetensors"))
    assert all(np.array_equal(expected[k], got[k]) for k in expected)
    assert all(np.isfinite(v).all() for v in got.values())
    bounds = [(r.round, r.origin, r.metric) for r in read_metrics(plan.resolve_path("logs/metrics.jsonl")) if r.task == "aggregator/bounds"]
    assert bounds == [(0, "gamma", "capped"), (0, "gamma", "clipped"), (1, "gamma", "capped"), (1, "gamma", "clipped")]


def test_optimizer_state_keeps_within_the_other_sites_range_coordinate_by_coordinate() -> None:
    model = {"w": np.zeros(2, np.float32), "__opt__.w.exp_avg_sq": np.full(2, 1.0, np.float32)}
    honest = [(f"h{i}", {"w": np.full(2, 0.1, np.float32), "__opt__.w.exp_avg_sq": np.array([1.0 + i, 2.0], np.float32)}, 10) for i in range(3)]
    hostile = ("neg", {"w": np.full(2, 0.1, np.float32), "__opt__.w.exp_avg_sq": np.array([-1e6, 2.0], np.float32)}, 10)
    new, _ = average([*honest, hostile], UNBOUNDED, model=model)
    # changes 0, 1, 2 and -1e6-1 are clamped between the second smallest (0) and second largest (1)
    np.testing.assert_allclose(new["__opt__.w.exp_avg_sq"], [1.0 + (0 + 1 + 1 + 0) / 4, 2.0])
    np.testing.assert_allclose(new["w"], 0.1)



def test_with_two_updates_the_global_votes_on_optimizer_state_and_with_one_it_is_kept() -> None:
    model = {"w": np.zeros(2, np.float32), "__opt__.w.exp_avg_sq": np.array([1.0, 4.0], np.float32)}
    honest = ("h", {"w": np.full(2, 0.1, np.float32), "__opt__.w.exp_avg_sq": np.array([2.0, 3.0], np.float32)}, 10)
    hostile = ("neg", {"w": np.full(2, 0.1, np.float32), "__opt__.w.exp_avg_sq": np.full(2, -3e38, np.float32)}, 10)
    two, fedavg = average([honest, hostile], UNBOUNDED, model=model)
    # the median of the global's, the honest and the hostile value: never the hostile one
    np.testing.assert_allclose(two["__opt__.w.exp_avg_sq"], [1.0, 3.0])
    assert [(e.collaborator, e.kind) for e in fedavg.events] == [("h", "held"), ("neg", "held")]
    assert "median of the global's and the 2 updates'" in fedavg.events[0].describe()
    one, fedavg = average([hostile], UNBOUNDED, model=model)
    np.testing.assert_array_equal(one["__opt__.w.exp_avg_sq"], model["__opt__.w.exp_avg_sq"])
    np.testing.assert_allclose(one["w"], 0.1)
    assert [e.kind for e in fedavg.events] == ["held"]
    three, fedavg = average([honest, honest, hostile], UNBOUNDED, model=model)
    assert fedavg.events == [] and (three["__opt__.w.exp_avg_sq"] > 0).all()


def test_integer_and_boolean_tensors_take_the_lower_median_of_the_sites_values() -> None:
    model = {
        "w": np.zeros(3, np.float32),
        "pos": np.arange(3, dtype=np.int64),
        "mask": np.array([True, False, True]),
        "__opt__.iteration": np.array(100, np.int64),
    }

    def site(pos, mask, iteration) -> dict[str, np.ndarray]:
        return {"w": np.full(3, 0.1, np.float32), "pos": np.array(pos, np.int64), "mask": np.array(mask), "__opt__.iteration": np.array(iteration, np.int64)}

    honest = [(f"h{i}", site([0, 1, 2], [True, False, True], 110 + i), 10) for i in range(5)]
    hostile = ("big", site([-(2**62), 2**62, 7], [False, True, False], -(2**62)), 10**6)
    new, _ = average([*honest, hostile], UpdateBounds(), model=model)
    np.testing.assert_array_equal(new["pos"], [0, 1, 2])
    np.testing.assert_array_equal(new["mask"], [True, False, True])
    assert new["__opt__.iteration"] == 111  # the lower median of 110..114 and -2**62
    assert new["pos"].dtype == np.int64 and new["mask"].dtype == bool
    two, _ = average([honest[0], hostile], UpdateBounds(), model=model)  # the global votes too
    np.testing.assert_array_equal(two["pos"], [0, 1, 2])
    assert two["__opt__.iteration"] == 100
    agreeing, _ = average([honest[0], honest[0]], UpdateBounds(), model=model)
    assert agreeing["__opt__.iteration"] == 110


class _Counting(dict):
    """Tensors that count their lookups and fail the first ``failures`` of them (a flaky disk)."""

    def __init__(self, tensors: dict, failures: int = 0) -> None:
        super().__init__(tensors)
        self.lookups, self.failures = 0, failures

    def __getitem__(self, name: str) -> np.ndarray:
        self.lookups += 1
        if self.failures:
            self.failures -= 1
            raise OSError(5, "Input/output error")
        return super().__getitem__(name)


def test_the_close_fetches_each_updates_tensor_once_whatever_the_number_of_sites() -> None:
    size = 1 << 16  # several blocks of BLOCK // 40 elements on the robust path
    model = {"w": np.zeros(4, np.float32), "__opt__.m": np.zeros(size, np.float32), "n": np.zeros(size, np.int32)}
    fedavg = Mean(UpdateBounds())
    fedavg.start_round(model)
    sites = [_Counting({"w": np.full(4, 0.1, np.float32), "__opt__.m": np.full(size, i, np.float32), "n": np.full(size, i, np.int32)}) for i in range(40)]
    for i, tensors in enumerate(sites):
        fedavg.add(tensors, 10, collaborator=f"s{i}")
    before = [s.lookups for s in sites]
    new = fedavg.result()
    assert [s.lookups - b for s, b in zip(sites, before)] == [3] * 40
    assert float(new["__opt__.m"][0]) == pytest.approx(19.5) and int(new["n"][0]) == 19


def test_a_failed_read_at_the_close_keeps_the_updates_for_another_try() -> None:
    fedavg = Mean(UpdateBounds())
    fedavg.start_round(GLOBAL)
    flaky = _Counting(shifted(1.0))
    for name, tensors, count in HONEST[:3]:
        fedavg.add(tensors, count, collaborator=name)
    fedavg.add(shifted(1.0), 700, collaborator="flaky", stored=flaky)
    flaky.failures = 1
    with pytest.raises(OSError):
        fedavg.result()
    again = fedavg.result()
    np.testing.assert_allclose(again["w"], np.average([1.0, 1.01, 1.02, 1.0], weights=[700, 701, 702, 700]), rtol=1e-6)


def test_metrics_are_weighted_by_the_capped_count_and_absurd_values_refused(workspace_factory) -> None:
    plan = workspace_factory(NAMES, rounds=1)
    initialize_model(plan)
    runtime = AggregatorRuntime(plan)
    items = hostile_round(runtime)
    for item in items:
        if item.collaborator == "gamma" and item.task == "aggregated_model_validation":
            with pytest.raises(RefusedError, match=r"metric 'accuracy' is 1e[+]300; expected a finite value of magnitude at most 1e[+]12"):
                runtime.submit(dataclasses.replace(item, metrics={"accuracy": 1e300}), plan.hash)
            item = dataclasses.replace(item, metrics={"accuracy": 1.0})
        runtime.submit(item, plan.hash)
    runtime.close()
    # gamma's 10^12 samples count as 1.1 x the median 120: (0.5 x 100 + 0.5 x 120 + 1.0 x 132) / 352
    def strict(text: str):
        return json.loads(text, parse_constant=lambda constant: pytest.fail(f"{constant} in the JSON"))

    state = strict(runtime.journal.path.read_text())  # the snapshot of the federation's end
    assert state["best_score"] == pytest.approx((0.5 * 100 + 0.5 * 120 + 132) / 352)
    lines = plan.resolve_path("logs/metrics.jsonl").read_text().splitlines()
    records = [strict(line) for line in lines]
    assert {"round": 0, "origin": "aggregator", "task": "aggregated_model_validation", "metric": "accuracy", "value": state["best_score"]} in records


def test_weighted_metrics_cap_each_count_at_the_multiple_of_the_lower_median() -> None:
    metrics = WeightedMetrics(1.1)
    for value, count in ((0.5, 100), (0.5, 120), (1e12, 10**12)):
        metrics.add("v", "accuracy", value, count)
    assert metrics.means() == {"v/accuracy": pytest.approx((0.5 * 220 + 1e12 * 132) / 352)}
    assert WeightedMetrics().means() == {}


def test_a_close_that_cannot_read_an_update_stops_the_aggregator_and_a_restart_closes_the_round(workspace_factory, monkeypatch, caplog) -> None:
    plan = workspace_factory(NAMES, rounds=1)
    initialize_model(plan)
    runtime = AggregatorRuntime(plan)
    items = hostile_round(runtime)
    for item in items[:-1]:
        runtime.submit(item, plan.hash)

    def unreadable(self, name):
        raise OSError(5, "Input/output error", str(self.path))

    with monkeypatch.context() as patch:
        patch.setattr(StateView, "mapped", unreadable)
        with pytest.raises(AccordError, match="could not close round 0 and stops: OSError") as stopped:
            runtime.submit(items[-1], plan.hash)
    assert not isinstance(stopped.value, RefusedError)
    assert "could not close round 0 and stops" in caplog.text
    with pytest.raises(RefusedError, match="stopping"):
        runtime.submit(items[-1], plan.hash)
    runtime.close()
    again = AggregatorRuntime(plan)  # resumes round 0 with what was saved; the last site sends again
    again.submit(items[-1], plan.hash)
    assert again.engine.round_number == 1  # round 0 closed
    again.close()
