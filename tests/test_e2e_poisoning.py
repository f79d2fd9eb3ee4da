"""One hostile site (its own process, its real certificate) against a real aggregator and honest sites.

Its crafted updates are capped, clipped or refused as the plan says, the rounds close with the
honest sites, the model stays finite and accurate, and the aggregator's log names the site and
what bit; a metric name or claimed name carrying a fake log line forges no line.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST

from accord.aggregator.runtime import AggregatorRuntime
from accord.collaborator.site import build_collaborator
from accord.experiment.local import fx_command, prepare_workspace
from accord.metric_records import read_metrics
from accord.plan.loader import load_plan, update_plan_file
from accord.tensors.state import load_state, save_state
from accord.transport.inprocess import InProcessClient

pytestmark = pytest.mark.e2e

HOSTILE = Path(__file__).with_name("hostile_site.py")
HONEST = ("collaborator1", "collaborator2", "collaborator3")
#: the template's CONTINUE_GLOBAL: the optimizer state travels and is averaged too
SETTINGS = {**FAST, "tasks.settings.train.kwargs": {"epochs": 3}}


def federate(tmp_path: Path, attacks: str, rounds: int, honest_sites: int = 3, prepare=None, **overrides) -> tuple[str, dict[str, str], object]:
    """collaborator1..N honest (fx collaborator start), collaborator<N+1> hostile; the aggregator's output."""
    names, hostile_name = HONEST[:honest_sites], f"collaborator{honest_sites + 1}"
    plan = prepare_workspace(tmp_path / "ws", collaborators=honest_sites + 1, rounds=rounds, overrides={**SETTINGS, **overrides})
    if prepare is not None:
        prepare(plan)
    ws = plan.workspace
    aggregator = subprocess.Popen(fx_command("aggregator", "start", "-w", str(ws)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    refusals = tmp_path / "refusals.json"
    try:
        hostile = subprocess.Popen([sys.executable, str(HOSTILE), str(ws), hostile_name, attacks, str(refusals)], stderr=subprocess.PIPE, text=True)
        honest = [
            subprocess.Popen(
                fx_command("collaborator", "start", "-n", name, "-w", str(ws)), stdout=(tmp_path / f"{name}.log").open("w"), stderr=subprocess.STDOUT
            )
            for name in names
        ]
        codes = [p.wait(timeout=300) for p in honest]
        assert codes == [0] * len(names), [(tmp_path / f"{name}.log").read_text()[-2000:] for name in names]
        _, hostile_err = hostile.communicate(timeout=60)
        assert hostile.returncode == 0, hostile_err
        out, _ = aggregator.communicate(timeout=60)
    finally:
        for process in (aggregator, hostile, *honest):
            if process.poll() is None:
                process.kill()
    assert aggregator.returncode == 0, out
    return out, json.loads(refusals.read_text()), plan


def final_accuracy(plan) -> float:
    """The last model's accuracy as the honest sites measured it."""
    records = read_metrics(plan.workspace / "logs" / "metrics.jsonl")
    last = max(r.round for r in records)
    values = [r.value for r in records if r.round == last and r.origin in HONEST
              and r.task == "aggregated_model_validation" and r.metric == "accuracy"]
    assert len(values) == len(HONEST)
    return float(np.mean(values))


def honest_accuracy(tmp_path: Path, rounds: int) -> float:
    """The same federation without the hostile site (in this process: the same runtime and shards)."""
    plan = prepare_workspace(tmp_path / "honest", collaborators=4, rounds=rounds, overrides=SETTINGS)
    update_plan_file(plan.path, {"collaborators": list(HONEST)})
    plan = load_plan(plan.path, workspace=plan.workspace)
    runtime = AggregatorRuntime(plan)
    sites = [threading.Thread(target=lambda n=n: build_collaborator(plan, n, InProcessClient(runtime, n, plan.hash, 5.0)).run()) for n in HONEST]
    for site in sites:
        site.start()
    for site in sites:
        site.join(300)
    runtime.close()
    assert runtime.finished
    return final_accuracy(plan)


def bounds_records(plan) -> list[tuple[int, str, str]]:
    records = read_metrics(plan.workspace / "logs" / "metrics.jsonl")
    return [(r.round, r.origin, r.metric) for r in records if r.task == "aggregator/bounds"]


def test_capped_and_clipped_updates_and_forged_log_lines_leave_the_model_accurate(tmp_path: Path) -> None:
    out, refusals, plan = federate(tmp_path, "forge,huge,float32max", rounds=3)

    assert "metric name 'loss\\n12:00:00 INFO    accord.aggregator: round 9 of 9 done\\x1b[2K' must match" in refusals["metric name"]
    assert "does not match claimed collaborator" in refusals["claimed name"]
    assert "\x1b" not in out and "round 9 of 9 done" in out  # shown, escaped, inside the refusal's line
    forged = [line for line in out.splitlines() if "round 9 of 9 done" in line]
    assert forged and all("refused" in line and line.index("refused") < line.index("round 9 of 9") for line in forged)

    assert "round 1: update bound: collaborator4 declared 1000000000000 samples: counted as" in out
    assert "round 1: update bound: collaborator4's update (norm" in out and "clipped to norm" in out
    assert "round 2: update bound: collaborator4's update (norm" in out
    bit = bounds_records(plan)
    assert (1, "collaborator4", "capped") in bit and (1, "collaborator4", "clipped") in bit and (2, "collaborator4", "clipped") in bit
    assert all(origin == "collaborator4" for _, origin, _ in bit)

    last = load_state(plan.workspace / "save" / "last.safetensors")
    assert all(np.isfinite(v).all() for v in last.values())
    assert all(np.abs(v).max() < 100 for k, v in last.items() if not k.startswith("__opt__."))
    attacked, honest = final_accuracy(plan), honest_accuracy(tmp_path, rounds=3)
    print(f"final accuracy {attacked:.4f} with the hostile site, {honest:.4f} without")
    assert attacked >= honest - 0.05, (attacked, honest)


def test_an_update_past_the_norm_bound_is_refused_when_the_plan_says_so(tmp_path: Path) -> None:
    out, _, plan = federate(tmp_path, "huge", rounds=1, **{"aggregator.settings.update_bounds.on_norm_exceeded": "refuse"})
    assert "round 0: update bound: collaborator4's update (norm" in out and "left out (on_norm_exceeded: refuse)" in out
    assert (0, "collaborator4", "refused") in bounds_records(plan)
    last = load_state(plan.workspace / "save" / "last.safetensors")
    assert all(np.isfinite(v).all() for v in last.values())
    assert all(np.abs(v).max() < 100 for k, v in last.items() if not k.startswith("__opt__."))


def test_with_two_updates_a_delta_that_would_overflow_the_optimizer_state_is_outvoted_by_the_global(tmp_path: Path) -> None:
    """Bounds off and delta updates: the hostile delta would move step counters at 3e38 past
    float32's range; with 2 updates the global's value votes on optimizer state, so the
    median of the three (the honest one) is taken. (The non-finite drop: tests/test_bounds.py.)"""

    def near_the_top(plan) -> None:  # step counters that one more float32-max delta overflows
        path = plan.workspace / "save" / "init.safetensors"
        model = load_state(path)
        save_state(path, {k: (np.full_like(v, 3e38) if k.endswith(".step") else v) for k, v in model.items()})

    off = {"sample_count_multiple": None, "norm_multiple": None}
    out, _, plan = federate(tmp_path, "overflow", rounds=1, honest_sites=1, prepare=near_the_top,
                            **{"collaborator.settings.delta_updates": True, "aggregator.settings.update_bounds": off})
    assert "round 0: update bound: collaborator2's update: only 2 of the 3 updates needed to judge them: optimizer state" in out
    assert sorted(bounds_records(plan)) == [(0, "collaborator1", "held"), (0, "collaborator2", "held")]
    last = load_state(plan.workspace / "save" / "last.safetensors")
    assert all(np.isfinite(v).all() for v in last.values())
    assert all(float(v.max()) == np.float32(3e38) for k, v in last.items() if k.endswith(".step"))  # + 16 steps: float32 rounding
