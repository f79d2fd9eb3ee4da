"""The aggregator's saved state: a new runtime resumes the open round, losing and repeating nothing."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from accord.aggregator import journal as journal_module
from accord.aggregator.lock import StateLock
from accord.aggregator.runtime import AggregatorRuntime
from accord.aggregator.saved import read_records, read_snapshot
from accord.aggregator.status import read_status
from accord.errors import AccordError, RefusedError
from accord.messages import Action, TaskResult
from accord.metric_records import read_metrics
from accord.tensors.state import load_state
from accord.workspace.initialize import initialize_model

NAMES = ["alpha", "beta"]
TASKS = ("aggregated_model_validation", "train", "locally_tuned_model_validation")


@pytest.fixture
def plan(workspace_factory):
    plan = workspace_factory(NAMES, rounds=2)
    initialize_model(plan)
    return plan


def results_of(runtime: AggregatorRuntime, name: str, shift: float) -> list[TaskResult]:
    """What collaborator ``name`` would send in the open round: the model moved by ``shift``."""
    number = runtime.engine.round_number
    model = {k: (v + shift if v.dtype.kind == "f" else v) for k, v in runtime.engine.model.items()}
    return [
        TaskResult(
            name, number, task, 10 + len(name), {"accuracy": shift % 1}, model if task == "train" else None, False, 0.1,
            model_digest=runtime.engine.model_digest,
        )
        for task in TASKS
        if task in (t.name for t in runtime.engine.assignment(name).tasks)
    ]


def sequence(runtime: AggregatorRuntime) -> list[TaskResult]:
    """Every result of the open round, in a fixed order."""
    return [r for i, name in enumerate(NAMES) for r in results_of(runtime, name, 0.25 * (i + 1) + runtime.engine.round_number)]


def run_all(runtime: AggregatorRuntime, plan, stop_after: int | None = None) -> int:
    """Submit results round by round; with ``stop_after``, stop (as if killed) after that many."""
    sent = 0
    while not runtime.finished:
        for result in sequence(runtime):
            if stop_after is not None and sent == stop_after:
                return sent
            runtime.submit(result, plan.hash)
            sent += 1
    return sent


def test_a_restart_resumes_the_open_round_and_ends_with_the_same_model(plan, workspace_factory) -> None:
    reference_plan = workspace_factory(NAMES, rounds=2)
    initialize_model(reference_plan)
    reference = AggregatorRuntime(reference_plan)
    run_all(reference, reference_plan)
    reference.close()

    first = AggregatorRuntime(plan)
    assert run_all(first, plan, stop_after=11) == 11  # round 1, after alpha's three results and beta's first two
    first.close()
    state = read_status(plan)
    assert state["round"] == 1 and [r["collaborator"] for r in state["results"]] == ["alpha"] * 3 + ["beta"] * 2

    second = AggregatorRuntime(plan)
    assert second.engine.round_number == 1
    assert [t.name for t in second.engine.assignment("beta").tasks] == ["locally_tuned_model_validation"]
    duplicate = TaskResult(
        "alpha", 1, "aggregated_model_validation", 5, {"accuracy": 0.5}, None, False, 0.1,
        model_digest=second.engine.model_digest,
    )
    with pytest.raises(RefusedError, match="already received"):
        second.submit(duplicate, plan.hash)
    run_all(second, plan)
    second.close()

    done = load_state(plan.resolve_path("save/last.safetensors"))
    expected = load_state(reference_plan.resolve_path("save/last.safetensors"))
    for name in expected:
        np.testing.assert_array_equal(done[name], expected[name])
    rounds = [r.round for r in read_metrics(plan.resolve_path("logs/metrics.jsonl")) if r.origin == "aggregator" and r.metric == "round_seconds"]
    assert rounds == [0, 1, 2]  # each round logged once, the final validation included
    again = AggregatorRuntime(plan)  # e.g. killed while telling collaborators to quit, then restarted
    assert again.finished and again.engine.assignment("alpha").action is Action.QUIT
    again.close()
    assert AggregatorRuntime(plan, fresh=True).engine.round_number == 0


def test_metrics_of_the_open_round_are_not_written_twice(plan) -> None:
    first = AggregatorRuntime(plan)
    run_all(first, plan, stop_after=7)
    first.close()
    metrics = plan.resolve_path("logs/metrics.jsonl")
    with metrics.open("a") as out:  # as if killed after logging round 1 but before saving round 2
        out.write(json.dumps({"round": 1, "origin": "aggregator", "task": "round", "metric": "round_seconds", "value": 1.0}) + "\n")
    AggregatorRuntime(plan).close()
    assert {r.round for r in read_metrics(metrics)} == {0}


def test_orphans_are_removed_and_damage_is_reported(plan) -> None:
    runtime = AggregatorRuntime(plan)
    run_all(runtime, plan, stop_after=len(NAMES) * 3 + 2)  # round 0 closed; two results of round 1
    runtime.close()
    state_dir = plan.resolve_path("save/state")
    orphans = [state_dir / "result-0123.safetensors", state_dir / "snapshot-00007.json.damaged-x", state_dir / "model-00042.safetensors"]
    for orphan in orphans:
        orphan.write_bytes(b"half written")
    AggregatorRuntime(plan).close()
    assert [p.exists() for p in orphans] == [False, True, False]  # a damaged file set aside stays
    (state_dir / "snapshot-00001.json").write_text("{not json")
    (state_dir / "snapshot-00000.json").write_text("{not json either")
    with pytest.raises(AccordError, match=r"snapshot-00001.json cannot be read.*snapshot-00000.json cannot be read") as damaged:
        AggregatorRuntime(plan)
    assert "--fresh" in damaged.value.fix
    assert AggregatorRuntime(plan, fresh=True).engine.round_number == 0
    assert sorted(p.name for p in state_dir.glob("snapshot-*.json")) == ["snapshot-00000.json"]


def test_a_record_cut_short_by_a_kill_is_ignored_and_cut_off(plan, caplog) -> None:
    runtime = AggregatorRuntime(plan)
    run_all(runtime, plan, stop_after=len(NAMES) * 3 + 2)  # round 1: alpha's validation, then its training
    runtime.close()
    journal = plan.resolve_path("save/state/journal-00001.jsonl")
    lines = journal.read_bytes().splitlines(keepends=True)
    assert [json.loads(line)["kind"] for line in lines] == ["result", "result"]
    journal.write_bytes(lines[0] + lines[1][:-40])  # the kill landed inside the second append
    with caplog.at_level("INFO", logger="accord.aggregator"):
        resumed = AggregatorRuntime(plan)
    assert resumed.engine.round_number == 1 and len(resumed.journal.load().results) == 1
    assert "the last record of" in caplog.text and "journal-00001.jsonl was cut short" in caplog.text
    assert journal.read_bytes().startswith(lines[0]) and b"resumed" in journal.read_bytes().splitlines()[1]
    assert "rolled back" not in caplog.text  # an unacknowledged record is no damage
    run_all(resumed, plan)
    resumed.close()
    rounds = [r.round for r in read_metrics(plan.resolve_path("logs/metrics.jsonl")) if r.metric == "round_seconds"]
    assert rounds == list(range(resumed.engine.total_rounds))


def test_a_damaged_record_cuts_the_journal_back_to_the_records_before_it(plan, caplog) -> None:
    runtime = AggregatorRuntime(plan)
    run_all(runtime, plan, stop_after=4)  # alpha's three results and beta's first
    runtime.close()
    journal = plan.resolve_path("save/state/journal-00000.jsonl")
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join([lines[0], b'{"kind": "result", "garbage\n', *lines[2:]]))
    with caplog.at_level("WARNING", logger="accord.aggregator"):
        resumed = AggregatorRuntime(plan)
    assert [r["task"] for r in resumed.journal.load().results] == ["aggregated_model_validation"]
    assert "journal-00000.jsonl is damaged at record 2" in caplog.text and "rolled back to the previous saved state" in caplog.text
    aside = list(journal.parent.glob("journal-00000.jsonl.damaged-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b'{"kind": "result", "garbage')
    run_all(resumed, plan)
    resumed.close()
    assert resumed.finished


def test_a_damaged_snapshot_rolls_back_to_the_previous_one_with_its_files(plan, caplog) -> None:
    runtime = AggregatorRuntime(plan)
    run_all(runtime, plan, stop_after=len(NAMES) * 3 + 2)  # round 0 closed; two results of round 1
    runtime.close()
    state_dir = plan.resolve_path("save/state")
    previous = read_snapshot(state_dir / "snapshot-00000.json")
    assert previous["round"] == 0 and len(read_records(state_dir / "journal-00000.jsonl").entries) == 6  # the 6th closed it
    snapshot = state_dir / "snapshot-00001.json"
    snapshot.write_text(snapshot.read_text()[:-40])  # cut short
    with caplog.at_level("WARNING", logger="accord.aggregator"):
        resumed = AggregatorRuntime(plan)
    assert resumed.engine.round_number == 1 and resumed.journal.load().results == ()  # round 0 closed again
    assert "snapshot-00001.json cannot be read" in caplog.text and "rolled back to the previous saved state" in caplog.text
    assert "snapshot-00000.json" in caplog.text
    assert [p.name for p in state_dir.glob("snapshot-00001.json.damaged-*")]
    assert read_snapshot(snapshot)["round"] == 1  # written again as round 0 closed
    assert read_records(state_dir / "journal-00001.jsonl").entries == []  # the damaged round's records went
    run_all(resumed, plan)
    resumed.close()
    rounds = [r.round for r in read_metrics(plan.resolve_path("logs/metrics.jsonl")) if r.metric == "round_seconds"]
    assert rounds == sorted(set(rounds)) == list(range(resumed.engine.total_rounds))  # each round once


def test_a_truncated_file_named_by_a_record_cuts_the_journal_back_to_the_records_before_it(plan, caplog) -> None:
    """The journal itself is whole, but the tensors of its last result were cut short on disk."""
    runtime = AggregatorRuntime(plan)
    run_all(runtime, plan, stop_after=len(NAMES) * 3 + 2)  # round 1: alpha's validation, then its training
    runtime.close()
    state_dir = plan.resolve_path("save/state")
    last = read_status(plan)["results"][-1]["tensors"]
    assert last is not None
    data = (state_dir / last).read_bytes()
    (state_dir / last).write_bytes(data[: len(data) // 2])
    with caplog.at_level("WARNING", logger="accord.aggregator"):
        resumed = AggregatorRuntime(plan)
    assert resumed.engine.round_number == 1 and len(resumed.journal.load().results) == 1
    assert f"the file it names {last} is {len(data) // 2} bytes, its header says {len(data)}" in caplog.text
    assert "rolled back to the previous saved state" in caplog.text and "journal-00001.jsonl" in caplog.text
    assert not (state_dir / last).exists()  # the damaged file is an orphan now
    run_all(resumed, plan)
    resumed.close()
    rounds = [r.round for r in read_metrics(plan.resolve_path("logs/metrics.jsonl")) if r.metric == "round_seconds"]
    assert rounds == list(range(resumed.engine.total_rounds))


def test_the_previous_state_keeps_its_files_until_the_next_commit(plan) -> None:
    runtime = AggregatorRuntime(plan)
    run_all(runtime, plan, stop_after=len(NAMES) * 3)  # round 0 closed: round 1 opened
    state_dir = plan.resolve_path("save/state")
    previous = read_snapshot(state_dir / "snapshot-00000.json")
    assert previous["round"] == 0
    records = read_records(state_dir / "journal-00000.jsonl").entries
    named = [previous["model"], *(r["tensors"] for r in records if r["tensors"])]
    assert len(named) == 3 and all((state_dir / name).is_file() for name in named)  # the model, two updates
    run_all(runtime, plan, stop_after=len(NAMES) * 3)  # round 2 opened: round 0's files are done with
    runtime.close()
    assert not any((state_dir / name).exists() for name in named)
    assert not (state_dir / "snapshot-00000.json").exists() and not (state_dir / "journal-00000.jsonl").exists()
    assert sorted(p.name for p in state_dir.glob("snapshot-*")) == ["snapshot-00001.json", "snapshot-00002.json"]
    assert (state_dir / "model-00001.safetensors").is_file()  # named by the previous snapshot


def test_the_state_of_another_plan_is_not_resumed(plan, workspace_factory) -> None:
    runtime = AggregatorRuntime(plan)
    run_all(runtime, plan, stop_after=2)
    runtime.close()
    other = workspace_factory(NAMES, rounds=3)
    other_state = other.resolve_path("save/state")
    other_state.mkdir(parents=True)
    for path in plan.resolve_path("save/state").iterdir():
        (other_state / path.name).write_bytes(path.read_bytes())
    initialize_model(other)
    with pytest.raises(AccordError, match="another plan"):
        AggregatorRuntime(other)


def test_fx_aggregator_status_shows_the_round_the_reports_and_the_waits(plan, capsys) -> None:
    from accord.cli.main import main

    assert main(["aggregator", "status", "-w", str(plan.workspace)]) == 2
    assert "has not started a federation yet" in capsys.readouterr().err
    with StateLock(plan.resolve_path("save/state")):  # as `fx aggregator start` holds it while it serves
        runtime = AggregatorRuntime(plan)
        run_all(runtime, plan, stop_after=4)  # alpha's three results and beta's first
        runtime.close()
        assert main(["aggregator", "status", "-w", str(plan.workspace)]) == 0
        shown = capsys.readouterr().out
    assert "round 0 of 2 (1/3)" in shown
    assert f"aggregator running (pid {os.getpid()})" in shown  # this process holds the workspace's lock
    assert "reported:    alpha" in shown
    assert "waiting for: beta (train, locally_tuned_model_validation)" in shown
    assert "straggler policy: wait_for_all" in shown
    assert main(["aggregator", "status", "-w", str(plan.workspace), "--json"]) == 0  # the lock is released
    saved = json.loads(capsys.readouterr().out)
    assert saved["running"] is False
    assert saved["status"]["outstanding"] == {"beta": ["train", "locally_tuned_model_validation"]}


def test_each_result_updates_the_saved_status_without_walking_the_sites(plan, monkeypatch) -> None:
    """A result costs no status work (the status is its round's snapshot with the journal's
    records applied when it is read), and the status read says the same as a rebuild."""
    from accord.aggregator.status import RoundStatus

    runtime = AggregatorRuntime(plan)
    results = sequence(runtime)[:4]  # alpha's three results and beta's first
    monkeypatch.setattr(runtime.engine, "reported", lambda: pytest.fail("a result walked every site"))
    for result in results:
        runtime.submit(result, plan.hash)
    saved = read_status(plan)["status"]  # the snapshot's status with the journal's records applied
    monkeypatch.undo()
    rebuilt = RoundStatus(runtime.engine, saved["opened_at"], (), ()).data
    assert saved == rebuilt and saved["reported"] == ["alpha"]
    assert saved["outstanding"] == {"beta": ["train", "locally_tuned_model_validation"]}
    runtime.close()


def test_status_calls_waiting_collaborators_late_after_the_cutoff_and_notes_a_dead_aggregator() -> None:
    from accord.aggregator.status import describe

    policy = {"policy": "cutoff_time", "cutoff_seconds": 10.0, "min_reports": 1, "percentage": None, "round_deadline_seconds": 600.0}
    status = {"rounds_to_train": 3, "total_rounds": 4, "round": 1, "opened_at": 100.0, "assigned": ["a", "b"],
              "reported": ["a"], "outstanding": {"b": ["train"]}, "policy": policy, "previous_stragglers": ["b"]}
    state = {"plan_hash": "f" * 96, "matches_plan": True, "finished": False, "round": 1, "best_score": 0.9,
             "pid": 4321, "running": False, "updated_at": 110.0, "status": status}
    early, late = describe(state, now=105.0), describe(state, now=130.0)
    assert "waiting for: b (train)" in early and "late:        b (train)" in late
    assert "NOT running" in late and "resumes this round" in late
    assert "left out of the previous round: b" in late and "best score 0.9000" in late


def test_a_metrics_line_cut_short_by_a_kill_is_left_out(tmp_path) -> None:
    from accord.metric_records import MetricRecord, MetricsLog

    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.write([MetricRecord(0, "a", "train", "loss", 1.0), MetricRecord(1, "a", "train", "loss", 0.5)])
    with log.path.open("a") as out:
        out.write('{"round": 2, "origin": "a", "ta')
    log.keep_before(2)
    assert [r.round for r in read_metrics(log.path)] == [0, 1]
    log.path.write_text('{"broken"\n' + log.path.read_text())
    with pytest.raises(AccordError, match="line 1, is not a metric record"):
        read_metrics(log.path)


def test_the_state_folder_may_hold_other_files_and_partial_writes_are_cleaned(plan) -> None:
    from accord.aggregator.journal import Journal
    from accord.strategies.seam import StrategyState

    folder = plan.resolve_path("save")  # state_dir shared with init/best/last
    journal = Journal(folder, plan.hash)
    journal.clear()
    journal.open_round(0, load_state(folder / "init.safetensors"), None, {}, StrategyState())
    journal.close()
    partials = [folder / ".result-abc.safetensors.x1.tmp", folder / ".snapshot-00001.json.x2.tmp"]
    for partial in partials:
        partial.write_bytes(b"cut short")
    assert Journal(folder, plan.hash).load() is not None
    assert (folder / "init.safetensors").is_file() and not any(p.exists() for p in partials)


def test_a_state_that_cannot_be_saved_stops_the_aggregator(plan, monkeypatch) -> None:
    runtime = AggregatorRuntime(plan)
    result = results_of(runtime, "alpha", 0.5)[0]

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(journal_module, "_write_durably", disk_full)
    with pytest.raises(AccordError, match=r"could not save its state and stops.*No space left"):
        runtime.submit(result, plan.hash)
    with pytest.raises(AccordError, match="could not save its state"):
        runtime.wait_until_done(timeout=5)
    with pytest.raises(RefusedError, match="is stopping"):
        runtime.submit(results_of(runtime, "beta", 0.5)[0], plan.hash)
    runtime.close()
    monkeypatch.undo()
    journal = plan.resolve_path("save/state/journal-00000.jsonl")
    assert b'"kind":"result"' not in journal.read_bytes()  # the failed append was cut back off
    assert AggregatorRuntime(plan).journal.load().results == ()  # nothing half-saved


def test_a_result_that_cannot_be_staged_is_refused_busy_without_the_aggregators_paths(plan, monkeypatch, caplog) -> None:
    """The site hears a generic reason; the aggregator's own log names the file."""
    runtime = AggregatorRuntime(plan)
    train = next(r for r in results_of(runtime, "alpha", 0.5) if r.tensors)
    secret = str(runtime.journal.directory / ".result-x.safetensors.tmp")

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device", secret)

    monkeypatch.setattr(os, "posix_fallocate", disk_full)  # the staged file reserves its size first
    with caplog.at_level("ERROR", logger="accord.aggregator"):
        with pytest.raises(RefusedError) as refused:
            runtime.submit(train, plan.hash)
    assert refused.value.kind == "busy" and "No space left on device" in refused.value.message
    assert str(runtime.journal.directory) not in str(refused.value)
    assert not list(runtime.journal.directory.glob("result-*"))
    assert not list(runtime.journal.directory.glob(".result-*"))  # nor a partial file
    assert secret in caplog.text and "refused for now" in caplog.text
    runtime.close()


def test_a_snapshot_cut_short_before_its_rename_resumes_from_the_previous_one(plan) -> None:
    """Killed after the next round's model was written, before its snapshot took its place."""
    runtime = AggregatorRuntime(plan)
    run_all(runtime, plan, stop_after=len(NAMES) * 3)  # round 0 closed: round 1 opened
    runtime.close()
    state_dir = plan.resolve_path("save/state")
    snapshot = state_dir / "snapshot-00001.json"
    partial = state_dir / ".snapshot-00001.json.abc.tmp"
    partial.write_bytes(snapshot.read_bytes()[:100])
    snapshot.unlink()
    (state_dir / "journal-00001.jsonl").unlink()
    resumed = AggregatorRuntime(plan)
    assert not partial.exists()
    assert resumed.engine.round_number == 1 and (state_dir / "snapshot-00001.json").is_file()  # round 0 closed again
    assert [t.name for t in resumed.engine.assignment("beta").tasks] == list(TASKS)
    run_all(resumed, plan)
    resumed.close()
    assert resumed.finished
    rounds = [r.round for r in read_metrics(plan.resolve_path("logs/metrics.jsonl")) if r.metric == "round_seconds"]
    assert rounds == list(range(resumed.engine.total_rounds))
