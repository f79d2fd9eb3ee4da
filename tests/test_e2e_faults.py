"""Fault injection with real processes: killed and slow collaborators, a killed aggregator."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST

from accord.aggregator.status import read_status
from accord.errors import AccordError
from accord.experiment.local import fx_command, prepare_workspace, run_processes
from accord.metric_records import read_metrics
from accord.plan.loader import Plan, load_plan, update_plan_file
from accord.tensors.state import load_state

pytestmark = pytest.mark.e2e

#: a torch runner whose training can be slowed per process (environment), for the tests only
SLOW_RUNNER = '''
import os
import time
from pathlib import Path

from accord.runners.torch_runner import TorchTaskRunner


class SlowRunner(TorchTaskRunner):
    calls = 0

    def train(self, data, **kwargs):
        SlowRunner.calls += 1
        if SlowRunner.calls <= int(os.environ.get("SLOW_CALLS", "1000000")):
            if os.environ.get("SLOW_MARKER"):
                Path(os.environ["SLOW_MARKER"]).touch()
            time.sleep(float(os.environ.get("SLOW_SECONDS", "0")))
        gate = os.environ.get("LATER_TRAINING_WAITS_FOR")  # from the second training on
        while gate and SlowRunner.calls > 1 and not Path(gate).exists():
            time.sleep(0.05)
        gate = os.environ.get("TRAINING_WAITS_FOR")  # every training
        while gate and not Path(gate).exists():
            time.sleep(0.05)
        return super().train(data, **kwargs)
'''


def slow_workspace(root: Path, collaborators: int, rounds: int, **overrides) -> Plan:
    plan = prepare_workspace(root, collaborators, rounds, overrides={**FAST, **overrides})
    (plan.workspace / "src" / "slow_runner.py").write_text(SLOW_RUNNER)
    update_plan_file(plan.path, {"task_runner.template": "src.slow_runner.SlowRunner"})
    return load_plan(plan.path, workspace=plan.workspace)


class Sites:
    """The aggregator and collaborators of a workspace as processes, each logging to its own file."""

    def __init__(self, plan: Plan) -> None:
        self.ws = plan.workspace
        self.procs: dict[str, subprocess.Popen] = {}
        self.starts: dict[str, int] = {}

    def start(self, name: str, **env: str) -> subprocess.Popen:
        count = self.starts[name] = self.starts.get(name, 0) + 1
        if name == "aggregator":
            cmd = fx_command("aggregator", "start", "-w", str(self.ws))
        else:
            cmd = fx_command("collaborator", "start", "-n", name, "-w", str(self.ws))
        log = (self.ws / "logs" / f"{name}.{count}.log").open("w")
        self.procs[name] = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1", **env}
        )
        log.close()
        return self.procs[name]

    def kill(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait()

    def log(self, name: str, count: int = 1) -> str:
        return (self.ws / "logs" / f"{name}.{count}.log").read_text()

    def wait_all(self, timeout: float = 180) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        return {name: proc.wait(timeout=max(deadline - time.monotonic(), 1)) for name, proc in self.procs.items()}

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def wait_for(condition: Callable[[], bool], timeout: float = 120.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def saved_state(plan: Plan) -> dict:
    """The saved round (its snapshot, with ``results``: the journal's result records), {} if none yet."""
    try:
        return read_status(plan)
    except AccordError:
        return {}


def trained_rounds(plan: Plan, name: str) -> set[int]:
    return {r.round for r in read_metrics(plan.resolve_path("logs/metrics.jsonl")) if r.origin == name and r.task == "train"}


def test_a_killed_and_a_slow_collaborator_do_not_stop_the_rounds(tmp_path: Path) -> None:
    """Cut-off policy: collaborator3 is killed mid-train and comes back; collaborator2's first
    training outlasts the cut-off, so its late result is dropped and it goes on. The others'
    later trainings wait until collaborator3 has rejoined, however slowly it restarts (else
    every round could close at its cut-off before it is back)."""
    plan = slow_workspace(
        tmp_path / "ws",
        3,
        5,
        **{
            "straggler_handling_policy.settings": {"policy": "cutoff_time", "cutoff_seconds": 4.0, "min_reports": 1},
        },
    )
    marker, rejoined = tmp_path / "collaborator3-training", tmp_path / "collaborator3-rejoined"
    sites = Sites(plan)
    try:
        sites.start("aggregator")
        sites.start("collaborator1", SLOW_SECONDS="1.0", LATER_TRAINING_WAITS_FOR=str(rejoined))
        sites.start("collaborator2", SLOW_SECONDS="7.0", SLOW_CALLS="1", LATER_TRAINING_WAITS_FOR=str(rejoined))
        sites.start("collaborator3", SLOW_SECONDS="60", SLOW_MARKER=str(marker))
        wait_for(marker.exists, what="collaborator3 to start training")
        sites.kill("collaborator3")
        wait_for(lambda: saved_state(plan).get("round", 0) >= 1, what="round 0 to close under the cut-off")
        sites.start("collaborator3")
        wait_for(lambda: sites.log("aggregator").count("collaborator collaborator3 joined") == 2, what="collaborator3 to rejoin")
        rejoined.touch()
        codes = sites.wait_all()
    finally:
        sites.close()
    aggregator_log = sites.log("aggregator")
    assert codes == {"aggregator": 0, "collaborator1": 0, "collaborator2": 0, "collaborator3": 0}, aggregator_log
    assert "round 0 closed without the reports of collaborator2, collaborator3" in aggregator_log
    assert "came after that round closed" in sites.log("collaborator2", 1)
    assert 0 not in trained_rounds(plan, "collaborator2") and trained_rounds(plan, "collaborator2")
    assert trained_rounds(plan, "collaborator3"), sites.log("collaborator3", 2)  # it rejoined and trained
    rounds = [r.round for r in read_metrics(plan.resolve_path("logs/metrics.jsonl")) if r.metric == "round_seconds"]
    assert rounds == list(range(6))  # 5 rounds and the final validation, each once


def test_killing_the_aggregator_twice_mid_round_changes_nothing(tmp_path: Path) -> None:
    """wait_for_all with fixed seeds: the final weights equal those of a run without faults."""
    reference = slow_workspace(tmp_path / "reference", 2, 4)
    faulty = slow_workspace(tmp_path / "faulty", 2, 4)
    init = reference.resolve_path("save/init.safetensors")
    faulty.resolve_path("save/init.safetensors").write_bytes(init.read_bytes())
    report = run_processes(reference, timeout=300)
    assert report.ok, report.returncodes

    sites = Sites(faulty)
    try:
        sites.start("aggregator")
        sites.start("collaborator1", SLOW_SECONDS="1.0")
        sites.start("collaborator2")
        for round_number in (1, 3):
            wait_for(
                lambda round_number=round_number: saved_state(faulty).get("round") == round_number and bool(saved_state(faulty).get("results")),
                what=f"results of round {round_number}",
            )
            sites.kill("aggregator")
            sites.start("aggregator")
        codes = sites.wait_all()
    finally:
        sites.close()
    assert codes == {"aggregator": 0, "collaborator1": 0, "collaborator2": 0}, sites.log("aggregator", 3)
    for count, round_number in ((2, 1), (3, 3)):
        assert f"resuming round {round_number} from" in sites.log("aggregator", count)
    assert "federation finished: 4 rounds" in sites.log("aggregator", 3)
    assert_same_federation(reference, faulty)


def assert_same_federation(reference: Plan, faulty: Plan) -> None:
    """Each of 4 rounds and the final validation logged once, and the final weights of a run
    without faults (rtol 1e-6)."""
    rounds = [r.round for r in read_metrics(faulty.resolve_path("logs/metrics.jsonl")) if r.metric == "round_seconds"]
    assert rounds == [0, 1, 2, 3, 4]
    expected = load_state(reference.resolve_path("save/last.safetensors"))
    got = load_state(faulty.resolve_path("save/last.safetensors"))
    assert list(got) == list(expected)
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-6, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("damaged", ["the snapshot", "the last record", "its last result file"])
def test_a_damaged_state_rolls_back_to_the_previous_commit_and_the_federation_finishes(tmp_path: Path, damaged: str) -> None:
    """kill -9 the aggregator in round 2, damage what it saved, start it again: a damaged
    snapshot rolls back to the previous round's (a warning names both files), a record cut
    short is cut off, a record naming a cut-short file cuts the journal back to the records
    before it (a warning names the file); the federation finishes, every round logged once."""
    plan = slow_workspace(tmp_path / "ws", 2, 4)
    state_dir = plan.resolve_path("save/state")
    sites = Sites(plan)

    def named_tensors() -> list[str]:
        return [r["tensors"] for r in saved_state(plan).get("results") or [] if r.get("tensors")]

    try:
        sites.start("aggregator")
        # collaborator1 trains for 3 s: round 2 stays open well after collaborator2's update is saved
        sites.start("collaborator1", SLOW_SECONDS="3.0")
        sites.start("collaborator2")
        wait_for(
            lambda: saved_state(plan).get("round") == 2 and bool(saved_state(plan).get("results"))
            and (damaged != "its last result file" or bool(named_tensors())),
            what="results of round 2",
        )
        sites.kill("aggregator")
        if damaged == "the snapshot":
            cut = state_dir / "snapshot-00002.json"
        elif damaged == "the last record":
            cut = state_dir / "journal-00002.jsonl"
        else:
            cut = state_dir / named_tensors()[-1]
        cut.write_bytes(cut.read_bytes()[:-30])
        sites.start("aggregator")
        codes = sites.wait_all()
    finally:
        sites.close()
    restarted = sites.log("aggregator", 2)
    assert codes == {"aggregator": 0, "collaborator1": 0, "collaborator2": 0}, restarted
    if damaged == "the snapshot":
        assert "snapshot-00002.json cannot be read" in restarted and "rolled back to the previous saved state" in restarted
        assert "snapshot-00001.json" in restarted and "resuming round 1 from" in restarted  # which closes round 1 again
    elif damaged == "the last record":
        assert "the last record of" in restarted and "journal-00002.jsonl was cut short" in restarted
        assert "resuming round 2 from" in restarted
    else:
        assert f"the file it names {cut.name} is" in restarted and "its header says" in restarted
        assert "journal-00002.jsonl is damaged" in restarted and "rolled back to the previous saved state" in restarted
        assert "resuming round 2 from" in restarted
    assert "--fresh" not in restarted and "federation finished: 4 rounds" in restarted
    rounds = [r.round for r in read_metrics(plan.resolve_path("logs/metrics.jsonl")) if r.metric == "round_seconds"]
    assert rounds == [0, 1, 2, 3, 4]
    assert all(trained_rounds(plan, name) == {0, 1, 2, 3} for name in ("collaborator1", "collaborator2"))
