"""Secure aggregation with real processes (fx aggregator start, fx collaborator start, mutual
TLS on 127.0.0.1): a SecAgg+ round gives plain FedAvg's model within the fixed-point error; two
of six sites killed mid-round (one between its advert and its masked update, one after masking,
before revealing) leave a round that completes under cutoff_time with FedAvg over the
survivors; a robust strategy is refused in the plan."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST
from test_e2e_faults import Sites, wait_for
from test_e2e_stragglers import trained_by_round

from accord.experiment.local import fx_command, prepare_workspace, run_processes
from accord.plan.loader import Plan, load_plan, update_plan_file
from accord.tensors.state import load_state

pytestmark = pytest.mark.e2e

#: fixed-point resolution 2^-24 per value and unit of weight: the unmasked mean is within ~1e-7
TOLERANCE = 1e-5
#: a torch runner that can hang (with a marker file) in its first training or in the round's
#: second validation (the locally tuned one: after the masked update was sent), for the tests only
HANGING_RUNNER = """
import os
import time
from pathlib import Path

from accord.runners.torch_runner import TorchTaskRunner


def _hang(what):
    marker = os.environ.get(what)
    if marker:
        Path(marker).touch()
        time.sleep(600)


class HangingRunner(TorchTaskRunner):
    validations = 0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if os.environ.get("READY_MARKER"):  # built: the site joins next
            Path(os.environ["READY_MARKER"]).touch()

    def train(self, data, **kwargs):
        _hang("HANG_IN_TRAINING")
        return super().train(data, **kwargs)

    def validate(self, data, **kwargs):
        HangingRunner.validations += 1
        if HangingRunner.validations == 2:
            _hang("HANG_AFTER_MASKING")
        return super().validate(data, **kwargs)
