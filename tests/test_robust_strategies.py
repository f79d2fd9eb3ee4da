"""The robust strategies' maths against plain NumPy references, their minimum replies, what
they do with too few, the bounds and NormClipping, and that they keep views, not arrays."""

from __future__ import annotations

import re
import tracemalloc
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from scipy.stats import trim_mean
from test_engine import ALL, TASKS, FakeClock, honest, result

from accord.aggregation.bounds import UNBOUNDED, UpdateBounds
from accord.aggregator.assigner import RandomGroupedAssigner
from accord.aggregator.engine import RoundEngine
from accord.aggregator.stragglers import StragglerPolicy
from accord.errors import PlanError
from accord.strategies import (
    Bulyan,
    CoordinateMedian,
    FedAvg,
    GeometricMedian,
    Krum,
    MultiKrum,
    NormClipping,
    Reply,
    RoundContext,
    Strategy,
    StrategyState,
    TrimmedMean,
)
from accord.tensors.state import StateView, save_state

OPT = "__opt__.w.exp_avg"
FLOATS = ("w", "b")  # the tensors whose change the distance rules measure


def global_model(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "w": rng.normal(size=(6, 5)).astype(np.float32),
        "b": rng.normal(size=5).astype(np.float32),
        OPT: rng.normal(size=(6, 5)).astype(np.float32),
        "count": rng.integers(0, 100, size=3).astype(np.int64),
    }


def updates(rng: np.random.Generator, model: dict, count: int, is_delta: bool, outliers: int = 0) -> list[dict[str, np.ndarray]]:
    """``count`` random updates (weights or deltas; the int tensor always as values), the last ``outliers`` far off."""
    made = []
    for index in range(count):
        far = 50.0 if index >= count - outliers else 1.0
        update = {}
        for name, ref in model.items():
            if ref.dtype.kind != "f":
                update[name] = rng.integers(0, 100, size=ref.shape).astype(ref.dtype)
                continue
            change = (far * rng.normal(size=ref.shape)).astype(np.float32)
            update[name] = change if is_delta else (ref + change).astype(np.float32)
        made.append(update)
    return made


def aggregate(strategy: Strategy, model: dict, sent: list[dict], is_delta: bool, bounds: UpdateBounds = UNBOUNDED, stored=None):
    """One round through the strategy's accumulator, collaborators c00, c01, ... (added in reverse order; their
    names sort as their indices, so ties go to the lower index, as in the references)."""
    accumulator = strategy.accumulator(RoundContext(0, model, bounds, tuple(f"c{i:02d}" for i in range(len(sent)))))
    for index in reversed(range(len(sent))):
        accumulator.add(Reply(f"c{index:02d}", sent[index], 10.0 * (index + 1), is_delta, None if stored is None else stored[index]))
    return accumulator.result()


def changes(model: dict, sent: list[dict], name: str, is_delta: bool) -> np.ndarray:
    """(updates x coordinates) float64 changes of tensor ``name``."""
    ref = model[name].astype(np.float64).reshape(-1)
    return np.stack([u[name].astype(np.float64).reshape(-1) - (0 if is_delta else ref) for u in sent])


def flat_changes(model: dict, sent: list[dict], is_delta: bool) -> np.ndarray:
    return np.concatenate([changes(model, sent, name, is_delta) for name in FLOATS], axis=1)


def reference(model: dict, sent: list[dict], is_delta: bool, model_rule, opt_rule=None) -> dict[str, np.ndarray]:
    """The expected model: the rules applied to the float tensors' changes, the int tensor's lower median."""
    opt_rule = opt_rule or (lambda c: np.median(c, axis=0))
    expected = {}
    for name, ref in model.items():
        if ref.dtype.kind != "f":
            expected[name] = np.sort(np.stack([u[name] for u in sent]), axis=0)[(len(sent) - 1) // 2]
            continue
        rule = model_rule if name in FLOATS else opt_rule
        expected[name] = (ref.astype(np.float64) + rule(changes(model, sent, name, is_delta)).reshape(ref.shape)).astype(ref.dtype)
    return expected


def assert_models(got: dict, expected: dict) -> None:
    assert list(got) == list(expected)
    for name in expected:
        assert got[name].dtype == expected[name].dtype and got[name].shape == expected[name].shape, name
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-6, atol=1e-6, err_msg=name)


