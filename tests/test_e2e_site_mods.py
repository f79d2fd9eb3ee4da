"""The site's entry point in real processes (fx aggregator start, fx collaborator start, mutual
TLS on 127.0.0.1): a plan's ClipUpdate bounds what the aggregator receives, FedProx's mu reaches
the sites' training, and a config the site's plan does not allow is refused there and reported."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import FAST
from test_e2e_faults import Sites, wait_for

from accord.experiment.local import prepare_workspace
from accord.metric_records import read_metrics
from accord.runners.base import OPTIMIZER_PREFIX
from accord.tensors.state import load_state

pytestmark = pytest.mark.e2e

MAX_NORM = 0.01


def change_norm(before: dict, after: dict) -> float:
    """The L2 norm of the model's change (float tensors, optimizer state left out: what ClipUpdate bounds)."""
    names = [n for n in before if before[n].dtype.kind == "f" and not n.startswith(OPTIMIZER_PREFIX)]
    return float(np.sqrt(sum(np.sum((after[n].astype(np.float64) - before[n]) ** 2) for n in names)))


def federate(plan) -> Sites:
    """Run the aggregator and both collaborators to the end; each must exit 0."""
    sites = Sites(plan)
    try:
        for name in ("aggregator", "collaborator1", "collaborator2"):
            sites.start(name)
        codes = sites.wait_all()
    finally:
        sites.close()
    assert codes == {"aggregator": 0, "collaborator1": 0, "collaborator2": 0}, sites.log("aggregator")
    return sites


def test_a_plans_clip_update_bounds_every_update_the_aggregator_receives(tmp_path: Path) -> None:
    """Two sites, two rounds, both clipping their updates to norm 0.01 (FedAvg, weights and
    optimizer state sent: CONTINUE_GLOBAL; the optimizer state is not clipped):
    each round's mean of clipped changes is within 0.01 of the model it started from, so the
    final model is within 0.02 of the initial one, though one epoch of Adam moves it much further."""
    mods = [{"template": "accord.mods.ClipUpdate", "settings": {"max_norm": MAX_NORM}}]
    plan = prepare_workspace(tmp_path / "ws", 2, 2, overrides={**FAST, "collaborator.settings.mods": mods})
    initial = load_state(plan.resolve_path("save/init.safetensors"))
    sites = federate(plan)
    final = load_state(plan.resolve_path("save/last.safetensors"))
    moved = change_norm(initial, final)
    assert 0 < moved <= 2 * MAX_NORM * (1 + 1e-4), moved
    site_log = sites.log("collaborator1")
    assert "the train update's norm" in site_log and "is clipped to 0.01" in site_log
    unclipped = float(next(line for line in site_log.splitlines() if "is clipped to" in line).split("norm ")[1].split()[0])
    assert unclipped > 10 * MAX_NORM  # the bound did bite: training moved the model far more


def test_fedprox_sends_mu_and_the_sites_train_with_the_proximal_term(tmp_path: Path) -> None:
    strategy = {"template": "accord.strategies.FedProx", "settings": {"proximal_mu": 0.01}}
    plan = prepare_workspace(tmp_path / "ws", 2, 1, overrides={**FAST, "aggregator.settings.strategy": strategy})
    sites = federate(plan)
    for name in ("collaborator1", "collaborator2"):
        assert "round 0 config proximal_mu=0.01" in sites.log(name)
    records = read_metrics(plan.resolve_path("logs/metrics.jsonl"))
    terms = {r.origin: r.value for r in records if r.task == "train" and r.metric == "proximal_term"}
    assert set(terms) >= {"collaborator1", "collaborator2"} and all(v > 0 for v in terms.values()), terms


WRONG_STRATEGY = '''
import os

from accord.strategies import FedAvg


class WrongTypedMu(FedAvg):
    """Declares proximal_mu a float and sends a string, except where ACCORD_TAMPERED is set: an
    aggregator whose code was changed to declare (and so pass its own check of) a string."""

    config_schema = {"proximal_mu": str if os.environ.get("ACCORD_TAMPERED") else float}

    def configure(self, round_number):
        return {"proximal_mu": "0.01"}
'''


def test_a_config_the_sites_plan_does_not_allow_is_refused_at_the_site_and_reported(tmp_path: Path) -> None:
    """The site refuses the round (exit 2, one line naming the key and the fix) before running
    anything; the aggregator is told and logs which key the site refused."""
    strategy = {"template": "src.wrong_strategy.WrongTypedMu"}
    plan = prepare_workspace(tmp_path / "ws", 1, 1, overrides={**FAST})
    (plan.workspace / "src" / "wrong_strategy.py").write_text(WRONG_STRATEGY)
    from accord.plan.loader import load_plan, update_plan_file

    update_plan_file(plan.path, {"aggregator.settings.strategy": strategy})
    plan = load_plan(plan.path, workspace=plan.workspace)
    sites = Sites(plan)
    try:
        sites.start("aggregator", ACCORD_TAMPERED="1")  # the engine's own check would refuse it first
        site = sites.start("collaborator1")
        assert site.wait(timeout=180) == 2
        wait_for(lambda: "refused by the site" in sites.log("aggregator"), what="the aggregator to log the refusal")
    finally:
        sites.close()
    errors = [line for line in sites.log("collaborator1").splitlines() if line.startswith("fx: error:")]
    assert len(errors) == 1, sites.log("collaborator1")
    assert "config key 'proximal_mu' as a str; this site's plan's strategy WrongTypedMu declares it a float" in errors[0]
    assert "(fix: make sure the aggregator and this site run the same plan" in errors[0]
    assert "Traceback" not in sites.log("collaborator1")
    aggregator = sites.log("aggregator")
    assert "collaborator1 failed aggregated_model_validation at its site: config key 'proximal_mu' refused by the site: not a float" in aggregator
    records = read_metrics(plan.resolve_path("logs/metrics.jsonl"))
    assert not [r for r in records if r.origin == "collaborator1"]  # nothing ran at the site
