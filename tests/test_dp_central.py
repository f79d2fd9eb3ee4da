"""Central DP (strategies/dp_fedavg.py) and its accountant (dp/accountant.py): the reported
epsilon is dp-accounting's own, the noise has the planned standard deviation, adaptive clipping
reaches its quantile, target_epsilon stops training, and the noise is a function of the secret
seed, the round and the set of replies included (a restart over the same replies draws the same
noise, a close over another set fresh noise; rounds never repeat one another's)."""

from __future__ import annotations

import numpy as np
import pytest
from test_engine import full_round, make_engine

pytest.importorskip("dp_accounting")
import dp_accounting

from accord.dp.accountant import RoundMechanism, Rounds, noise_multiplier_for
from accord.errors import PlanError
from accord.strategies import DPFedAvg, Krum, Reply, RoundContext, Strategy
from accord.strategies.seam import ClientSampling


def context(size: int = 1000, cohort: int = 10, population: int = 100, round_number: int = 0) -> RoundContext:
    return RoundContext(
        round_number, {"w": np.zeros(size, np.float32)}, cohort=tuple(f"s{i}" for i in range(cohort)), population=population
    )


def noisy_mean(strategy: Strategy, ctx: RoundContext, changes: list[np.ndarray]) -> np.ndarray:
    acc = strategy.accumulator(ctx)
    for i, change in enumerate(changes):
        acc.add(Reply(f"s{i}", {"w": change.astype(np.float32)}, 10.0))
    aggregate = acc.result()
    model = strategy.finish(ctx, aggregate)
    return np.asarray(model["w"], np.float64)


def test_reported_epsilon_is_dp_accountings_own() -> None:
    strategy = DPFedAvg(noise_multiplier=1.1, clip_norm=1.0, delta=1e-5, noise_seed=7)
    ctx = context(size=4, cohort=10, population=100)
    for _ in range(5):
        noisy_mean(strategy, ctx, [np.ones(4)] * 10)
    reported = strategy.report()["privacy/epsilon"]
    accountant = dp_accounting.rdp.RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
    # replace-one: a sum of changes clipped to C moves by up to 2 C, so the multiplier is z / 2
    event = dp_accounting.SampledWithoutReplacementDpEvent(100, 10, dp_accounting.GaussianDpEvent(1.1 / 2))
    accountant.compose(event, 5)
    assert reported == pytest.approx(accountant.get_epsilon(1e-5), rel=1e-12)
    assert strategy.report()["privacy/delta"] == 1e-5


def test_noise_has_the_planned_standard_deviation() -> None:
    z, clip, cohort = 0.8, 2.0, 10
    strategy = DPFedAvg(noise_multiplier=z, clip_norm=clip, noise_seed=11)
    ctx = context(size=200_000, cohort=cohort)
    noise = noisy_mean(strategy, ctx, [np.zeros(200_000)] * cohort)  # no change: all of it is noise
    expected = z * clip / cohort
    # the sample std of 200,000 normals is within 1% of the truth with overwhelming probability
    assert noise.std() == pytest.approx(expected, rel=0.01)
    assert abs(noise.mean()) < 5 * expected / np.sqrt(noise.size)


def test_the_sum_of_clipped_changes_is_divided_by_the_cohort_unweighted() -> None:
    strategy = DPFedAvg(noise_multiplier=0.0, clip_norm=1.0, noise_seed=1)
    ctx = context(size=4, cohort=4)
    big = np.full(4, 10.0)  # norm 20: clipped to 1, i.e. 0.5 a coordinate
    small = np.full(4, 0.1)  # norm 0.2: kept
    # only 2 of the 4 asked replied: the other 2 add nothing; the mean is still over 4
    mean = noisy_mean(strategy, ctx, [big, small])
    assert mean == pytest.approx(np.full(4, (0.5 + 0.1) / 4), rel=1e-6)


