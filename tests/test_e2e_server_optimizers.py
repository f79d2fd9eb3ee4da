"""The server optimizers end to end: `fx aggregator start` and two `fx collaborator start`
processes over mutual TLS, the strategy named in the plan. The maths is tested against the
papers in test_server_optimizers.py; here the step that reaches the saved model must be the
optimizer's: an adaptive step moves no coordinate by more than its bound in eta, and FedAvg
(the control, same sites) moves some much further."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import FAST

from accord.experiment.local import prepare_workspace, run_processes
from accord.strategies.fedopt import stepped
from accord.tensors.state import load_state

pytestmark = pytest.mark.e2e

ETA = 1e-3
#: over two rounds, |step| <= eta (round 0) + eta (1 - b1) / sqrt(1 - b2) * sqrt(1 + b1^2 / b2)
#: (round 1, Cauchy-Schwarz on m and v) for FedAdam and FedYogi at b1 0.9, b2 0.99; FedAdagrad's
#: v is larger, so the same bound holds
ADAPTIVE_BOUND = ETA * (1 + 0.1 / 0.1 * np.sqrt(1 + 0.81 / 0.99))
CASES = {
    "FedAdam": ({"eta": ETA}, ADAPTIVE_BOUND),
    "FedYogi": ({"eta": ETA}, ADAPTIVE_BOUND),
    "FedAdagrad": ({"eta": ETA}, ADAPTIVE_BOUND),
    "FedAvgM": ({"server_lr": 1e-4, "momentum": 0.5}, None),
    "FedAvg": ({}, None),
}


@pytest.mark.parametrize("name", list(CASES))
def test_the_plans_server_optimizer_steps_the_federation(tmp_path: Path, name: str) -> None:
    settings, bound = CASES[name]
    strategy = {"template": f"accord.strategies.{name}", "settings": settings}
    plan = prepare_workspace(tmp_path / "ws", collaborators=2, rounds=2, overrides={**FAST, "aggregator.settings.strategy": strategy})
    report = run_processes(plan, timeout=600)
    log = (plan.workspace / "logs" / "aggregator.log").read_text()
    assert report.ok, (report.returncodes, log[-3000:])
    assert len(report.aggregated("aggregated_model_validation/accuracy")) == 3
    agg = plan.model.aggregator.settings
    first, last = load_state(plan.resolve_path(agg.init_state_path)), load_state(plan.resolve_path(agg.last_state_path))
    moved = max(float(np.abs(last[n].astype(np.float64) - first[n]).max()) for n in first if stepped(n, first[n]))
    if bound is not None:
        assert 0.2 * ETA < moved <= bound * (1 + 1e-5)  # it stepped, by the adaptive rule's bound
    elif name == "FedAvgM":
        assert 0 < moved < 1e-3  # server_lr 1e-4 (momentum 0.5): a tiny fraction of FedAvg's step
    else:
        assert moved > 5 * ADAPTIVE_BOUND  # the control: the same training moves FedAvg much further
