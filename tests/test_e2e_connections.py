"""Hundreds of concurrent mutual-TLS collaborators against one real aggregator process.

A real ``fx aggregator start`` serves a plan of 200 collaborators, each with its own
certificate signed by the federation's CA; two swarm processes (bench/_swarm.py) hold 100
gRPC channels each and speak the real protocol (Join, GetTasks long polls, GetModel, a
SendResult per task with the round's model digest). Asserted by outcome: every site of
every round had each of its results accepted (the engine's own records of them), the model
moved, and the aggregator refused nothing. bench/connections.py runs the same at 1,000.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from accord.experiment.local import fx_command
from accord.plan.loader import load_plan
from accord.tensors.state import load_state

sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))
from _swarm import make_certificates
from connections import workspace_for

pytestmark = pytest.mark.e2e

SITES = 200
SWARMS = 2
ROUNDS = 2
TASKS = ("aggregated_model_validation", "train", "locally_tuned_model_validation")
TIMEOUT = 900.0  # a bound no honest run comes near, even on a loaded 2-core machine


def test_200_mutual_tls_collaborators_from_2_processes_complete_2_rounds(tmp_path: Path) -> None:
    names = [f"site{i:04d}" for i in range(SITES)]
    make_certificates(tmp_path / "cert", "localhost", names)
    workspace = workspace_for(tmp_path / "ws", names, ROUNDS, tmp_path / "cert", long_poll=30.0)
    plan = load_plan(workspace / "plan" / "plan.yaml", workspace=workspace)
    settings = plan.model.aggregator.settings
    log = tmp_path / "aggregator.log"
    with log.open("wb") as out:
        aggregator = subprocess.Popen(fx_command("aggregator", "start", "-w", str(workspace)), stdout=out, stderr=subprocess.STDOUT)
    share = SITES // SWARMS
    swarms = [
        subprocess.Popen(
            [sys.executable, str(Path(__file__).parents[1] / "bench" / "_swarm.py"), str(workspace), str(first), str(share),
             "--connect-seconds", "3"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for first in range(0, SITES, share)
    ]
    try:
        outputs = [swarm.communicate(timeout=TIMEOUT)[0].decode() for swarm in swarms]
        code = aggregator.wait(timeout=120)
    finally:
        for process in [aggregator, *swarms]:
            if process.poll() is None:
                process.kill()
                process.wait()
    text = log.read_text()
    summaries = [line for output in outputs for line in output.splitlines() if line.startswith("SWARM")]
    assert all(swarm.returncode == 0 for swarm in swarms), outputs
    assert code == 0, text[-3000:]
    for summary in summaries:
        fields = dict(item.split("=", 1) for item in summary.split()[1:])
        assert fields["quit"] == str(share) and fields["failed"] == "0", summary
        assert fields["results"] == str(share * len(TASKS) * ROUNDS), summary
        assert fields["rounds_min"] == str(ROUNDS), summary

    # the engine's records of the results it accepted: every site, every task, every round
    records = [json.loads(line) for line in plan.resolve_path(settings.metrics_path).read_text().splitlines()]
    for number in range(ROUNDS):
        for task in TASKS:
            reported = {r["origin"] for r in records if r["round"] == number and r["task"] == task} - {"aggregator"}
            assert reported == set(names), (number, task, len(reported))
    assert "refused" not in text, [line for line in text.splitlines() if "refused" in line][:5]

    init = load_state(plan.resolve_path(settings.init_state_path))
    last = load_state(plan.resolve_path(settings.last_state_path))
    assert set(last) == set(init)
    moved = max(float(np.max(np.abs(last[k] - init[k]))) for k in init)
    assert 0.0 < moved < 0.01  # the mean of 200 small changes of equal norm: moved, a little
