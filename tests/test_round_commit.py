"""A closed round's files are written once, off the acknowledgement path (aggregator/committer.py):
the closing result is acknowledged once its record is on disk, the next round is served from
memory, its results wait for the commit, and a kill in between replays the round to the same model."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST
from test_e2e_faults import Sites, wait_for
from test_resume import NAMES, results_of, run_all, sequence

from accord import files as files_module
from accord.aggregator.journal import Journal
from accord.aggregator.runtime import AggregatorRuntime
from accord.aggregator.saved import read_records, read_snapshot
from accord.errors import AccordError, RefusedError
from accord.experiment.local import prepare_workspace
from accord.files import link_or_copy
from accord.messages import Action
from accord.metric_records import read_metrics
from accord.tensors.state import load_state
from accord.workspace.initialize import initialize_model

KILL_AT_COMMIT = Path(__file__).with_name("kill_at_commit.py")


@pytest.fixture
def plan(workspace_factory):
    plan = workspace_factory(NAMES, rounds=2)
    initialize_model(plan)
    return plan


class Gate:
    """Holds the committer at the start of ``Journal.open_round`` until opened (or failed)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, error: Exception | None = None) -> None:
        self.reached, self.opened, self.error = threading.Event(), threading.Event(), error
        original = Journal.open_round

        def held(journal, *args, **kwargs):
            if threading.current_thread().name == "accord-commit":
                self.reached.set()
                if self.error is not None:
                    raise self.error
                self.opened.wait()
            return original(journal, *args, **kwargs)

        monkeypatch.setattr(Journal, "open_round", held)


def assert_same_model(got: dict, expected: dict) -> None:
    assert list(got) == list(expected)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


def test_the_closing_result_is_acknowledged_before_the_commit_and_the_next_round_waits_for_it(plan, monkeypatch) -> None:
    gate = Gate(monkeypatch)
    runtime = AggregatorRuntime(plan)
    state = runtime.journal.directory
    for result in sequence(runtime):  # the last one closes round 0 and returns: acknowledged
        runtime.submit(result, plan.hash)
    gate.reached.wait(timeout=60)
    assert not (state / "snapshot-00001.json").exists() and not (state / "model-00001.safetensors").exists()
    assert len(read_records(state / "journal-00000.jsonl").entries) == 6  # every result of round 0 is on disk
    assert runtime.engine.assignment("alpha").action is Action.RUN  # round 1 from memory, at once
    model = runtime.get_model("alpha", plan.hash, 1)
    next_result = results_of(runtime, "alpha", 1.5)[0]
    done = threading.Event()
    worker = threading.Thread(target=lambda: (runtime.submit(next_result, plan.hash), done.set()))
    worker.start()
    worker.join(timeout=0.5)
    assert not done.is_set() and not (state / "journal-00001.jsonl").exists()  # it waits for the commit
    gate.opened.set()
    worker.join(timeout=60)
    assert done.is_set()
    assert read_snapshot(state / "snapshot-00001.json")["round"] == 1
    assert [r["collaborator"] for r in read_records(state / "journal-00001.jsonl").entries] == ["alpha"]
    assert_same_model(load_state(state / "model-00001.safetensors"), model)
    runtime.close()


def test_last_and_best_are_links_to_the_one_saved_model_and_copies_where_links_fail(plan, monkeypatch) -> None:
    runtime = AggregatorRuntime(plan)
    state = runtime.journal.directory
    run_all(runtime, plan, stop_after=len(sequence(runtime)))  # round 0 closed
    runtime.close()
    last, best = plan.resolve_path("save/last.safetensors"), plan.resolve_path("save/best.safetensors")
    assert last.stat().st_ino == (state / "model-00001.safetensors").stat().st_ino
    # best is judged on a task that validates the global model: the round's input model
    assert best.stat().st_ino == (state / "model-00000.safetensors").stat().st_ino
    run_all(resumed := AggregatorRuntime(plan), plan)
    resumed.close()
    assert last.is_file() and best.is_file() and not (state / "model-00000.safetensors").exists()  # a link outlives its source

    def no_links(*args):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(files_module.os, "link", no_links)
    copied = AggregatorRuntime(plan, fresh=True)
    run_all(copied, plan, stop_after=len(sequence(copied)))
    copied.close()
    assert last.stat().st_ino != (state / "model-00001.safetensors").stat().st_ino
    assert last.read_bytes() == (state / "model-00001.safetensors").read_bytes()
    assert not list(last.parent.glob(".*.tmp"))


