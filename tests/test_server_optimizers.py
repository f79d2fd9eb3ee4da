"""Server optimizers (strategies/fedopt.py and its family): each update rule against a NumPy
reference written here from its paper's equations, through the real RoundEngine; the moments
survive snapshot/restore exactly; deltas and weights give the same step; the plan builds them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_engine import full_round, honest, make_engine, result

from accord.aggregator.assigner import RandomGroupedAssigner
from accord.aggregator.engine import RoundEngine
from accord.errors import AccordError, PlanError
from accord.messages import TaskResult
from accord.plan.loader import validate_plan
from accord.plan.round_settings import TaskSpec
from accord.strategies import FedAdagrad, FedAdam, FedAvg, FedAvgM, FedYogi, Strategy, StrategyState
from accord.strategies.fedopt import STEP_BLOCK
from accord.strategies.mean import BoundedMean
from accord.strategies.seam import Aggregate, Reply, RoundContext

TASKS = {"train": TaskSpec(function="train")}
SITES = ("a", "b", "c")
COUNTS = {"a": 10, "b": 30, "c": 60}
ROUNDS = 3


def initial(dtype=np.float64) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        "w": rng.normal(size=(3, 4)).astype(dtype),
        "b": rng.normal(size=4).astype(dtype),
        "steps": np.array(5, np.int64),
        "__opt__.exp_avg": rng.normal(size=4).astype(dtype),
    }


def site_model(global_model, site: str, round_number: int) -> dict[str, np.ndarray]:
    """What ``site`` sends back in ``round_number``: the global moved by seeded noise."""
    rng = np.random.default_rng([SITES.index(site), round_number])
    out = {}
    for name, t in global_model.items():
        if t.dtype.kind == "f":
            out[name] = (t + rng.normal(scale=0.1, size=t.shape) + 0.05).astype(t.dtype)
        else:
            out[name] = t + SITES.index(site)
    return out


def engine(strategy: Strategy, model, rounds: int = ROUNDS, round_number: int = 0) -> RoundEngine:
    return RoundEngine(
        collaborators=SITES,
        tasks=TASKS,
        assigner=RandomGroupedAssigner(SITES, [{"name": "all", "percentage": 1.0, "tasks": ["train"]}]),
        rounds_to_train=rounds,
        model=model,
        clock=lambda: 0.0,
        final_validation=False,
        strategy=strategy,
        round_number=round_number,
    )


def run(strategy: Strategy, model, rounds: int = ROUNDS, start: int = 0, deltas: bool = False):
    """Rounds ``start..rounds-1`` through the engine; the final model and each round's global."""
    eng = engine(strategy, model, rounds, start)
    globals_seen = []
    while not eng.finished:
        number, current = eng.round_number, eng.model
        globals_seen.append(current)
        for site in SITES:
            sent = site_model(current, site, number)
            if deltas:
                sent = {n: (t - current[n] if t.dtype.kind == "f" else t) for n, t in sent.items()}
            eng.submit(TaskResult(site, number, "train", COUNTS[site], {}, sent, deltas, model_digest=eng.model_digest))
    return eng.model, globals_seen


def mean_change(global_model, name: str, round_number: int) -> np.ndarray:
    """Δ_t of the papers: the sample-weighted mean of the sites' models minus the global."""
    total = sum(COUNTS.values())
    mean = sum(COUNTS[s] / total * site_model(global_model, s, round_number)[name].astype(np.float64) for s in SITES)
    return mean - global_model[name].astype(np.float64)


def reference(rule: str, model, **p) -> dict[str, np.ndarray]:
    """The update rules as the papers write them, per stepped tensor, over ROUNDS rounds.

    Hsu et al. 2019 (FedAvgM): g = x - mean, v = β v + g, x = x - η v.
    Reddi et al. 2021, Algorithm 2: m = β1 m + (1-β1) Δ; Adagrad v = v + Δ²; Adam
    v = β2 v + (1-β2) Δ²; Yogi v = v - (1-β2) Δ² sign(v - Δ²); x = x + η m / (√v + τ);
    m₋₁ = 0, v₋₁ = τ².
    """
    x = {n: model[n].astype(np.float64) for n in ("w", "b")}
    m = {n: np.zeros_like(x[n]) for n in x}
    v = {n: np.full_like(x[n], p.get("tau", 0.0) ** 2) for n in x}
    for t in range(ROUNDS):
        current = {**model, **{n: x[n].astype(model[n].dtype) for n in x}}
        for n in x:
            delta = mean_change(current, n, t)
            if rule == "fedavgm":
                m[n] = p["momentum"] * m[n] + (-delta)
                x[n] = x[n] - p["server_lr"] * m[n]
                continue
            m[n] = p["beta1"] * m[n] + (1 - p["beta1"]) * delta
            if rule == "fedadagrad":
                v[n] = v[n] + delta**2
            elif rule == "fedadam":
                v[n] = p["beta2"] * v[n] + (1 - p["beta2"]) * delta**2
            else:
                v[n] = v[n] - (1 - p["beta2"]) * delta**2 * np.sign(v[n] - delta**2)
            x[n] = x[n] + p["eta"] * m[n] / (np.sqrt(v[n]) + p["tau"])
    return x


