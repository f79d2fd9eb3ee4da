"""The peer bench's own parts (bench/_peer_workload.py, bench/_peer_procs.py), without the peers:
the data every framework reads are Accord's split and shards, the one evaluator agrees with
Accord's runner, the memory figure sees a process's peak, and a process group is killed whole."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))
pytest.importorskip("torch")
pytest.importorskip("sklearn")

from _peer_procs import BenchError, TreePeak, cmdline, run_step, start, stop
from _peer_workload import Workload, accuracy_of, write_data

from accord.data.builtin import DigitsDataLoader
from accord.experiment.local import prepare_workspace
from accord.runners.from_plan import build_runner
from accord.tensors.state import load_state


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workload, Path, object]:
    work = Workload(sites=3, rounds=1)
    root = tmp_path_factory.mktemp("peers")
    plan = prepare_workspace(root / "ws", work.sites, work.rounds, overrides=work.plan_overrides())
    init = plan.resolve_path(plan.model.aggregator.settings.init_state_path)
    return work, write_data(work, root / "data", init), plan


def test_the_shards_are_accords_and_cover_its_split(digits: tuple[Workload, Path, object]) -> None:
    work, data, _ = digits
    whole = DigitsDataLoader(1, 1, valid_fraction=work.valid_fraction, seed=work.seed)
    shards = [np.load(data / f"site{i}.npz") for i in range(1, work.sites + 1)]
    held_out = np.load(data / "valid.npz")
    assert sum(len(s["y_train"]) for s in shards) == whole.train_size
    assert sum(len(s["y_valid"]) for s in shards) == whole.valid_size == len(held_out["y"])
    site2 = DigitsDataLoader(2, work.sites, valid_fraction=work.valid_fraction, seed=work.seed)
    np.testing.assert_array_equal(np.concatenate([x for x, _ in site2.valid_batches()]), shards[1]["x_valid"])
    np.testing.assert_array_equal(np.concatenate([y for _, y in whole.valid_batches()]), held_out["y"])
    assert shards[0]["x_train"].shape[1] == 64 and shards[0]["x_train"].dtype == np.float32


def test_the_one_evaluator_agrees_with_accords_runner(digits: tuple[Workload, Path, object]) -> None:
    work, data, plan = digits
    init = load_state(plan.resolve_path(plan.model.aggregator.settings.init_state_path))
    runner = build_runner(plan)
    runner.set_weights(init, with_optimizer=False)
    whole = DigitsDataLoader(1, 1, valid_fraction=work.valid_fraction, seed=work.seed)
    expected = runner.validate(whole).metrics["accuracy"]
    assert accuracy_of(init, data) == pytest.approx(expected)
    assert accuracy_of({f"model.{k}": v for k, v in init.items()}, data) == pytest.approx(expected)  # OpenFL's names
    with pytest.raises(ValueError, match="tensors named like"):
        accuracy_of({k: v for k, v in init.items() if k != "4.bias"}, data)


def test_the_tree_peak_sees_a_child_s_peak(tmp_path: Path) -> None:
    code = "import time; b = bytearray(150 * 2**20); b[::4096] = b'x' * len(b[::4096]); del b; time.sleep(1.5)"
    parent, _ = start([sys.executable, "-c", f"import subprocess, sys; subprocess.run([sys.executable, '-c', {code!r}])"], tmp_path, tmp_path / "p.log")
    peak = TreePeak(lambda: [parent.pid], interval=0.02)
    parent.wait(timeout=60)
    mb = peak.stop()
    assert mb >= 150, (mb, peak.names)


@pytest.mark.parametrize("own_session", [False, True])
def test_a_process_group_is_killed_whole(tmp_path: Path, own_session: bool) -> None:
    """Its members die with it, and so does a child that moved to a session of its own."""
    marker = f"sleep-marker-{time.time_ns()}"
    child = f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)', '{marker}'], start_new_session={own_session})"
    script = f"import subprocess, sys, time; {child}; print('up', flush=True); time.sleep(300)"
    parent, lines = start([sys.executable, "-c", script], tmp_path, tmp_path / "g.log")
    deadline = time.time() + 30
    while not lines.lines and time.time() < deadline:
        time.sleep(0.05)
    stop([parent])
    time.sleep(0.5)
    left = [p for p in Path("/proc").iterdir() if p.name.isdigit() and marker in cmdline(int(p.name))]
    assert parent.poll() is not None and not left


def test_a_failing_step_names_itself_and_its_log(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match=r"exited with 3; see .*step\.log"):
        run_step([sys.executable, "-c", "raise SystemExit(3)"], tmp_path, tmp_path / "step.log")