def test_a_commit_that_fails_after_the_ack_stops_the_aggregator_and_a_restart_closes_the_round_again(plan, monkeypatch) -> None:
    gate = Gate(monkeypatch, error=OSError(errno.ENOSPC, "No space left on device"))
    runtime = AggregatorRuntime(plan)
    for result in sequence(runtime):
        runtime.submit(result, plan.hash)  # acknowledged: its record is on disk
    gate.reached.wait(timeout=60)
    with pytest.raises(AccordError, match=r"could not save its state and stops.*No space left"):
        runtime.wait_until_done(timeout=60)
    with pytest.raises(RefusedError, match="is stopping"):
        runtime.submit(results_of(runtime, "alpha", 1.5)[0], plan.hash)
    closed_to = runtime.engine.model
    runtime.close()
    monkeypatch.undo()
    state = runtime.journal.directory
    assert not (state / "snapshot-00001.json").exists()
    resumed = AggregatorRuntime(plan)
    assert resumed.engine.round_number == 1
    assert_same_model(resumed.engine.model, closed_to)
    assert_same_model(load_state(state / "model-00001.safetensors"), closed_to)
    resumed.close()


@pytest.mark.e2e
def test_a_kill_after_the_ack_and_before_the_commit_resumes_to_the_same_model(tmp_path: Path) -> None:
    """Real processes over mutual TLS: the aggregator dies (SIGKILL) once both sites were
    acknowledged for round 0 and fetched round 1's model, before round 1's start was saved; a
    restarted ``fx aggregator start`` replays round 0's journal, closes it to the same model,
    and the sites finish the federation with it."""
    plan = prepare_workspace(tmp_path / "ws", 2, 1, overrides=FAST)  # round 0, then the final validation
    expected = tmp_path / "closed-in-memory.safetensors"
    sites = Sites(plan)
    log_file = plan.workspace / "logs" / "killed-aggregator.log"
    with log_file.open("w") as out:
        killed = subprocess.Popen(
            [sys.executable, str(KILL_AT_COMMIT), str(plan.workspace), "0", str(expected)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    state = plan.resolve_path(plan.model.aggregator.settings.state_dir)
    try:
        sites.start("collaborator1")
        sites.start("collaborator2")
        assert killed.wait(timeout=180) == -9, log_file.read_text()
        assert "SIGKILL before its commit" in log_file.read_text()
        assert not (state / "snapshot-00001.json").exists() and not (state / "model-00001.safetensors").exists()
        assert len(read_records(state / "journal-00000.jsonl").entries) == 6  # all acknowledged, all on disk
        sites.start("aggregator")
        wait_for(lambda: (state / "snapshot-00001.json").is_file(), what="round 0 to close again")
        codes = sites.wait_all()
    finally:
        sites.close()
        if killed.poll() is None:
            killed.kill()
    log = sites.log("aggregator")
    assert codes == {"collaborator1": 0, "collaborator2": 0, "aggregator": 0}, log
    assert "resuming round 0 from" in log and "6 results already received" in log
    assert_same_model(load_state(plan.resolve_path("save/last.safetensors")), load_state(expected))
    rounds = [r.round for r in read_metrics(plan.resolve_path("logs/metrics.jsonl")) if r.metric == "round_seconds"]
    assert rounds == [0, 1]  # round 0 logged once, though it closed twice


def test_linking_a_file_again_to_the_same_model_leaves_no_stray_link(tmp_path: Path) -> None:
    """rename(2) of a hard link over another link of the same file does nothing: the temporary
    link would stay, holding the model's disk space after the journal removed it."""
    source, target = tmp_path / "model-00001.safetensors", tmp_path / "best.safetensors"
    source.write_bytes(b"model")
    link_or_copy(source, target)
    link_or_copy(source, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.safetensors", "model-00001.safetensors"]
    assert target.stat().st_ino == source.stat().st_ino
