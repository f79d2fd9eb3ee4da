"""Client sampling (strategies/seam.py ClientSampling, the plan's aggregator.settings.sampling):
seeded and reproducible, bounded as the plan says, and only the cohort gets tasks, owes
results and counts for the straggler policy (the pure RoundEngine; the e2e run is in
test_e2e_sampling.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_engine import honest, make_engine, result

from accord.aggregator.plan_engine import strategy_for
from accord.aggregator.stragglers import StragglerPolicy
from accord.errors import PlanError, RefusedError
from accord.messages import Action
from accord.plan.loader import validate_plan
from accord.strategies import ClientSampling

NAMES = [f"site{i}" for i in range(10)]
FOUR = ("a", "b", "c", "d")


def cohorts(sampling: ClientSampling, rounds: int = 20, names=NAMES) -> list[tuple[str, ...]]:
    return [sampling.sample(r, names) for r in range(rounds)]


def test_the_same_seed_gives_the_same_cohorts_and_rounds_differ() -> None:
    first = cohorts(ClientSampling(count=3, seed=5))
    assert first == cohorts(ClientSampling(count=3, seed=5))
    assert len(set(first)) >= 10  # of 120 possible cohorts, 20 rounds do not repeat one much
    assert first != cohorts(ClientSampling(count=3, seed=6))
    assert cohorts(ClientSampling(fraction=0.5, seed=1)) == cohorts(ClientSampling(fraction=0.5, seed=1))


@pytest.mark.parametrize(
    "sampling, size",
    [
        (ClientSampling(), 10),
        (ClientSampling(count=3), 3),
        (ClientSampling(count=1), 1),
        (ClientSampling(count=25), 10),
        (ClientSampling(fraction=0.25), 3),  # ceil(2.5)
        (ClientSampling(fraction=0.3), 3),  # exactly 3, not 4 by rounding
        (ClientSampling(fraction=0.01), 1),  # never an empty cohort
        (ClientSampling(fraction=1.0), 10),
        (ClientSampling(fraction=0.5, count=2), 2),  # both: the smaller
        (ClientSampling(fraction=0.2, count=4), 2),
    ],
)
def test_fraction_and_count_bound_the_cohort(sampling: ClientSampling, size: int) -> None:
    for cohort in cohorts(sampling):
        assert len(cohort) == size == len(set(cohort))
        assert list(cohort) == [n for n in NAMES if n in cohort]  # a subset, in the candidates' order


def test_only_the_cohort_gets_tasks_and_owes_results() -> None:
    sampling = ClientSampling(count=2, seed=3)
    engine = make_engine(FOUR, rounds=2, sampling=sampling)
    cohort = sampling.sample(0, FOUR)
    assert engine.current is not None and engine.current.assigned == cohort
    for name in FOUR:
        assert engine.assignment(name).action is (Action.RUN if name in cohort else Action.WAIT)
    outsider = next(n for n in FOUR if n not in cohort)
    with pytest.raises(RefusedError, match="was not assigned"):
        honest(engine, result(outsider, "aggregated_model_validation", metrics={"accuracy": 0.5}))


def run_round(engine, names, round_number: int):
    outcome = None
    for name in names:
        for task in ("aggregated_model_validation", "train", "locally_tuned_model_validation"):
            tensors = {n: t + 1 for n, t in engine.model.items()} if task == "train" else None
            outcome = honest(engine, result(name, task, round_number, metrics={"accuracy": 0.5}, tensors=tensors)) or outcome
    return outcome


def test_a_round_closes_when_its_cohort_reported() -> None:
    sampling = ClientSampling(count=2, seed=3)
    engine = make_engine(FOUR, rounds=2, sampling=sampling)
    first, second = sampling.sample(0, FOUR)
    assert run_round(engine, [first], 0) is None
    outcome = run_round(engine, [second], 0)  # wait_for_all: all of the cohort, not all four
    assert outcome is not None and outcome.stragglers == () and engine.round_number == 1
    assert engine.current is not None and engine.current.assigned == sampling.sample(1, FOUR)


def test_the_straggler_policy_counts_only_the_cohort() -> None:
    """percentage 0.5 of a cohort of 2 is 1 report (of all four it would be 2)."""
    sampling = ClientSampling(count=2, seed=3)
    policy = StragglerPolicy(policy="percentage", percentage=0.5)
    engine = make_engine(FOUR, rounds=2, sampling=sampling, policy=policy)
    cohort = sampling.sample(0, FOUR)
    outcome = run_round(engine, cohort[:1], 0)
    assert outcome is not None and outcome.stragglers == cohort[1:]


def test_the_final_validation_asks_everyone_and_a_restart_picks_the_same_cohort() -> None:
    sampling = ClientSampling(count=2, seed=9)
    engine = make_engine(FOUR, rounds=2, sampling=sampling, final_validation=True)
    for number in range(2):
        assert engine.current is not None
        run_round(engine, engine.current.assigned, number)
    assert engine.is_final_validation(engine.round_number) and engine.current is not None
    assert engine.current.assigned == FOUR
    restarted = make_engine(FOUR, rounds=2, sampling=sampling, round_number=1)
    assert restarted.current is not None and restarted.current.assigned == sampling.sample(1, FOUR)


NEEDS_THREE = '''
from accord.strategies import Strategy


class NeedsThree(Strategy):
    def min_replies(self, cohort_size: int) -> int:
        return 3
'''


def test_a_strategy_needing_more_replies_than_the_cohort_is_refused(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "needs.py").write_text(NEEDS_THREE)
    raw = {
        "collaborators": list(FOUR),
        "aggregator": {"settings": {"strategy": {"template": "src.needs.NeedsThree"}, "sampling": {"count": 2}}},
    }
    with pytest.raises(PlanError, match=r"strategy NeedsThree needs at least 3 replies a round, but a round asks 2 of the 4"):
        strategy_for(validate_plan(raw, tmp_path))
    raw["aggregator"]["settings"]["sampling"] = {"count": 3}
    assert type(strategy_for(validate_plan(raw, tmp_path))).__name__ == "NeedsThree"


@pytest.mark.parametrize("sampling, key", [({"seed": -1}, "seed"), ({"count": 0}, "count"), ({"fraction": 1.5}, "fraction"), ({"size": 2}, "size")])
def test_bad_sampling_settings_fail_when_the_plan_loads(tmp_path: Path, sampling: dict, key: str) -> None:
    raw = {"collaborators": list(FOUR), "aggregator": {"settings": {"sampling": sampling}}}
    with pytest.raises(PlanError, match=rf"sampling\.{key}"):
        validate_plan(raw, tmp_path)
