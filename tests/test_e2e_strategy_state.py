"""A strategy's own state is journaled with each round's start: FedAdam (its moments), and a
custom strategy from the workspace's ``src/`` (server momentum with a round counter), are
killed with their aggregator (kill -9) mid-federation and end with the weights of a run
without faults."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_e2e_faults import Sites, assert_same_federation, saved_state, slow_workspace, wait_for

from accord.aggregator.saved import read_snapshot
from accord.experiment.local import run_processes
from accord.plan.loader import Plan, load_plan, update_plan_file
from accord.tensors.state import load_state

pytestmark = pytest.mark.e2e

#: FedAvgM-like, as a user would write it in the workspace's src/ (Accord's code untouched)
MOMENTUM = '''
import numpy as np

from accord.strategies.base import Strategy
from accord.strategies.seam import StrategyState


class Momentum(Strategy):
    """Server momentum on the mean's change, bias-corrected by the rounds stepped so far."""

    def __init__(self, beta: float = 0.9) -> None:
        self.beta = beta
        self.rounds = 0
        self.velocity = {}

    def finish(self, context, aggregate):
        self.rounds += 1
        model = {}
        for name, mean in aggregate.model.items():
            old = np.asarray(context.global_model[name])
            change = np.asarray(mean, np.float64) - old
            velocity = self.beta * self.velocity.get(name, np.zeros_like(change)) + (1 - self.beta) * change
            self.velocity[name] = velocity
            model[name] = (old + velocity / (1 - self.beta**self.rounds)).astype(old.dtype)
        return model

    def snapshot(self):
        return StrategyState({"rounds": self.rounds}, dict(self.velocity))

    def restore(self, state):
        self.rounds = int(state.values["rounds"])
        self.velocity = dict(state.tensors)
'''


#: (strategy, whether the workspace's src/strategies.py defines it)
STRATEGIES = {
    "workspace_momentum": ({"template": "src.strategies.Momentum", "settings": {"beta": 0.5}}, True),
    "fedadam": ({"template": "accord.strategies.FedAdam", "settings": {"eta": 0.01}}, False),
}


def kill_in_round_2(sites: Sites, plan: Plan) -> None:
    """Start the aggregator and both collaborators; kill -9 the aggregator once round 2 has a
    saved result (collaborator1 is slowed, so round 2 stays open after collaborator2's)."""
    sites.start("aggregator")
    sites.start("collaborator1", SLOW_SECONDS="1.0")
    sites.start("collaborator2")
    wait_for(lambda: saved_state(plan).get("round") == 2 and bool(saved_state(plan).get("results")), what="results of round 2")
    sites.kill("aggregator")


def strategy_workspace(root: Path, case: str) -> Plan:
    plan = slow_workspace(root, 2, 4)
    strategy, own_code = STRATEGIES[case]
    if own_code:
        (plan.workspace / "src" / "strategies.py").write_text(MOMENTUM)
    update_plan_file(plan.path, {"aggregator.settings.strategy": strategy})
    return load_plan(plan.path, workspace=plan.workspace)


@pytest.mark.parametrize("case", sorted(STRATEGIES))
def test_a_strategys_state_survives_a_killed_aggregator(tmp_path: Path, case: str) -> None:
    reference = strategy_workspace(tmp_path / "reference", case)
    faulty = strategy_workspace(tmp_path / "faulty", case)
    faulty.resolve_path("save/init.safetensors").write_bytes(reference.resolve_path("save/init.safetensors").read_bytes())
    report = run_processes(reference, timeout=300)
    assert report.ok, report.returncodes

    state_dir = faulty.resolve_path("save/state")
    sites = Sites(faulty)
    try:
        kill_in_round_2(sites, faulty)
        saved = read_snapshot(state_dir / "snapshot-00002.json")["strategy"]
        assert saved["values"] == {"rounds": 2} and saved["tensors"] == "strategy-00002.safetensors"
        velocity = load_state(state_dir / saved["tensors"])
        assert velocity and any(np.abs(v).max() > 0 for v in velocity.values())  # a real, moving state
        sites.start("aggregator")
        codes = sites.wait_all()
    finally:
        sites.close()
    assert codes == {"aggregator": 0, "collaborator1": 0, "collaborator2": 0}, sites.log("aggregator", 2)
    assert "resuming round 2 from" in sites.log("aggregator", 2)
    assert "federation finished: 4 rounds" in sites.log("aggregator", 2)
    assert_same_federation(reference, faulty)