def pairwise(x: np.ndarray) -> np.ndarray:
    """Squared distances, pair by pair."""
    return np.array([[float(np.sum((a - b) ** 2)) for b in x] for a in x])


def krum_reference_scores(distances: np.ndarray, f: int) -> np.ndarray:
    n = len(distances)
    return np.array([sum(sorted(distances[i, j] for j in range(n) if j != i)[: max(n - f - 2, 1)]) for i in range(n)])


def weiszfeld_reference(x: np.ndarray, iterations: int, tolerance: float) -> np.ndarray:
    """Smoothed Weiszfeld in the data space (RFA), from the mean."""
    v = x.mean(axis=0)
    objective = np.linalg.norm(x - v, axis=1).sum()
    for _ in range(iterations):
        w = 1.0 / np.maximum(np.linalg.norm(x - v, axis=1), 1e-6)
        v = (w / w.sum()) @ x
        previous, objective = objective, np.linalg.norm(x - v, axis=1).sum()
        if abs(previous - objective) <= tolerance * objective:
            break
    return v


def split(model: dict, vector: np.ndarray) -> dict[str, np.ndarray]:
    """A flat change over FLOATS back into tensors."""
    out, start = {}, 0
    for name in FLOATS:
        size = model[name].size
        out[name] = vector[start : start + size]
        start += size
    return out


@pytest.mark.parametrize("is_delta", [False, True], ids=["weights", "deltas"])
def test_coordinate_median_and_trimmed_mean_match_numpy(is_delta: bool) -> None:
    rng = np.random.default_rng(1)
    model = global_model(rng)
    for count in (7, 10, 21):  # odd and even counts; from 16 on, sorted by a transposed copy
        sent = updates(rng, model, count, is_delta, outliers=2)
        got = aggregate(CoordinateMedian(), model, sent, is_delta)
        assert_models(got.model, reference(model, sent, is_delta, lambda c: np.median(c, axis=0)))
        assert got.events == []
        trimmed = aggregate(TrimmedMean(beta=0.2), model, sent, is_delta)
        rule = lambda c: trim_mean(c, 0.2, axis=0)  # noqa: E731
        assert_models(trimmed.model, reference(model, sent, is_delta, rule, rule))


@pytest.mark.parametrize("is_delta", [False, True], ids=["weights", "deltas"])
def test_geometric_median_matches_weiszfeld_in_the_data_space(is_delta: bool) -> None:
    rng = np.random.default_rng(2)
    model = global_model(rng)
    sent = updates(rng, model, 7, is_delta, outliers=2)
    got = aggregate(GeometricMedian(), model, sent, is_delta)
    median = split(model, weiszfeld_reference(flat_changes(model, sent, is_delta), 100, 1e-6))
    expected = reference(model, sent, is_delta, lambda c: c.mean(axis=0))  # replaced below for the float tensors
    for name in FLOATS:
        expected[name] = (model[name] + median[name].reshape(model[name].shape)).astype(np.float32)
    assert_models(got.model, expected)
    # the outliers pull the mean far off; the geometric median stays with the others
    honest = flat_changes(model, sent[:5], is_delta).mean(axis=0)
    result = np.concatenate([(got.model[n].astype(np.float64) - model[n]).reshape(-1) for n in FLOATS])
    assert np.linalg.norm(result - honest) < 0.2 * np.linalg.norm(flat_changes(model, sent, is_delta).mean(axis=0) - honest)