def test_noise_is_the_rounds_and_the_seeds() -> None:
    changes = [np.zeros(1000)] * 10
    first = noisy_mean(DPFedAvg(noise_multiplier=1.0, clip_norm=1.0, noise_seed=5), context(round_number=3), changes)
    again = noisy_mean(DPFedAvg(noise_multiplier=1.0, clip_norm=1.0, noise_seed=5), context(round_number=3), changes)
    other_round = noisy_mean(DPFedAvg(noise_multiplier=1.0, clip_norm=1.0, noise_seed=5), context(round_number=4), changes)
    secret = noisy_mean(DPFedAvg(noise_multiplier=1.0, clip_norm=1.0), context(round_number=3), changes)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other_round)
    assert not np.allclose(first, secret)  # no plan seed: a secret one


def test_a_second_close_of_a_round_over_another_reply_set_draws_fresh_noise() -> None:
    """Finding 7 (review 12): round r closed over {a, b}, then (after a restart) over {a, b, c}
    with the same secret seed; the two releases must not differ by c's noise-free update / m.
    The same set, in another order, draws the same noise (an exact replay stays exact)."""
    ctx = RoundContext(3, {"w": np.zeros(6, np.float64)}, cohort=("a", "b", "c"), population=3)
    updates = {n: np.random.default_rng(i).normal(size=6) * 0.1 for i, n in enumerate("abc")}

    def release(names: str, sent: dict[str, np.ndarray] = updates) -> np.ndarray:
        acc = DPFedAvg(noise_multiplier=5.0, clip_norm=1.0, noise_seed=12345).accumulator(ctx)
        for n in names:
            acc.add(Reply(n, {"w": sent[n]}, 1.0, True))
        return np.asarray(acc.result().model["w"])

    ab, abc = release("ab"), release("abc")
    assert not np.allclose(abc - ab, updates["c"] / 3, atol=1e-3)  # c's update does not show through
    np.testing.assert_allclose(release("ba"), ab, rtol=0, atol=1e-12)  # the same set: the same noise
    resent = dict(updates, b=updates["b"] + 1e-9)  # the same names, another update from b: fresh noise
    assert not np.allclose(release("ab", resent), ab, atol=1e-3)


def test_snapshot_restores_the_seed_clip_and_accountant() -> None:
    strategy = DPFedAvg(noise_multiplier=1.0, clip_norm=1.0, target_quantile=0.5)
    for r in range(3):
        noisy_mean(strategy, context(size=10, round_number=r), [np.full(10, 0.01 * r)] * 10)
    restarted = DPFedAvg(noise_multiplier=1.0, clip_norm=1.0, target_quantile=0.5)
    restarted.restore(strategy.snapshot())
    assert restarted.report() == strategy.report() and restarted.rounds.count == 3
    changes = [np.zeros(10)] * 10
    np.testing.assert_array_equal(
        noisy_mean(restarted, context(size=10, round_number=3), changes),
        noisy_mean(strategy, context(size=10, round_number=3), changes),
    )


def test_adaptive_clip_converges_to_the_target_quantile() -> None:
    rng = np.random.default_rng(0)
    strategy = DPFedAvg(noise_multiplier=0.5, clip_norm=0.1, target_quantile=0.3, clip_learning_rate=0.2, noise_seed=3)
    cohort, size = 50, 8
    norms = rng.lognormal(mean=0.0, sigma=0.5, size=(200, cohort))  # the sites' norms, round by round
    for r in range(200):
        changes = [np.full(size, n / np.sqrt(size)) for n in norms[r]]
        noisy_mean(strategy, context(size=size, cohort=cohort, round_number=r), changes)
    target = np.quantile(norms, 0.3)
    assert strategy.clip_norm == pytest.approx(target, rel=0.15)
    assert strategy.report()["privacy/unclipped_fraction"] == pytest.approx(0.3, abs=0.15)
    # two queries a round (the sum and the count), both accounted
    assert strategy.rounds.rows[0][1].noise_multipliers == (0.25, cohort / 20)


