"""The plan's secure_aggregation section: what it composes with and what it refuses, in one line."""

from __future__ import annotations

import pytest

from accord.aggregator.plan_engine import strategy_for
from accord.errors import PlanError
from accord.plan.secure_aggregation import secagg_params
from accord.simulation import run_simulation
from accord.strategies import FedAdam, FedProx
from accord.strategies.secure import SecureAggregation

NAMES = ["alpha", "beta", "gamma"]
ON = {"aggregator.settings.secure_aggregation.enabled": True, "collaborator.settings.opt_treatment": "RESET"}


@pytest.mark.parametrize(
    "template, settings",
    [("accord.strategies.Krum", {"byzantine": 0}), ("accord.strategies.CoordinateMedian", {}), ("accord.strategies.TrimmedMean", {"beta": 0.1})],
)
def test_a_strategy_that_needs_each_update_is_refused_in_one_line(workspace_factory, template, settings) -> None:
    with pytest.raises(PlanError, match="needs each site's update on its own, but secure aggregation reveals only their sum") as refused:
        workspace_factory(NAMES, 1, {**ON, "aggregator.settings.strategy": {"template": template, "settings": settings}})
    assert "\n" not in str(refused.value) and "secure_aggregation.enabled: false" in str(refused.value)


@pytest.mark.parametrize("strategy", [{"template": "accord.strategies.FedProx", "settings": {"proximal_mu": 0.01}},
                                      {"template": "accord.strategies.FedAdam", "settings": {}}])
def test_fedavg_family_strategies_are_wrapped(workspace_factory, strategy) -> None:
    plan = workspace_factory(NAMES, 1, {**ON, "aggregator.settings.strategy": strategy})
    built = strategy_for(plan)
    assert isinstance(built, SecureAggregation) and isinstance(built.strategy, FedProx | FedAdam)
    assert built.config_schema == built.strategy.config_schema
    assert built.min_replies(3) == 2  # ceil(2 x 3 / 3)
    assert not isinstance(strategy_for(workspace_factory(NAMES, 1)), SecureAggregation)


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"compression_pipeline.settings.upload": ["q8"]}, "masked values do not compress"),
        ({"collaborator.settings.opt_treatment": "CONTINUE_GLOBAL"}, "optimizer state, such as step counts, is not clipped"),
    ],
)
def test_what_secure_aggregation_cannot_carry_is_refused_at_load(workspace_factory, overrides, match) -> None:
    with pytest.raises(PlanError, match=match):
        workspace_factory(NAMES, 1, {**ON, **overrides})


def test_a_threshold_above_the_cohort_and_a_ring_too_small_are_refused(workspace_factory) -> None:
    plan = workspace_factory(NAMES, 1, {**ON, "aggregator.settings.secure_aggregation.threshold": 4})
    with pytest.raises(PlanError, match="threshold is 4, but a round asks 3 sites"):
        strategy_for(plan)
    settings = plan.model.aggregator.settings.secure_aggregation.model_copy(update={"threshold": None, "fraction_bits": 52, "clip": 1000.0})
    with pytest.raises(PlanError, match="secure_aggregation: secure aggregation cannot hold the sum"):
        secagg_params(settings, 3)


def test_the_simulation_refuses_secure_aggregation(workspace_factory) -> None:
    plan = workspace_factory(NAMES, 1, ON)
    with pytest.raises(PlanError, match="the simulation does not run secure aggregation's phases"):
        run_simulation(plan, clients=NAMES)


def test_a_restarted_aggregator_runs_the_rounds_secure_phases_again_with_a_fresh_seed(workspace_factory) -> None:
    """Mid-phase state is not journaled: a restart opens the round again at ``advertise`` with a
    new round seed; the sites' replies to the old session are refused as not owed."""
    from accord.aggregator.runtime import AggregatorRuntime
    from accord.collaborator.secure_site import SecureSite
    from accord.errors import RefusedError
    from accord.messages import TaskResult
    from accord.strategies.secure_phases import decode_opening
    from accord.workspace.initialize import initialize_model

    plan = workspace_factory(NAMES, 1, ON)
    initialize_model(plan)
    settings = plan.model.aggregator.settings.secure_aggregation
    runtime = AggregatorRuntime(plan)
    try:
        first = {name: runtime.get_tasks(name, plan.hash, 1.0) for name in NAMES}
        assert {a.phase for a in first.values()} == {"advertise"}
        seed, cohort = decode_opening(first["alpha"].payload)
        model = runtime.engine.model
        sites = {name: SecureSite(name, settings) for name in NAMES}
        for name in NAMES:  # every site advertises: the share phase opens
            advert = sites[name].answer("advertise", 0, first[name].payload, model)
            runtime.submit(TaskResult(name, 0, "advertise", 0, {}, model_digest=runtime.engine.model_digest, phase="advertise", payload=advert), plan.hash)
        assert runtime.engine.current.phase == "share"
    finally:
        runtime.close()
    restarted = AggregatorRuntime(plan)
    try:
        again = restarted.get_tasks("alpha", plan.hash, 1.0)
        assert again.round_number == 0 and again.phase == "advertise"
        new_seed, new_cohort = decode_opening(again.payload)
        assert new_cohort == cohort and new_seed != seed
        stale = TaskResult("beta", 0, "share", 0, {}, model_digest=restarted.engine.model_digest, phase="share", payload=b"x")
        with pytest.raises(RefusedError, match=r"is in phase 'advertise'|not assigned"):
            restarted.submit(stale, plan.hash)
    finally:
        restarted.close()
