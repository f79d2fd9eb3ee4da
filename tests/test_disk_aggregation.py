"""A model larger than the aggregator's memory budget aggregates from disk: the global model is
mapped from its file, each round's models (the mean, a server optimizer's step and moments)
are written into files (tensors/space.py), the next one renamed into place; the results are
those of the in-memory path, bit for bit, and the aggregator's anonymous memory stays a few
blocks whatever the model's size (bench/disk_aggregation.py, which the last test runs)."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from accord.aggregation.bounds import UNBOUNDED, UpdateBounds
from accord.aggregator.runtime import AggregatorRuntime
from accord.aggregator.staging import StagedFile
from accord.errors import AccordError
from accord.messages import TaskResult
from accord.strategies.fedadam import FedAdam
from accord.strategies.fedavg import FedAvg
from accord.strategies.geometric_median import GeometricMedian
from accord.strategies.krum import Krum
from accord.strategies.seam import Reply, RoundContext
from accord.strategies.trimmed_mean import TrimmedMean
from accord.tensors.space import MEMORY, DiskSpace
from accord.tensors.state import StateView, load_state, save_state

BENCH = Path(__file__).resolve().parents[1] / "bench" / "disk_aggregation.py"
#: one training round after another, no final validation, the best judged on the training loss
TRAIN_ONLY = {
    "aggregator.settings.final_validation": False,
    "assigner.settings.task_groups": [{"name": "train_only", "percentage": 1.0, "tasks": ["train"]}],
    "aggregator.settings.best_metric": "train/loss",
    "aggregator.settings.best_direction": "minimize",
}


def model_and_updates(seed: int = 0) -> tuple[dict[str, np.ndarray], list[dict[str, np.ndarray]]]:
    rng = np.random.default_rng(seed)
    model = {
        "w": rng.standard_normal((300, 70), dtype=np.float32),
        "b": rng.standard_normal(70).astype(np.float64),
        "steps": np.arange(6, dtype=np.int64),
        "__opt__.w.exp_avg": rng.standard_normal(40, dtype=np.float32),
        "empty": np.zeros((0, 3), np.float32),
    }
    updates = []
    for i in range(4):
        update = {
            k: (v + rng.standard_normal(v.shape).astype(v.dtype) * 0.1 if v.dtype.kind == "f" else v + i)
            for k, v in model.items()
        }
        updates.append(update)
    return model, updates


def saved_views(folder: Path, states: list[dict[str, np.ndarray]]) -> list[StateView]:
    views = []
    for i, state in enumerate(states):
        save_state(folder / f"update{i}.safetensors", state)
        views.append(StateView(folder / f"update{i}.safetensors"))
    return views


def fold(strategy, global_model, updates, space, bounds: UpdateBounds = UNBOUNDED):
    context = RoundContext(0, global_model, bounds, tuple(f"c{i}" for i in range(len(updates))), space=space)
    accumulator = strategy.accumulator(context)
    for i, update in enumerate(updates):
        accumulator.add(Reply(f"c{i}", update, 10.0 + i, False, update))
    return strategy.finish(context, accumulator.result())


def test_the_mean_computed_on_disk_is_the_in_memory_mean_bit_for_bit(tmp_path: Path) -> None:
    model, updates = model_and_updates()
    save_state(tmp_path / "global.safetensors", model)
    global_view = dict(StateView(tmp_path / "global.safetensors"))
    views = saved_views(tmp_path, updates)
    bounds = UpdateBounds()  # the default caps and norm bounds
    in_memory = fold(FedAvg(), model, updates, MEMORY, bounds)
    space = DiskSpace(tmp_path)
    on_disk = fold(FedAvg(), global_view, views, space, bounds)
    assert list(on_disk) == list(model)
    for name, expected in in_memory.items():
        assert on_disk[name].dtype == expected.dtype and on_disk[name].shape == expected.shape
        assert np.array_equal(on_disk[name], expected), name
    assert isinstance(on_disk["w"], np.memmap)  # written to a file, not held in memory
    assert space.adopt(on_disk, tmp_path / "next.safetensors")  # the file is the next model, renamed
    assert not list(tmp_path.glob(".model-*.tmp"))
    loaded = load_state(tmp_path / "next.safetensors")
    assert all(np.array_equal(loaded[name], in_memory[name]) for name in model)


@pytest.mark.parametrize("strategy", [TrimmedMean(beta=0.25), Krum(byzantine=1), GeometricMedian()], ids=repr)
def test_a_robust_strategy_on_disk_is_the_in_memory_one_bit_for_bit(tmp_path: Path, strategy) -> None:
    model, updates = model_and_updates(3)
    updates = [*updates, {k: v.copy() for k, v in updates[0].items()}]  # Krum(byzantine=1) needs 2f+3 = 5
    views = saved_views(tmp_path, updates)
    in_memory = fold(strategy, model, updates, MEMORY)
    on_disk = fold(strategy, model, views, DiskSpace(tmp_path))
    assert all(np.array_equal(on_disk[n], in_memory[n]) for n in model)
    assert isinstance(on_disk["w"], np.memmap)


def test_a_server_optimizer_steps_on_disk_as_in_memory_and_resumes_from_its_snapshot(tmp_path: Path) -> None:
    model, updates = model_and_updates(1)
    memory, disk = FedAdam(eta=0.05), FedAdam(eta=0.05)
    space = DiskSpace(tmp_path)
    global_memory, global_disk = model, model
    for _ in range(2):
        global_memory = fold(memory, global_memory, updates, MEMORY)
        global_disk = fold(disk, global_disk, updates, space)
        assert all(np.array_equal(global_disk[n], global_memory[n]) for n in model)
    state = disk.snapshot()
    assert set(state.tensors) == {f"{m}.{n}" for m in "mv" for n in ("w", "b", "empty")}
    assert all(isinstance(array, np.memmap) for array in state.tensors.values() if array.size)  # the moments are files too
    assert all(np.array_equal(state.tensors[k], memory.snapshot().tensors[k]) for k in state.tensors)
    resumed = FedAdam(eta=0.05)
    resumed.restore(state)
    after_restore = fold(resumed, global_disk, updates, space)
    after_memory = fold(memory, global_memory, updates, MEMORY)
    assert all(np.array_equal(after_restore[n], after_memory[n]) for n in model)
    space.release()  # what no commit adopted goes
    assert not list(tmp_path.glob(".model-*.tmp"))


def round_results(runtime: AggregatorRuntime, names: list[str]) -> list[TaskResult]:
    results = []
    for i, name in enumerate(names, start=1):
        tensors = {k: (v + np.float32(0.01 * i)).astype(v.dtype) for k, v in runtime.engine.model.items()}
        digest = runtime.engine.model_digest
        results.append(
            TaskResult(
                name, runtime.engine.round_number, "train", 10 * i, {"loss": 1.0 / i}, tensors, False, 0.1, model_digest=digest
            )
        )
    return results


def test_a_runtime_over_the_limit_aggregates_from_disk_renames_the_next_model_and_resumes(workspace_factory, caplog) -> None:
    names = ["c1", "c2"]
    settings = TRAIN_ONLY
    plans = {
        limit: workspace_factory(names, 2, {**settings, "aggregator.settings.in_memory_limit_mb": limit}) for limit in (0, 1024)
    }
    model, _ = model_and_updates(2)
    for plan in plans.values():
        save_state(plan.resolve_path(plan.model.aggregator.settings.init_state_path), model)
    with caplog.at_level(logging.INFO, logger="accord.aggregator"):
        disk = AggregatorRuntime(plans[0])
    assert "larger than aggregator.settings.in_memory_limit_mb (0)" in caplog.text
    memory = AggregatorRuntime(plans[1024])
    state_dir = plans[0].resolve_path(plans[0].model.aggregator.settings.state_dir)
    for result in round_results(disk, names):
        disk.submit(result, plans[0].hash)
    for result in round_results(memory, names):
        memory.submit(result, plans[1024].hash)
    disk.close()  # commits round 1's start: the mean's file renamed to model-00001
    memory.close()
    assert disk.engine.model is not memory.engine.model
    assert all(np.array_equal(disk.engine.model[n], memory.engine.model[n]) for n in memory.engine.model)
    assert all(isinstance(t, np.memmap) for t in disk.engine.model.values() if t.size)
    # the file the mean was written into is the next model, renamed (its maps follow the name)
    assert str(state_dir / "model-00001.safetensors") in Path("/proc/self/maps").read_text()
    assert not list(state_dir.glob(".*.tmp"))  # nothing the close computed is left behind
    last = load_state(plans[0].resolve_path(plans[0].model.aggregator.settings.last_state_path))
    assert all(np.array_equal(last[n], memory.engine.model[n]) for n in last)
    again = AggregatorRuntime(plans[0])  # a restart maps the saved round's model and goes on
    assert again.engine.round_number == 1 and again.engine.space is not MEMORY
    for result in round_results(again, names):
        again.submit(result, plans[0].hash)
    again.close()
    assert again.finished


@pytest.mark.e2e
def test_a_model_several_times_the_aggregators_anonymous_memory_aggregates_from_disk_exactly() -> None:
    """A 200 MB model, 3 sites' results written as uploads are: the aggregator's anonymous
    memory rises well under a quarter of the model, where the in-memory path of the same run
    holds more than the model (so the measurement sees what it must); the last model is
    FedAvg's mean bit for bit."""
    done = subprocess.run(
        [sys.executable, str(BENCH), "--size-mb", "200", "--sites", "3", "--repeats", "1", "--modes", "disk", "memory"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    figures = dict(re.findall(r"(\w+): peak anonymous [\d.]+ / [\d.]+ MB \(min/median\) = ([\d.]+)x the model", done.stdout))
    assert float(figures["disk"]) < 0.25, done.stdout
    assert float(figures["memory"]) > 1.0, done.stdout
    assert "exact: OK" in done.stdout, done.stdout


@pytest.mark.e2e
def test_a_real_aggregator_process_takes_a_round_from_disk_over_mutual_tls_in_anonymous_memory_well_under_the_model() -> None:
    """The real aggregator process (start_aggregator, gRPC over mutual TLS) and 4 real sites'
    uploads of a 160 MB model with ``in_memory_limit_mb: 0`` (bench/fedavg_memory.py --light):
    its RssAnon rises by well under half the model (31-38 MB at 96 or 240 MB: gRPC's buffers,
    not the model), and every upload and the last model are exact."""
    fedavg_memory = BENCH.with_name("fedavg_memory.py")
    done = subprocess.run(
        [sys.executable, str(fedavg_memory), "--light", "--size-mb", "160", "--collaborators", "4", "--in-memory-limit-mb", "0"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    row = re.search(
        r"N =   4: model (\d+) MB, .* anonymous memory ([\d.]+)x\), round [\d.]+ s, results exact: (\w+)", done.stdout
    )
    assert row is not None, done.stdout + done.stderr
    assert float(row.group(2)) < 0.4, done.stdout
    assert row.group(3) == "OK", done.stdout
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_full_disk_while_a_round_closes_on_disk_stops_the_aggregator_with_the_fix_and_a_restart_closes_it(
    workspace_factory, monkeypatch, caplog
) -> None:
    names = ["c1", "c2"]
    settings = {
        **TRAIN_ONLY,
        "aggregator.settings.in_memory_limit_mb": 0,
    }
    plan = workspace_factory(names, 1, settings)
    model, _ = model_and_updates(4)
    save_state(plan.resolve_path(plan.model.aggregator.settings.init_state_path), model)
    runtime = AggregatorRuntime(plan)
    first, last = round_results(runtime, names)
    runtime.submit(first, plan.hash)

    def no_space(fd: int, offset: int, length: int) -> None:
        raise OSError(28, "No space left on device")

    received = StagedFile.of(runtime.journal.directory, last.tensors, "c2's result")  # it arrived before the disk filled
    monkeypatch.setattr("accord.tensors.space.os.posix_fallocate", no_space)
    with caplog.at_level(logging.ERROR, logger="accord.aggregator"), pytest.raises(AccordError) as stopped:
        runtime.submit(replace(last, tensors=received), plan.hash)  # closing the round needs a file for the mean
    assert "could not close round 0" in stopped.value.message and "No space left" in stopped.value.message
    assert "disk full?" in (stopped.value.fix or "")
    assert "could not close round 0" in caplog.text
    runtime.close()
    state_dir = plan.resolve_path(plan.model.aggregator.settings.state_dir)
    assert not list(state_dir.glob(".model-*.tmp"))  # the file it could not reserve is gone
    monkeypatch.undo()
    again = AggregatorRuntime(plan)  # resumes round 0 with the first result; the last is sent again
    again.submit(last, plan.hash)
    again.close()
    assert again.finished
    expected = fold(FedAvg(), model, [first.tensors, last.tensors], MEMORY, UpdateBounds())
    saved = load_state(plan.resolve_path(plan.model.aggregator.settings.last_state_path))
    assert all(np.array_equal(saved[n], expected[n]) for n in model)


@pytest.mark.parametrize("limit", [0, 1024])
def test_a_restarted_server_optimizer_keeps_its_moments_mapped_from_disk_or_in_memory_as_the_model(
    workspace_factory, limit
) -> None:
    names = ["c1", "c2"]
    settings = {
        **TRAIN_ONLY,
        "aggregator.settings.in_memory_limit_mb": limit,
        "aggregator.settings.strategy": {"template": "accord.strategies.FedAdam", "settings": {}},
    }
    plan = workspace_factory(names, 2, settings)
    model = {"big": np.linspace(-1, 1, 1_200_000, dtype=np.float32), "b": np.ones(7, np.float32)}  # big: past MAPPED_BYTES
    save_state(plan.resolve_path(plan.model.aggregator.settings.init_state_path), model)
    runtime = AggregatorRuntime(plan)
    for result in round_results(runtime, names):
        runtime.submit(result, plan.hash)
    runtime.close()
    again = AggregatorRuntime(plan)
    moment = again.engine.strategy._buffers["m"]["big"]
    assert moment.flags.owndata == (limit != 0)  # a view of strategy-00001's map, or read into memory
    assert np.array_equal(moment, runtime.engine.strategy._buffers["m"]["big"])
    for result in round_results(again, names):
        again.submit(result, plan.hash)
    again.close()
    assert again.finished