@pytest.mark.parametrize("is_delta", [False, True], ids=["weights", "deltas"])
def test_krum_and_multi_krum_select_as_the_pairwise_reference_does(is_delta: bool) -> None:
    rng = np.random.default_rng(3)
    model = global_model(rng)
    sent = updates(rng, model, 8, is_delta, outliers=2)
    scores = krum_reference_scores(pairwise(flat_changes(model, sent, is_delta)), 2)
    best = int(np.argmin(scores))
    got = aggregate(Krum(byzantine=2), model, sent, is_delta)
    assert_models(got.model, reference(model, sent, is_delta, lambda c: c[best]))
    if not is_delta:
        assert all(np.array_equal(got.model[n], sent[best][n]) for n in FLOATS)  # Krum returns a site's model
    left_out = {e.collaborator: e for e in got.events}
    assert set(left_out) == {f"c{i:02d}" for i in range(8)} - {f"c{best:02d}"}
    assert all(e.kind == "not_selected" for e in got.events)
    assert left_out["c07"].value == pytest.approx(scores[7]) and left_out["c07"].bound == pytest.approx(scores[best])
    assert "not selected: Krum(byzantine=2) kept the 1 of 8 updates" in left_out["c07"].describe()

    for keep, m in ((None, 6), (3, 3)):
        chosen = np.argsort(scores, kind="stable")[:m]
        assert set(chosen) <= set(range(6))  # the two outliers are never among them
        multi = aggregate(MultiKrum(byzantine=2, keep=keep), model, sent, is_delta)
        assert_models(multi.model, reference(model, sent, is_delta, lambda c, chosen=chosen: c[chosen].mean(axis=0)))
        assert {e.collaborator for e in multi.events} == {f"c{i:02d}" for i in set(range(8)) - set(chosen)}


def bulyan_reference(x: np.ndarray, f: int) -> list[int]:
    """Bulyan's selection: Krum on what is left, theta = n - 2f times."""
    left, chosen = list(range(len(x))), []
    while len(chosen) < len(x) - 2 * f:
        sub = pairwise(x[left])
        chosen.append(left.pop(int(np.argmin(krum_reference_scores(sub, f)))))
    return sorted(chosen)


def closest_mean(values: np.ndarray, beta: int) -> np.ndarray:
    """Per coordinate, the mean of the beta values nearest the median (a loop over coordinates)."""
    out = np.empty(values.shape[1])
    for j in range(values.shape[1]):
        column = values[:, j]
        order = sorted(range(len(column)), key=lambda i: abs(column[i] - np.median(column)))
        out[j] = column[order[:beta]].mean()
    return out


@pytest.mark.parametrize("is_delta", [False, True], ids=["weights", "deltas"])
@pytest.mark.parametrize("count, f", [(9, 1), (24, 2)])  # 24 - 2f = 20 selected: sorted by a transposed copy
def test_bulyan_matches_the_reference(is_delta: bool, count: int, f: int) -> None:
    rng = np.random.default_rng(4)
    model = global_model(rng)
    sent = updates(rng, model, count, is_delta, outliers=2)
    chosen = bulyan_reference(flat_changes(model, sent, is_delta), f)
    assert not {count - 2, count - 1} & set(chosen)
    got = aggregate(Bulyan(byzantine=f), model, sent, is_delta)
    assert_models(got.model, reference(model, sent, is_delta, lambda c: closest_mean(c[chosen], len(chosen) - 2 * f)))
    assert {e.collaborator for e in got.events} == {f"c{i:02d}" for i in set(range(count)) - set(chosen)}
    assert all(e.kind == "not_selected" for e in got.events)


def test_minimum_replies() -> None:
    assert [Krum(f).min_replies(50) for f in (0, 1, 2)] == [3, 5, 7]
    assert [MultiKrum(f).min_replies(50) for f in (0, 1, 2)] == [3, 5, 7]
    assert [Bulyan(f).min_replies(50) for f in (0, 1, 2)] == [3, 7, 11]
    assert [TrimmedMean(b).min_replies(50) for b in (0.0, 0.1, 0.2, 0.3, 0.45)] == [3, 10, 5, 4, 3]
    assert CoordinateMedian().min_replies(50) == GeometricMedian().min_replies(50) == 3
    assert NormClipping(Krum(2), 1.0).min_replies(50) == 7 and NormClipping(FedAvg(), 1.0).min_replies(50) == 1
    assert all(s.needs_individual_updates for s in (CoordinateMedian(), TrimmedMean(), GeometricMedian(), Krum(), MultiKrum(), Bulyan()))
    assert NormClipping(Krum(), 1.0).needs_individual_updates and not NormClipping(FedAvg(), 1.0).needs_individual_updates


