"""Straggler policies with real processes: a collaborator frozen (SIGSTOP) past the cut-off and
one killed; which reports each round averaged is read back from metrics.jsonl and the log."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from test_e2e_faults import Sites, saved_state, slow_workspace, wait_for

from accord.metric_records import read_metrics
from accord.plan.loader import Plan

pytestmark = pytest.mark.e2e

CUTOFF = 3.0


def trained_by_round(plan: Plan) -> dict[int, set[str]]:
    """round -> the collaborators whose training update the round took (a record per accepted result)."""
    rounds: dict[int, set[str]] = {}
    for record in read_metrics(plan.resolve_path("logs/metrics.jsonl")):
        if record.task == "train" and record.origin != "aggregator":
            rounds.setdefault(record.round, set()).add(record.origin)
    return rounds


def test_a_frozen_and_a_killed_collaborator_under_the_cutoff_policy(tmp_path: Path) -> None:
    """cutoff_time, min_reports 2 of 3.

    Round 0: collaborator2 is frozen mid-training and collaborator3 killed mid-training; the
    cut-off passes with one report, so the round waits; collaborator3 comes back and its
    report closes the round. collaborator2, thawed, has its round-0 result dropped and goes on.
    Round 1: collaborator2 trains for longer than the cut-off; the round closes at its cut-off
    with the two others (the round deadline is a day away: the deadline watcher must wake at
    the cut-off of a round opened while it slept). collaborator2's late result is dropped again
    (the final validation round may close without it too).
    """
    policy = {"policy": "cutoff_time", "cutoff_seconds": CUTOFF, "min_reports": 2, "round_deadline_seconds": 86400}
    plan = slow_workspace(tmp_path / "ws", 3, 2, **{"straggler_handling_policy.settings": policy})
    frozen, killed = tmp_path / "collaborator2-training", tmp_path / "collaborator3-training"
    sites = Sites(plan)
    try:
        sites.start("aggregator")
        sites.start("collaborator1")
        sites.start("collaborator2", SLOW_SECONDS=str(3 * CUTOFF), SLOW_CALLS="2", SLOW_MARKER=str(frozen))
        sites.start("collaborator3", SLOW_SECONDS="600", SLOW_MARKER=str(killed))
        wait_for(frozen.exists, what="collaborator2 to start training")
        sites.procs["collaborator2"].send_signal(signal.SIGSTOP)
        wait_for(killed.exists, what="collaborator3 to start training")
        sites.kill("collaborator3")
        wait_for(lambda: saved_state(plan).get("status", {}).get("reported") == ["collaborator1"], what="collaborator1's report")
        time.sleep(CUTOFF + 2.0)  # past the cut-off with 1 report of the 2 needed: round 0 stays open
        assert saved_state(plan)["round"] == 0, sites.log("aggregator")
        sites.start("collaborator3")  # comes back, owes the rest of round 0; its report closes it
        wait_for(lambda: saved_state(plan).get("round", 0) >= 1, what="round 0 to close")
        sites.procs["collaborator2"].send_signal(signal.SIGCONT)
        codes = sites.wait_all()
    finally:
        sites.close()
    log = sites.log("aggregator")
    assert codes == {"aggregator": 0, "collaborator1": 0, "collaborator2": 0, "collaborator3": 0}, log
    assert "round 0 closed without the reports of collaborator2 " in log
    assert "round 1 closed without the reports of collaborator2 " in log
    assert "refused result from collaborator2: result from collaborator2 for 'train' of round 0 came after" in log
    assert "came after that round closed" in sites.log("collaborator2")  # told, and it went on
    assert trained_by_round(plan) == {0: {"collaborator1", "collaborator3"}, 1: {"collaborator1", "collaborator3"}}
    records = read_metrics(plan.resolve_path("logs/metrics.jsonl"))
    assert [r.round for r in records if r.metric == "round_seconds"] == [0, 1, 2]  # 2 rounds and the final validation, once each
    round1 = {r.origin for r in records if r.round == 1 and r.origin != "aggregator"}
    assert "collaborator2" in round1  # thawed, it took part in round 1 (its validation of the global model)


def test_percentage_closes_each_round_when_its_share_reported(tmp_path: Path) -> None:
    """percentage 0.6 of 3 (2 reports): collaborator3 is frozen in round 0's training; rounds
    0 and 1 close as soon as the other two reported; thawed, its late result is dropped."""
    policy = {"policy": "percentage", "percentage": 0.6, "min_reports": 1}
    plan = slow_workspace(tmp_path / "ws", 3, 2, **{"straggler_handling_policy.settings": policy})
    frozen = tmp_path / "collaborator3-training"
    sites = Sites(plan)
    try:
        sites.start("aggregator")
        # the others train only once collaborator3 is training round 0, so it is a straggler of that round
        sites.start("collaborator1", TRAINING_WAITS_FOR=str(frozen))
        sites.start("collaborator2", TRAINING_WAITS_FOR=str(frozen))
        sites.start("collaborator3", SLOW_SECONDS="5", SLOW_CALLS="1", SLOW_MARKER=str(frozen))
        wait_for(frozen.exists, what="collaborator3 to start training")
        sites.procs["collaborator3"].send_signal(signal.SIGSTOP)
        wait_for(lambda: saved_state(plan).get("round", 0) >= 2, what="rounds 0 and 1 to close")
        sites.procs["collaborator3"].send_signal(signal.SIGCONT)
        codes = sites.wait_all()
    finally:
        sites.close()
    log = sites.log("aggregator")
    assert codes == {"aggregator": 0, "collaborator1": 0, "collaborator2": 0, "collaborator3": 0}, log
    assert "round 0 closed without the reports of collaborator3 (straggler policy percentage)" in log
    assert "round 1 closed without the reports of collaborator3 (straggler policy percentage)" in log
    assert "came after that round closed" in sites.log("collaborator3")
    assert trained_by_round(plan) == {0: {"collaborator1", "collaborator2"}, 1: {"collaborator1", "collaborator2"}}