def test_target_epsilon_stops_training_before_the_round_that_would_pass_it() -> None:
    z = noise_multiplier_for(3.0, 1e-5, rounds=4, sample_size=2, population=2)
    strategy = DPFedAvg(noise_multiplier=z, clip_norm=1.0, target_epsilon=3.0, noise_seed=1)
    engine = make_engine(collaborators=("a", "b"), rounds=10, strategy=strategy, final_validation=True)
    spent = []
    for r in range(4):
        outcome = full_round(engine, {"a": (0.1, 1), "b": (0.2, 1)}, round_number=r)
        spent.append(outcome.metrics["privacy/epsilon"])
    assert spent == sorted(spent) and spent[-1] == pytest.approx(3.0, rel=1e-3)
    assert engine.stopped and "past the plan's target_epsilon 3" in engine.stopped
    assert engine.is_final_validation(engine.round_number)  # the last model is still validated
    assert engine.current.number == 10


def test_no_round_fits_the_target_before_round_0() -> None:
    strategy = DPFedAvg(noise_multiplier=0.1, clip_norm=1.0, target_epsilon=0.01)
    engine = make_engine(collaborators=("a", "b"), rounds=3, strategy=strategy, final_validation=False)
    assert engine.finished and "round 0 would take epsilon from 0.0000" in engine.stopped


def test_the_cohort_is_drawn_with_the_secret_seed_at_the_plans_size() -> None:
    names = [f"s{i}" for i in range(100)]
    plan_sampling = ClientSampling(count=10, seed=0)
    cohorts = {tuple(DPFedAvg(noise_multiplier=1.0, clip_norm=1.0).select(0, names, plan_sampling)) for _ in range(5)}
    assert len(cohorts) == 5 and all(len(c) == 10 for c in cohorts)
    assert tuple(plan_sampling.sample(0, names)) not in cohorts


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"noise_multiplier": -1.0, "clip_norm": 1.0}, "noise_multiplier"),
        ({"noise_multiplier": 1.0, "clip_norm": 0.0}, "clip_norm"),
        ({"noise_multiplier": 1.0, "clip_norm": 1.0, "delta": 1.0}, "delta"),
        ({"noise_multiplier": 1.0, "clip_norm": 1.0, "target_quantile": 1.5}, "target_quantile"),
        ({"noise_multiplier": 1.0, "clip_norm": 1.0, "strategy": Krum(byzantine=1)}, "strategy"),
    ],
)
def test_bad_settings_are_refused_by_name(settings: dict, named: str) -> None:
    with pytest.raises(PlanError, match=f"DPFedAvg: {named}"):
        DPFedAvg(**settings)


def test_calibration_round_trips_through_the_accountant() -> None:
    z = noise_multiplier_for(8.0, 1e-5, rounds=20, sample_size=5, population=50)
    rounds = Rounds()
    for _ in range(20):
        rounds.add(RoundMechanism(5, 50, (z / 2,)))
    assert rounds.epsilon(1e-5) == pytest.approx(8.0, rel=1e-3)
    assert Rounds.from_json(rounds.as_json()) == rounds


def test_the_plan_builds_it_with_or_without_a_wrapped_strategy(tmp_path) -> None:
    from accord.plan.strategy import build_strategy

    plain = build_strategy(
        {"template": "accord.strategies.DPFedAvg", "settings": {"noise_multiplier": 1, "clip_norm": 0.5}}, tmp_path
    )
    assert type(plain.strategy).__name__ == "FedAvg" and plain.noise_multiplier == 1.0
    wrapped = build_strategy(
        {
            "template": "accord.strategies.DPFedAvg",
            "settings": {
                "noise_multiplier": 1.0,
                "clip_norm": 0.5,
                "target_epsilon": 3,
                "strategy": {"template": "accord.strategies.FedAvgM"},
            },
        },
        tmp_path,
    )
    assert type(wrapped.strategy).__name__ == "FedAvgM" and wrapped.target_epsilon == 3.0
    with pytest.raises(PlanError, match="noise_seed"):
        build_strategy(
            {
                "template": "accord.strategies.DPFedAvg",
                "settings": {"noise_multiplier": 1.0, "clip_norm": 0.5, "noise_seed": "x"},
            },
            tmp_path,
        )