ADAPTIVE = {"eta": 0.05, "beta1": 0.8, "beta2": 0.95, "tau": 0.01}
CASES = [
    ("fedavgm", FedAvgM, {"server_lr": 0.7, "momentum": 0.6}),
    ("fedadam", FedAdam, ADAPTIVE),
    ("fedyogi", FedYogi, ADAPTIVE),
    ("fedadagrad", FedAdagrad, ADAPTIVE),
]


@pytest.mark.parametrize("rule, cls, params", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_update_rule_matches_the_papers_equations_over_three_rounds(rule, cls, params, dtype, rtol) -> None:
    model = initial(dtype)
    final, _ = run(cls(**params), model)
    expected = reference(rule, model, **params)
    for name in ("w", "b"):
        assert final[name].dtype == dtype
        np.testing.assert_allclose(final[name], expected[name], rtol=rtol, atol=rtol * 1e-2)
    fedavg_final, _ = run(FedAvg(), model)
    assert not np.allclose(final["w"], fedavg_final["w"])  # the optimizer did step differently


@pytest.mark.parametrize("rule, cls, params", CASES, ids=[c[0] for c in CASES])
def test_optimizer_state_and_non_float_tensors_take_the_aggregate_as_is(rule, cls, params) -> None:
    model = initial()
    replies = [Reply(s, site_model(model, s, 0), COUNTS[s]) for s in SITES]
    context = RoundContext(0, model, cohort=SITES)
    mean = BoundedMean(context)
    for reply in replies:
        mean.add(reply)
    aggregate = mean.result()
    stepped = cls(**params).finish(context, aggregate)
    for name in ("steps", "__opt__.exp_avg"):
        assert stepped[name].dtype == model[name].dtype
        np.testing.assert_array_equal(stepped[name], aggregate.model[name])
    assert not np.array_equal(stepped["w"], aggregate.model["w"])
    state = cls(**params)
    state.finish(context, aggregate)
    assert {k.split(".", 1)[1] for k in state.snapshot().tensors} == {"w", "b"}  # moments only of stepped tensors


def test_fedavgm_without_momentum_at_rate_one_is_fedavg() -> None:
    model = initial()
    final, _ = run(FedAvgM(server_lr=1.0, momentum=0.0), model)
    plain, _ = run(FedAvg(), model)
    for name in model:
        np.testing.assert_allclose(final[name], plain[name], rtol=1e-12)


@pytest.mark.parametrize("rule, cls, params", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_snapshot_then_restore_in_a_new_instance_continues_exactly(rule, cls, params, dtype) -> None:
    model = initial(dtype)
    uninterrupted, _ = run(cls(**params), model)
    first = cls(**params)
    after_two, _ = run(first, model, rounds=2)
    saved = first.snapshot()
    assert saved.values == {"rounds": 2}
    assert set(saved.tensors) == {f"{m}.{n}" for m in cls.moments for n in ("w", "b")}
    assert all(t.dtype == dtype for t in saved.tensors.values())
    # what a restart sees: a copy, detached from the saved instance (as if read back from disk)
    copied = StrategyState(dict(saved.values), {k: np.array(v) for k, v in saved.tensors.items()})
    resumed = cls(**params)
    resumed.restore(copied)
    final, _ = run(resumed, after_two, rounds=ROUNDS, start=2)
    for name in model:
        np.testing.assert_array_equal(final[name], uninterrupted[name])  # bit-identical


def test_a_snapshot_is_a_copy_the_optimizer_does_not_change_later() -> None:
    strategy = FedAdam()
    run(strategy, initial(), rounds=1)
    saved = strategy.snapshot()
    kept = {k: v.copy() for k, v in saved.tensors.items()}
    run(strategy, initial(), rounds=2, start=1)
    assert all(np.array_equal(saved.tensors[k], kept[k]) for k in kept)


def test_restoring_another_strategys_state_is_refused_by_name() -> None:
    with pytest.raises(AccordError, match=r"FedAvgM.*'v\.w'.*m\.<tensor>"):
        FedAvgM().restore(StrategyState({"rounds": 1}, {"v.w": np.zeros(2)}))


@pytest.mark.parametrize("rule, cls, params", CASES, ids=[c[0] for c in CASES])
def test_deltas_and_weights_give_the_same_step(rule, cls, params) -> None:
    model = initial()
    from_weights, _ = run(cls(**params), model)
    from_deltas, _ = run(cls(**params), model, deltas=True)
    for name in model:
        np.testing.assert_allclose(from_deltas[name], from_weights[name], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    "cls, settings",
    [(FedAvgM, {"momentum": 1.0}), (FedAvgM, {"server_lr": 0}), (FedAdam, {"beta2": 1.0}), (FedYogi, {"tau": 0}), (FedAdagrad, {"eta": -1})],
)
def test_out_of_range_settings_are_refused(cls, settings) -> None:
    with pytest.raises(AccordError, match=rf"{cls.__name__}\(.*expected"):
        cls(**settings)


@pytest.mark.parametrize("name", ["FedAvgM", "FedAdam", "FedYogi", "FedAdagrad", "fedadam.FedAdam"])
def test_the_plan_builds_each_by_name_with_typed_settings(tmp_path: Path, name: str) -> None:
    raw = {"collaborators": ["a"], "aggregator": {"settings": {"strategy": {"template": f"accord.strategies.{name}", "settings": {}}}}}
    assert type(validate_plan(raw, tmp_path).strategy()).__name__ == name.split(".")[-1]
    key = "momentum" if name == "FedAvgM" else "beta1"
    raw["aggregator"]["settings"]["strategy"]["settings"] = {key: "fast"}
    with pytest.raises(PlanError, match=rf"settings are wrong: {key}"):
        validate_plan(raw, tmp_path)
    raw["aggregator"]["settings"]["strategy"]["settings"] = {key: 1.5}  # well typed, out of range
    with pytest.raises(AccordError, match=rf"{key}=1\.5.*expected.*fix aggregator\.settings\.strategy\.settings"):
        validate_plan(raw, tmp_path)


@pytest.mark.parametrize("rule, cls, params", CASES, ids=[c[0] for c in CASES])
def test_the_final_validation_round_takes_no_step(rule, cls, params) -> None:
    """The last model is the one the sites validated: no step on the momentum after it."""
    strategy = cls(**params)
    eng = make_engine(("a", "b"), rounds=1, final_validation=True, strategy=strategy)
    full_round(eng, {"a": (1.0, 1), "b": (3.0, 3)})
    trained, saved = eng.model, strategy.snapshot()
    assert eng.is_final_validation(eng.round_number)
    for name in ("a", "b"):
        honest(eng, result(name, "aggregated_model_validation", 1, 10, {"accuracy": 0.5}))
    assert eng.finished and eng.model is trained
    assert strategy.snapshot().values == saved.values == {"rounds": 1}


def test_moments_restored_for_another_model_are_refused_by_name() -> None:
    strategy = FedAdam()
    strategy.restore(StrategyState({"rounds": 1}, {"m.w": np.zeros((4, 3)), "v.w": np.ones((4, 3))}))
    with pytest.raises(AccordError, match=r"saved m\.w is float64\[4, 3\], but the model's w needs float64\[3, 4\]"):
        run(strategy, initial(), rounds=1)


def test_moments_are_stepped_block_by_block_across_a_large_tensor() -> None:
    """A tensor of several blocks (STEP_BLOCK) gives the whole-tensor maths."""
    model = {"w": np.linspace(-1, 1, 2 * STEP_BLOCK + 5)}
    context = RoundContext(0, model, cohort=("a",))
    target = {"w": model["w"] * 0.5 + 0.1}
    strategy = FedAdam(eta=0.1, tau=0.01)
    for _ in range(2):
        out = strategy.finish(context, Aggregate(target))
    delta = target["w"] - model["w"]
    m1, v1 = 0.1 * delta, 0.99 * 1e-4 + 0.01 * delta**2
    m2, v2 = 0.9 * m1 + 0.1 * delta, 0.99 * v1 + 0.01 * delta**2
    np.testing.assert_allclose(out["w"], model["w"] + 0.1 * m2 / (np.sqrt(v2) + 0.01), rtol=1e-12, atol=1e-15)