@pytest.mark.parametrize(
    "make, problem",
    [
        (lambda: Krum(-1), "strategy Krum: byzantine is -1; expected at least 0"),
        (lambda: MultiKrum(1, keep=0), "strategy MultiKrum: keep is 0; expected at least 1"),
        (lambda: Bulyan(-2), "strategy Bulyan: byzantine is -2"),
        (lambda: TrimmedMean(0.5), "strategy TrimmedMean: beta is 0.5; expected 0 <= beta < 0.5"),
        (lambda: GeometricMedian(max_iterations=0), "strategy GeometricMedian: max_iterations is 0"),
        (lambda: GeometricMedian(tolerance=-1.0), "strategy GeometricMedian: tolerance is -1.0"),
        (lambda: NormClipping(FedAvg(), 0.0), "strategy NormClipping: max_norm is 0.0"),
    ],
)
def test_settings_out_of_range_are_refused(make, problem: str) -> None:
    with pytest.raises(PlanError, match=re.escape(problem)):
        make()


def test_with_too_few_updates_the_global_model_is_kept_and_each_site_is_told() -> None:
    rng = np.random.default_rng(5)
    model = global_model(rng)
    sent = updates(rng, model, 4, False)
    got = aggregate(Krum(byzantine=1), model, sent, False)
    assert all(np.array_equal(got.model[n], model[n]) for n in model)
    assert [(e.collaborator, e.kind, e.value, e.bound) for e in got.events] == [(f"c{i:02d}", "held", 4, 5) for i in range(4)]
    assert "only 4 updates left after the bounds, Krum(byzantine=1) needs 5: the global model is kept" in got.events[0].describe()
    assert aggregate(CoordinateMedian(), model, [], False).model == dict(model)


def test_the_round_waits_for_the_replies_krum_needs() -> None:
    """Cut-off passed and min_reports 1: the round still waits for Krum's 2f + 3 = 5 reports."""
    names = tuple(f"c{i:02d}" for i in range(6))
    clock = FakeClock()
    engine = RoundEngine(
        collaborators=names, tasks=TASKS, assigner=RandomGroupedAssigner(names, ALL), rounds_to_train=1,
        model={"w": np.zeros(3, np.float32)}, clock=clock, final_validation=False, strategy=Krum(1),
        policy=StragglerPolicy("cutoff_time", cutoff_seconds=1.0, min_reports=1),
    )
    clock.now = 5.0
    outcome = None
    for index, (name, value) in enumerate(zip(names, (0.0, 1.5, 2.0, 3.0, 10.0))):
        assert outcome is None and engine.tick() is None, f"closed with {index} reports"
        for task in TASKS:
            tensors = {"w": np.full(3, value, np.float32)} if task == "train" else None
            outcome = honest(engine, result(name, task, tensors=tensors)) or outcome
    assert outcome is not None and outcome.stragglers == ("c05",)
    assert {e.collaborator for e in outcome.bounds} == {"c00", "c01", "c03", "c04"}  # Krum kept c02's, the middle one
    np.testing.assert_array_equal(outcome.model["w"], np.full(3, 2.0, np.float32))


def test_norm_bounds_apply_first_and_sample_counts_buy_nothing() -> None:
    rng = np.random.default_rng(6)
    model = global_model(rng)
    sent = updates(rng, model, 5, True, outliers=1)
    bounds = UpdateBounds(sample_count_multiple=1.1, norm_multiple=None, max_update_norm=3.0)
    got = aggregate(CoordinateMedian(), model, sent, True, bounds)
    norms = np.linalg.norm(flat_changes(model, sent, True), axis=1)
    scales = np.minimum(1.0, 3.0 / norms)
    clipped = [{n: (v * scales[i]).astype(v.dtype) if n in FLOATS else v for n, v in u.items()} for i, u in enumerate(sent)]
    assert_models(got.model, reference(model, clipped, True, lambda c: np.median(c, axis=0)))
    assert {e.kind for e in got.events} == {"clipped"}  # no "capped": c4's 50 samples weigh nothing
    assert {e.collaborator for e in got.events} == {f"c{i:02d}" for i in range(5) if norms[i] > 3.0}