def test_a_sampled_cohort_is_accounted_as_m_of_the_plans_sites() -> None:
    strategy = DPFedAvg(noise_multiplier=1.0, clip_norm=1.0, noise_seed=4)
    engine = make_engine(
        collaborators=("a", "b", "c", "d"), rounds=2, strategy=strategy, sampling=ClientSampling(count=2, seed=0)
    )
    cohort = engine.current.assigned
    assert len(cohort) == 2 and engine.current.context.population == 4
    outcome = full_round(engine, {name: (0.5, 1) for name in cohort})
    accountant = dp_accounting.rdp.RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
    accountant.compose(dp_accounting.SampledWithoutReplacementDpEvent(4, 2, dp_accounting.GaussianDpEvent(0.5)))
    assert outcome.metrics["privacy/epsilon"] == pytest.approx(accountant.get_epsilon(1e-5), rel=1e-12)


def test_a_simulation_of_many_clients_accounts_its_sampled_cohorts(tmp_path) -> None:
    from simulation_clients import Counted, tiny_plan

    from accord.metric_records import read_metrics
    from accord.simulation import run_simulation

    strategy = {"template": "accord.strategies.DPFedAvg", "settings": {"noise_multiplier": 1.0, "clip_norm": 1.0}}
    plan = tiny_plan(
        tmp_path, rounds=3, **{"aggregator.settings.sampling": {"count": 20}, "aggregator.settings.strategy": strategy}
    )
    result = run_simulation(plan, Counted, 400)
    assert result.finished and [r.clients for r in result.rounds] == [20, 20, 20]
    records = read_metrics(plan.resolve_path(plan.model.aggregator.settings.metrics_path))
    spent = [r.value for r in sorted(records, key=lambda r: r.round) if r.task == "privacy" and r.metric == "epsilon"]
    expected = Rounds()
    for _ in range(3):
        expected.add(RoundMechanism(20, 400, (0.5,)))
    assert len(spent) == 3 and spent[-1] == pytest.approx(expected.epsilon(1e-5), rel=1e-12)


def test_a_stop_with_nothing_to_validate_finishes() -> None:
    from test_engine import TASKS

    from accord.aggregator.assigner import RandomGroupedAssigner
    from accord.aggregator.engine import RoundEngine

    train_only = {"train": TASKS["train"]}
    engine = RoundEngine(
        collaborators=("a", "b"),
        tasks=train_only,
        assigner=RandomGroupedAssigner(("a", "b"), [{"name": "all", "percentage": 1.0, "tasks": ["train"]}]),
        rounds_to_train=3,
        model={"w": np.zeros(2, np.float32)},
        clock=lambda: 0.0,
        strategy=DPFedAvg(noise_multiplier=0.1, clip_norm=1.0, target_epsilon=0.01),
    )
    assert engine.finished and engine.stopped


def test_wrapped_in_norm_clipping_it_still_accounts_and_adapts() -> None:
    from accord.strategies import NormClipping

    dp = DPFedAvg(noise_multiplier=1.0, clip_norm=1.0, target_quantile=0.5, noise_seed=2)
    wrapped = NormClipping(dp, max_norm=100.0)
    noisy_mean(wrapped, context(size=4, cohort=10), [np.full(4, 0.01)] * 10)
    assert dp.rounds.count == 1 and dp.clip_norm != 1.0
    assert wrapped.report()["privacy/epsilon"] == dp.report()["privacy/epsilon"] > 0
