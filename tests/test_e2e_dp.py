"""Central DP end to end, with real aggregator and collaborator processes over mutual TLS:
(epsilon, delta) after every round in the aggregator's log, logs/metrics.jsonl and the summary;
the noise and the accountant survive a kill -9 of the aggregator (the run ends with the weights
and the epsilons of a run without faults); target_epsilon stops training cleanly."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console
from test_e2e_faults import Sites, assert_same_federation, slow_workspace
from test_e2e_strategy_state import kill_in_round_2

from accord.aggregator.saved import read_snapshot
from accord.experiment.local import run_processes
from accord.experiment.summary import print_summary
from accord.metric_records import read_metrics
from accord.plan.loader import Plan, load_plan, update_plan_file

pytest.importorskip("dp_accounting")
from accord.dp.accountant import RoundMechanism, Rounds, noise_multiplier_for

pytestmark = pytest.mark.e2e

Z, CLIP = 0.3, 1.0


def dp_workspace(root: Path, rounds: int = 4, **settings: object) -> Plan:
    plan = slow_workspace(root, 2, rounds)
    strategy = {
        "template": "accord.strategies.DPFedAvg",
        "settings": {"noise_multiplier": Z, "clip_norm": CLIP, "noise_seed": 1234, **settings},
    }
    update_plan_file(plan.path, {"aggregator.settings.strategy": strategy})
    return load_plan(plan.path, workspace=plan.workspace)


def epsilons(plan: Plan) -> dict[int, float]:
    records = read_metrics(plan.resolve_path("logs/metrics.jsonl"))
    return {r.round: r.value for r in records if r.origin == "aggregator" and r.task == "privacy" and r.metric == "epsilon"}


def summary(plan: Plan, report) -> str:
    out = io.StringIO()
    print_summary(Console(file=out, width=200), plan, report)
    return out.getvalue()


def test_dp_noise_and_accountant_survive_a_killed_aggregator(tmp_path: Path) -> None:
    reference = dp_workspace(tmp_path / "reference")
    faulty = dp_workspace(tmp_path / "faulty")
    faulty.resolve_path("save/init.safetensors").write_bytes(reference.resolve_path("save/init.safetensors").read_bytes())
    report = run_processes(reference, timeout=300)
    assert report.ok, report.returncodes
    expected = Rounds()
    for r in range(4):
        expected.add(RoundMechanism(2, 2, (Z / 2,)))
        assert epsilons(reference)[r] == pytest.approx(expected.epsilon(1e-5), rel=1e-9)  # dp-accounting's own
    shown = summary(reference, report)
    assert f"epsilon {expected.epsilon(1e-5):.4f} at delta 1e-05" in shown

    sites = Sites(faulty)
    try:
        kill_in_round_2(sites, faulty)
        saved = read_snapshot(faulty.resolve_path("save/state") / "snapshot-00002.json")["strategy"]["values"]
        assert saved["rounds"] == [[2, 2, 2, [Z / 2]]] and saved["noise_seed"] == format(1234, "x")
        sites.start("aggregator")
        codes = sites.wait_all()
    finally:
        sites.close()
    assert codes == {"aggregator": 0, "collaborator1": 0, "collaborator2": 0}, sites.log("aggregator", 2)
    first, second = sites.log("aggregator", 1), sites.log("aggregator", 2)
    assert "resuming round 2 from" in second
    assert f"privacy/epsilon={epsilons(reference)[1]:.4f}" in first
    assert f"privacy/epsilon={epsilons(reference)[3]:.4f}" in second  # went on, not from 0
    assert epsilons(faulty) == pytest.approx(epsilons(reference), rel=1e-12)
    assert_same_federation(reference, faulty)  # the same noise drawn after the restart


def test_target_epsilon_stops_training_cleanly(tmp_path: Path) -> None:
    z = noise_multiplier_for(5.0, 1e-5, rounds=2, sample_size=2, population=2) * 1.001  # 2 rounds fit, not 3
    plan = dp_workspace(tmp_path / "ws", rounds=4, noise_multiplier=z, target_epsilon=5.0)
    report = run_processes(plan, timeout=300)
    assert report.ok, report.returncodes
    assert sorted(epsilons(plan)) == [0, 1] and epsilons(plan)[1] <= 5.0
    rounds = sorted({r.round for r in report.records if r.metric == "round_seconds"})
    assert rounds == [0, 1, 4]  # then the final validation of the last model
    log = (plan.workspace / "logs" / "aggregator.log").read_text()
    assert "training stops early: round 2 would take epsilon from" in log and "past the plan's target_epsilon 5" in log
    shown = summary(plan, report)
    assert "rounds completed" in shown and "2 of 4" in shown and "stopped early" in shown


def test_local_dp_and_dp_sgd_report_each_sites_epsilon(tmp_path: Path) -> None:
    plan = slow_workspace(tmp_path / "ws", 2, 2)
    update_plan_file(
        plan.path,
        {
            "collaborator.settings.mods": [
                {"template": "accord.mods.LocalDP", "settings": {"max_norm": 5.0, "epsilon": 50.0, "rounds": 2}}
            ],
            "task_runner.settings.dp_sgd": {"max_grad_norm": 1.0, "noise_multiplier": 1.0},
        },
    )
    plan = load_plan(plan.path, workspace=plan.workspace)
    report = run_processes(plan, timeout=300)
    assert report.ok, report.returncodes
    records = read_metrics(plan.resolve_path("logs/metrics.jsonl"))
    for metric in ("local_dp_epsilon", "dp_sgd_epsilon"):
        for site in ("collaborator1", "collaborator2"):
            spent = [
                r.value
                for r in sorted(records, key=lambda r: r.round)
                if r.origin == site and r.task == "train" and r.metric == metric
            ]
            assert len(spent) == 2 and 0 < spent[0] < spent[1], (metric, site, spent)
    local = [r.value for r in records if r.origin == "collaborator1" and r.metric == "local_dp_epsilon"]
    assert local[-1] == pytest.approx(50.0, rel=1e-3)  # the whole budget spent over the planned rounds
