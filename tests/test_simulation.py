"""accord.simulation: many simulated clients on the deployment's RoundEngine (threads, Ray), fx simulate."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from simulation_clients import Counted, Slow, tiny_plan

from accord.aggregator.assigner import RandomGroupedAssigner
from accord.aggregator.engine import RoundEngine
from accord.cli.main import main
from accord.metric_records import read_metrics
from accord.plan.round_settings import TaskSpec
from accord.simulation import run_simulation
from accord.simulation.driver import TimedOut
from accord.strategies.seam import ClientSampling

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"


def _cohorts(plan) -> dict[int, set[str]]:
    rounds: dict[int, set[str]] = defaultdict(set)
    for record in read_metrics(plan.resolve_path(plan.model.aggregator.settings.metrics_path)):
        if record.task == "train" and record.metric == "loss" and record.origin != "aggregator":
            rounds[record.round].add(record.origin)
    return rounds


def test_ten_thousand_clients_complete_a_round_on_a_few_threads(tmp_path: Path) -> None:
    plan = tiny_plan(tmp_path, rounds=1)
    Counted.most_alive = Counted.most_threads = 0
    before = __import__("threading").active_count()
    result = run_simulation(plan, Counted, 10_000, workers=2)
    assert result.finished and result.failed_clients == 0
    assert [(r.round_number, r.clients) for r in result.rounds] == [(0, 10_000)]
    assert np.array_equal(result.model["w"], np.ones(4, np.float32))  # every client's +1, averaged
    assert len(_cohorts(plan)[0]) == 10_000
    assert Counted.most_threads <= before + 2 + 1  # the pool's 2 threads, never one per client
    assert Counted.most_alive <= 8  # clients are dropped after their tasks, not kept for the round
    assert plan.resolve_path(plan.model.aggregator.settings.last_state_path).is_file()


def test_each_round_samples_the_plans_cohort(tmp_path: Path) -> None:
    plan = tiny_plan(tmp_path, rounds=3, **{"aggregator.settings.sampling": {"count": 25, "seed": 7}})
    result = run_simulation(plan, Counted, 400)
    names = tuple(str(i) for i in range(1, 401))
    cohorts = _cohorts(plan)
    assert [r.clients for r in result.rounds] == [25, 25, 25]
    for number in range(3):
        assert cohorts[number] == set(ClientSampling(count=25, seed=7).sample(number, names))
    assert cohorts[0] != cohorts[1] != cohorts[2]


def test_a_round_of_a_huge_federation_holds_only_its_cohort() -> None:
    names = [f"c{i}" for i in range(300_000)]
    tasks = {"train": TaskSpec(function="train", kwargs={})}
    engine = RoundEngine(
        collaborators=names,
        tasks=tasks,
        assigner=RandomGroupedAssigner(names, [{"name": "g", "percentage": 1.0, "tasks": ["train"]}]),
        rounds_to_train=2,
        model={"w": np.zeros(2, np.float32)},
        clock=lambda: 0.0,
        sampling=ClientSampling(count=10),
        final_validation=False,
    )
    current = engine.current
    assert current is not None and len(current.outstanding) == 10 and len(current.assigned) == 10
    outsider = next(n for n in names if n not in current.outstanding)
    assert engine.assignment(outsider).action.name == "WAIT"


def test_a_failing_client_is_reported_and_the_round_goes_on(tmp_path: Path) -> None:
    plan = tiny_plan(tmp_path, rounds=2)
    result = run_simulation(plan, Counted, ["a", "bad", "c"])
    assert result.finished and result.failed_clients == 2  # its task failed in both rounds
    assert isinstance(result.errors["bad"], RuntimeError) and "disk on fire" in str(result.errors["bad"])
    assert _cohorts(plan)[1] == {"a", "c"}
    stopped = run_simulation(tiny_plan(tmp_path / "again", rounds=2), Counted, ["a", "bad"], stop_on_error=True)
    assert not stopped.finished and "bad" in stopped.errors


def test_a_simulation_past_its_timeout_stops_with_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TimedOut, match="did not finish in time"):
        run_simulation(tiny_plan(tmp_path, rounds=3), Slow, 40, workers=2, timeout=1.0)


def test_an_unreachable_ray_cluster_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("ray")
    workspace = tmp_path / "ws"
    assert main(["workspace", "create", "--prefix", str(workspace), "--template", "torch_digits"]) == 0
    port = _free_port()
    capsys.readouterr()
    assert main(["simulate", "-w", str(workspace), "--clients", "3", "--backend", "ray", "--ray-address", f"127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"no Ray cluster answers at '127.0.0.1:{port}'" in err[0]


def test_fx_simulate_runs_the_workspaces_own_runner_and_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    workspace = tmp_path / "ws"
    assert main(["workspace", "create", "--prefix", str(workspace), "--template", "torch_digits"]) == 0
    small = ["-o", "task_runner.settings.model_kwargs={in_features: 64, hidden: 16, num_classes: 10}",
             "-o", "tasks.settings.train.kwargs={epochs: 1}", "-o", "aggregator.settings.rounds_to_train=1"]
    capsys.readouterr()
    assert main(["simulate", "-w", str(workspace), "--clients", "6", "--workers", "2", *small]) == 0
    out = capsys.readouterr().out
    assert "round 0: 6 clients" in out and "final validation: 6 clients" in out and "0 client failures" in out
    assert (workspace / "save" / "last.safetensors").is_file() and (workspace / "logs" / "metrics.jsonl").is_file()


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (["--clients", "0"], "--clients is '0'"),
        (["--clients", "many"], "--clients is 'many'"),
        (["--clients", "5", "--backend", "spark"], "unknown simulation backend 'spark'"),
        (["--clients", "5", "--workers", "0"], "--clients is '0'"),
    ],
)
def test_fx_simulate_refuses_bad_input_in_one_line(tmp_path: Path, args: list[str], shown: str) -> None:
    workspace = tmp_path / "ws"
    assert main(["workspace", "create", "--prefix", str(workspace), "--template", "torch_digits"]) == 0
    done = subprocess.run(
        [sys.executable, "-m", "accord.cli.main", "simulate", "-w", str(workspace), *args],
        capture_output=True, text=True, timeout=120,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("fx: error: ") and shown in lines[0], done.stderr
    assert not (workspace / "save" / "last.safetensors").exists()


def test_fx_simulate_names_a_missing_workspace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "-w", str(tmp_path / "nowhere"), "--clients", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nowhere" in err[0]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def ray_cluster():
    """A local Ray cluster (``ray start --head``, 2 CPUs) of its own; its processes ended by id."""
    pytest.importorskip("ray")
    psutil = pytest.importorskip("psutil")
    ray_bin = Path(sys.executable).parent / "ray"
    temp = tempfile.mkdtemp(prefix="rs", dir="/tmp")  # short: Ray's socket paths have a length limit
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(TESTS), os.environ.get("PYTHONPATH", "")])}
    subprocess.run(
        [str(ray_bin), "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
         f"--temp-dir={temp}", "--disable-usage-stats"],
        check=True, env=env, capture_output=True, timeout=180,
    )
    try:
        yield f"127.0.0.1:{port}"
    finally:
        ours = [p for p in psutil.process_iter(["cmdline"]) if any(temp in part for part in (p.info["cmdline"] or []))]
        for proc in ours:
            proc.terminate()
        _, alive = psutil.wait_procs(ours, timeout=10)
        for proc in alive:
            proc.kill()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.e2e
def test_the_ray_backend_runs_clients_on_a_ray_cluster(tmp_path: Path, ray_cluster: str) -> None:
    plan = tiny_plan(tmp_path, rounds=2, **{"aggregator.settings.sampling": {"count": 30}})
    result = run_simulation(plan, Counted, 200, backend="ray", ray_address=ray_cluster)
    assert result.finished and result.failed_clients == 0 and [r.clients for r in result.rounds] == [30, 30]
    assert np.array_equal(result.model["w"], np.full(4, 2.0, np.float32))
    pids = {r.value for r in read_metrics(plan.resolve_path(plan.model.aggregator.settings.metrics_path)) if r.metric == "pid"}
    assert pids and float(os.getpid()) not in pids  # the clients ran in the cluster's workers


def test_a_round_without_enough_reports_names_the_failed_clients(tmp_path: Path) -> None:
    from accord.aggregator.round_policy import RoundDeadlineError

    plan = tiny_plan(tmp_path, rounds=1, **{"straggler_handling_policy.settings.min_reports": 2})
    with pytest.raises(RoundDeadlineError, match="bad failed"):
        run_simulation(plan, Counted, ["a", "bad"])