"""
#: each phase's cut-off in the kill test (s)
CUTOFF = 90.0
NO_BOUNDS = {"sample_count_multiple": None, "norm_multiple": None}


def workspace(root: Path, sites: int, secure: dict | None, **overrides) -> Plan:
    """A torch_digits workspace of ``sites`` sites, one round, update bounds off (FedAvg is then
    the plain sample-weighted mean), secure aggregation as ``secure`` says."""
    settings = {**FAST, "aggregator.settings.update_bounds": NO_BOUNDS, "collaborator.settings.opt_treatment": "RESET", **overrides}
    if secure is not None:
        settings["aggregator.settings.secure_aggregation"] = {"enabled": True, "clip": 10.0, **secure}
    plan = prepare_workspace(root, sites, 1, overrides=settings)
    (plan.workspace / "src" / "hanging_runner.py").write_text(HANGING_RUNNER)
    update_plan_file(plan.path, {"task_runner.template": "src.hanging_runner.HangingRunner"})
    return load_plan(plan.path, workspace=plan.workspace)


def same_init(reference: Plan, other: Plan) -> None:
    init = reference.resolve_path("save/init.safetensors")
    other.resolve_path("save/init.safetensors").write_bytes(init.read_bytes())


def assert_models_close(reference: Plan, secure: Plan) -> None:
    expected = load_state(reference.resolve_path("save/last.safetensors"))
    got = load_state(secure.resolve_path("save/last.safetensors"))
    assert list(got) == list(expected)
    init = load_state(reference.resolve_path("save/init.safetensors"))
    for name in expected:
        assert not np.array_equal(got[name], init[name]), name  # the round changed it
        np.testing.assert_allclose(got[name], expected[name], rtol=0, atol=TOLERANCE, err_msg=name)


def test_a_secure_round_gives_plain_fedavg_over_the_same_sites(tmp_path: Path) -> None:
    reference = workspace(tmp_path / "plain", 3, None)
    secure = workspace(tmp_path / "secure", 3, {})
    same_init(reference, secure)
    for plan in (reference, secure):
        report = run_processes(plan, timeout=300)
        assert report.ok, (report.returncodes, (plan.workspace / "logs" / "aggregator.log").read_text())
    log = (secure.workspace / "logs" / "aggregator.log").read_text()
    for phase in ("share", "mask", "confirm", "unmask"):  # signed: the consistency check before the reveals
        assert f"round 0: phase {phase} opened for 3 sites" in log, log
    assert trained_by_round(secure) == {0: {"collaborator1", "collaborator2", "collaborator3"}}
    assert_models_close(reference, secure)


def test_sites_killed_mid_round_leave_fedavg_over_the_survivors_under_the_cutoff(tmp_path: Path) -> None:
    """6 sites (plain SecAgg: each shares with the 5 others, 3 shares rebuild a secret), the
    default threshold 4, cutoff_time CUTOFF s a phase. collaborator6 is killed -9 in its
    training (it advertised and shared, never masked); collaborator5 is killed -9 after its
    masked update was received, before the unmask request (its self mask is rebuilt from the
    others' shares, collaborator6's pairwise masks from its mask-key shares). The model is
    plain FedAvg over collaborators 1-5, as a plain run where collaborator6 never starts gives."""

    def cutoff(seconds: float, min_reports: int) -> dict:
        return {"straggler_handling_policy.settings": {"policy": "cutoff_time", "cutoff_seconds": seconds, "min_reports": min_reports}}

    once = {"aggregator.settings.final_validation": False}
    survivors = {f"collaborator{i}" for i in range(1, 6)}
    reference = workspace(tmp_path / "plain", 6, None, **cutoff(4.0, 5), **once)  # closes with collaborators 1-5
    # each phase's cut-off counts from its opening (the first one's: the aggregator's start): long
    # enough for every waiting site to join (their retries back off) on a loaded machine
    patient = {"network.settings.connect_timeout_seconds": 900.0}
    secure = workspace(tmp_path / "secure", 6, {}, **cutoff(CUTOFF, 1), **once, **patient)
    same_init(reference, secure)

    sites = Sites(reference)
    try:
        for name in ("aggregator", *sorted(survivors)):
            sites.start(name)
        codes = sites.wait_all(timeout=300)
    finally:
        sites.close()
    assert set(codes.values()) == {0}, sites.log("aggregator")
    assert trained_by_round(reference)[0] == survivors

    in_training, after_masking = tmp_path / "collaborator6-training", tmp_path / "collaborator5-masked"
    sites = Sites(secure)
    try:
        hangs = {"collaborator5": {"HANG_AFTER_MASKING": str(after_masking)}, "collaborator6": {"HANG_IN_TRAINING": str(in_training)}}
        for name in (*sorted(survivors), "collaborator6"):
            sites.start(name, READY_MARKER=str(tmp_path / f"{name}-ready"), **hangs.get(name, {}))
        # the aggregator starts once every site is about to join (a loaded machine takes long to
        # start a process): the first phase's cut-off counts from the aggregator's start
        for name in (*sorted(survivors), "collaborator6"):
            wait_for((tmp_path / f"{name}-ready").exists, timeout=600, what=f"{name} to start")
        sites.start("aggregator")
        wait_for(in_training.exists, timeout=2 * CUTOFF, what="collaborator6 to train (after its advert and shares)")
        sites.kill("collaborator6")
        wait_for(after_masking.exists, timeout=2 * CUTOFF, what="collaborator5 to send its masked update")
        sites.kill("collaborator5")
        alive = ("aggregator", *sorted(survivors - {"collaborator5"}))
        codes = {name: sites.procs[name].wait(timeout=4 * CUTOFF) for name in alive}
    finally:
        sites.close()
    log = sites.log("aggregator")
    assert codes == dict.fromkeys(alive, 0), log
    assert "round 0: phase share opened for 6 sites" in log
    assert "round 0: phase unmask opened for 4 sites" in log  # collaborator5 masked, but did not finish its tasks
    assert "round 0 closed without the reports of collaborator5, collaborator6" in log, log
    assert "revealed shares for 5 survivors and 1 dropped sites" in sites.log("collaborator1")
    assert trained_by_round(secure)[0] == survivors
    assert_models_close(reference, secure)


def test_a_robust_strategy_is_refused_in_the_plan(tmp_path: Path) -> None:
    plan = prepare_workspace(
        tmp_path / "ws",
        3,
        1,
        overrides={
            **FAST,
            "collaborator.settings.opt_treatment": "RESET",
            "aggregator.settings.strategy": {"template": "accord.strategies.Krum", "settings": {"byzantine": 0}},
        },
    )
    update_plan_file(plan.path, {"aggregator.settings.secure_aggregation.enabled": True})
    done = subprocess.run(fx_command("aggregator", "start", "-w", str(plan.workspace)), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "strategy Krum needs each site's update on its own, but secure aggregation reveals only their sum" in lines[0]
    assert "secure_aggregation.enabled: false" in lines[0]
