"""The log lines of the results a round takes: bounded per round whatever the number of sites."""

from __future__ import annotations

import logging

import pytest

from accord.aggregator.reporting import PROGRESS_SECONDS, RESULT_LINES, ResultLog
from accord.messages import TaskResult

SITES = 1000


def result(round_number: int, site: int, failure: str = "") -> TaskResult:
    metrics = {} if failure else {"accuracy": 0.5}
    return TaskResult(f"site{site}", round_number, "train", 0 if failure else 100, metrics, failure=failure)


def test_a_round_of_a_thousand_results_logs_the_first_each_then_progress_and_every_failure(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    results = ResultLog(clock=lambda: now[0])
    with caplog.at_level(logging.DEBUG, logger="accord.aggregator"):
        for site in range(SITES):
            now[0] += 0.1  # a result every 0.1 s: 100 s for the round
            results.took(result(0, site))
        results.took(result(0, 7, failure="its data loader failed"))
        results.took(result(1, 0))  # the next round: its first results have a line each again
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    lines = [m for m in info if m.startswith("round 0  site")]
    progress = [m for m in info if m.startswith("round 0: ")]
    assert len(lines) == RESULT_LINES and lines[0].startswith("round 0  site0 ")
    assert len(progress) == int((SITES - RESULT_LINES) * 0.1 / PROGRESS_SECONDS)  # one per PROGRESS_SECONDS
    assert all(" results taken so far (one line each for the first " in m for m in progress)
    assert len(debug) == SITES - RESULT_LINES  # every result is still there at DEBUG
    assert warnings == ["round 0  site7 failed train at its site: its data loader failed (it owes nothing more this round)"]
    assert info[-1].startswith("round 1  site0 ")