@pytest.mark.parametrize("inner", [FedAvg(), CoordinateMedian(), Krum(1)], ids=repr)
@pytest.mark.parametrize("is_delta", [False, True], ids=["weights", "deltas"])
def test_norm_clipping_is_the_inner_strategy_on_clipped_changes(inner: Strategy, is_delta: bool, tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    model = global_model(rng)
    sent = updates(rng, model, 5, is_delta, outliers=1)
    norms = np.linalg.norm(flat_changes(model, sent, is_delta), axis=1)
    # just above the median site's own norm: whether that site is clipped must not hang on the last
    # bit of two ways of summing the same squares (NumPy's pairwise sum here, the strategy's per tensor)
    limit = float(np.median(norms)) * (1 + 1e-9)
    scales = np.minimum(1.0, limit / norms)
    clipped = []
    for i, u in enumerate(sent):
        own = {}
        for n, v in u.items():
            if n not in FLOATS:
                own[n] = v
                continue
            change = scales[i] * (v.astype(np.float64) - (0 if is_delta else model[n]))
            own[n] = (change + (0 if is_delta else model[n])).astype(v.dtype)
        clipped.append(own)
    stored = [StateView(save_state(tmp_path / f"c{i}.safetensors", u)) for i, u in enumerate(sent)]
    got = aggregate(NormClipping(inner, limit), model, sent, is_delta, stored=stored)
    expected = aggregate(inner, model, clipped, is_delta)
    assert_models(got.model, expected.model)
    clips = [e for e in got.events if e.kind == "clipped"]
    assert sorted(e.collaborator for e in clips) == [f"c{i:02d}" for i in range(5) if norms[i] > limit]
    assert all(e.bound == limit and e.value > limit for e in clips)
    assert [e.collaborator for e in got.events if e.kind != "clipped"] == [e.collaborator for e in expected.events]


class Momentum(Strategy):
    """A stateful strategy with a per-round config, to see that NormClipping hands every hook to it."""

    config_schema: ClassVar[Mapping[str, type]] = {"mu": float}

    def __init__(self) -> None:
        self.rounds = 0

    def configure(self, round_number: int) -> dict:
        return {"mu": 0.5 + round_number}

    def select(self, round_number, candidates, sampling=None):
        return candidates[: round_number + 1]

    def min_replies(self, cohort_size: int) -> int:
        return cohort_size - 1

    def finish(self, context, aggregate):
        self.rounds += 1
        return {name: value + 1 for name, value in aggregate.model.items()}

    def snapshot(self) -> StrategyState:
        return StrategyState({"rounds": self.rounds})

    def restore(self, state: StrategyState) -> None:
        self.rounds = state.values["rounds"]


def test_norm_clipping_hands_every_other_hook_to_the_wrapped_strategy() -> None:
    inner = Momentum()
    wrapped = NormClipping(inner, 1.0)
    assert wrapped.config_schema == {"mu": float} and wrapped.configure(2) == {"mu": 2.5}
    assert wrapped.select(1, ["a", "b", "c"]) == ["a", "b"] and wrapped.min_replies(4) == 3
    model = {"w": np.zeros(2, np.float32)}
    context = RoundContext(0, model, UNBOUNDED, ("a",))
    accumulator = wrapped.accumulator(context)
    accumulator.add(Reply("a", {"w": np.array([3.0, 4.0], np.float32)}, 1.0))
    aggregate = accumulator.result()
    np.testing.assert_allclose(aggregate.model["w"], [0.6, 0.8], rtol=1e-6)  # FedAvg's mean of the clipped change
    np.testing.assert_allclose(wrapped.finish(context, aggregate)["w"], [1.6, 1.8], rtol=1e-6)
    assert wrapped.snapshot() == StrategyState({"rounds": 1})
    wrapped.restore(StrategyState({"rounds": 7}))
    assert inner.rounds == 7
    assert [(e.collaborator, e.kind, e.value, e.bound) for e in aggregate.events] == [("a", "clipped", 5.0, 1.0)]


STRATEGIES = [CoordinateMedian(), TrimmedMean(0.2), GeometricMedian(), Krum(1), MultiKrum(1), Bulyan(1), NormClipping(Krum(1), 2.0)]


@pytest.mark.parametrize("strategy", STRATEGIES, ids=repr)
def test_the_accumulator_keeps_the_saved_copies_not_the_arrays(strategy: Strategy, tmp_path: Path) -> None:
    """Each reply's arrays are zeroed once added: the result is still that of the saved copies."""
    rng = np.random.default_rng(8)
    model = global_model(rng)
    sent = updates(rng, model, 7, False, outliers=1)
    expected = aggregate(strategy, model, sent, False).model
    stored = [StateView(save_state(tmp_path / f"c{i}.safetensors", u)) for i, u in enumerate(sent)]
    arrived = [{n: v.copy() for n, v in u.items()} for u in sent]
    accumulator = strategy.accumulator(RoundContext(0, model, UNBOUNDED, ()))
    for index, update in enumerate(arrived):
        accumulator.add(Reply(f"c{index:02d}", update, 1.0, False, stored[index]))
        for array in update.values():
            array[...] = 0
    assert_models(accumulator.result().model, expected)


@pytest.mark.parametrize("strategy, value", [(CoordinateMedian(), 5.5), (Krum(1), 4.0), (GeometricMedian(), 5.5)], ids=repr)
def test_memory_stays_near_the_model_whatever_the_number_of_replies(strategy: Strategy, value: float, tmp_path: Path) -> None:
    """12 replies of a 16 MB model, kept as views of their saved copies: after the adds the
    accumulator holds no copy, and the close allocates the new model and block-sized
    temporaries, not 12 copies (192 MB)."""
    model = {"w": np.zeros(4 << 20, np.float32), "__opt__.w": np.zeros(1024, np.float32)}
    accumulator = strategy.accumulator(RoundContext(0, model, UNBOUNDED, ()))
    tracemalloc.start()
    try:
        for index in range(12):
            update = {"w": np.full(4 << 20, float(index), np.float32), "__opt__.w": np.zeros(1024, np.float32)}
            view = StateView(save_state(tmp_path / f"c{index}.safetensors", update))
            accumulator.add(Reply(f"c{index:02d}", update, 1.0, False, view))
            del update
        held, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        got = accumulator.result().model
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert float(got["w"][0]) == value  # Krum: 4 and 5 tie (the first is taken)
    model_bytes = model["w"].nbytes
    assert held < 1 << 20, f"{held / 2**20:.1f} MB held after the adds"
    assert peak - held < model_bytes + (40 << 20), f"peak {(peak - held) / 2**20:.0f} MB for a {model_bytes / 2**20:.0f} MB model"
    print(f"{strategy!r}: {held / 2**20:.2f} MB held, close peak {(peak - held) / 2**20:.1f} MB for a {model_bytes / 2**20:.0f} MB model")


def test_the_result_is_independent_of_the_order_of_arrival() -> None:
    rng = np.random.default_rng(9)
    model = global_model(rng)
    sent = updates(rng, model, 7, False, outliers=2)
    for strategy in (GeometricMedian(), Bulyan(1), MultiKrum(1)):
        forward = strategy.accumulator(RoundContext(0, model, UNBOUNDED, ()))
        for index, update in enumerate(sent):
            forward.add(Reply(f"c{index:02d}", update, 1.0, False))
        assert_models(forward.result().model, aggregate(strategy, model, sent, False).model)


def test_a_result_not_finite_in_the_model_dtype_keeps_the_global_model() -> None:
    model = {"w": np.full(4, 3e38, np.float32)}
    sent = [{"w": np.full(4, 3e38, np.float32)} for _ in range(3)]  # deltas: 3e38 + 3e38 overflows float32
    got = aggregate(CoordinateMedian(), model, sent, True)
    np.testing.assert_array_equal(got.model["w"], model["w"])
    assert [e.kind for e in got.events] == ["held"] * 3
    assert "CoordinateMedian() of the updates is not finite in tensor 'w''s dtype: the global model is kept" in got.events[0].describe()


@pytest.mark.parametrize("strategy", [Bulyan(byzantine=1), GeometricMedian(), Krum(byzantine=1)], ids=lambda s: type(s).__name__)
def test_an_update_whose_norm_overflows_float64_is_left_out_not_chosen(strategy: Strategy) -> None:
    """Finite values near float64's limit overflow the Gram matrix: that update is infinitely
    far from the others (never a NaN that an argmin would pick, nor one that stalls Weiszfeld)."""
    rng = np.random.default_rng(7)
    model = {"w": np.zeros(8)}
    sent = [{"w": rng.normal(scale=0.1, size=8)} for _ in range(6)] + [{"w": np.full(8, 1e305)}]
    out = aggregate(strategy, model, sent, is_delta=False)
    assert np.isfinite(out.model["w"]).all() and np.abs(out.model["w"]).max() < 1.0
    assert not [e for e in out.events if e.kind == "held"]
    if not isinstance(strategy, GeometricMedian):
        assert "c06" in {e.collaborator for e in out.events if e.kind == "not_selected"}
