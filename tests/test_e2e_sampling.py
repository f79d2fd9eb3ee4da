"""Client sampling end to end: `fx aggregator start` and four `fx collaborator start` processes
over mutual TLS, ``sampling: {count: 2}``: each round exactly the seeded cohort of 2 trains
(read back from logs/metrics.jsonl); a strategy needing more replies than a round's cohort
is refused when the aggregator starts, in one line."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import FAST
from test_sampling import NEEDS_THREE

from accord.experiment.local import fx_command, prepare_workspace, run_processes
from accord.metric_records import read_metrics
from accord.plan.loader import update_plan_file
from accord.strategies import ClientSampling

pytestmark = pytest.mark.e2e

SAMPLING = {"count": 2, "seed": 4}
ROUNDS = 3


def test_each_round_exactly_the_seeded_cohort_of_two_trains(tmp_path: Path) -> None:
    plan = prepare_workspace(tmp_path / "ws", collaborators=4, rounds=ROUNDS, overrides={**FAST, "aggregator.settings.sampling": SAMPLING})
    names = plan.model.collaborators
    expected = {r: set(ClientSampling(**SAMPLING).sample(r, names)) for r in range(ROUNDS)}
    assert len({frozenset(c) for c in expected.values()}) > 1  # the seed makes the cohorts differ by round
    report = run_processes(plan, timeout=600)
    logs = {n: (plan.workspace / "logs" / f"{n}.log").read_text() for n in ["aggregator", *names]}
    assert report.ok, (report.returncodes, logs["aggregator"][-3000:])
    records = read_metrics(plan.resolve_path("logs/metrics.jsonl"))
    trained: dict[int, set[str]] = {}
    took_part: dict[int, set[str]] = {}
    for record in records:
        if record.origin == "aggregator":
            continue
        took_part.setdefault(record.round, set()).add(record.origin)
        if record.task == "train":
            trained.setdefault(record.round, set()).add(record.origin)
    assert trained == expected
    assert {r: took_part[r] for r in range(ROUNDS)} == expected  # the others were not even asked to validate
    assert took_part[ROUNDS] == set(names)  # the final validation of the last model asks everyone
    assert [r.round for r in records if r.metric == "round_seconds"] == list(range(ROUNDS + 1))


def test_a_strategy_needing_more_replies_than_the_cohort_is_refused_at_start(tmp_path: Path) -> None:
    plan = prepare_workspace(tmp_path / "ws", collaborators=4, rounds=2, overrides={**FAST, "aggregator.settings.sampling": {"count": 2}})
    (plan.workspace / "src" / "needs.py").write_text(NEEDS_THREE)
    update_plan_file(plan.path, {"aggregator.settings.strategy": {"template": "src.needs.NeedsThree", "settings": {}}})
    done = subprocess.run(fx_command("aggregator", "start", "-w", str(plan.workspace)), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "strategy NeedsThree needs at least 3 replies a round, but a round asks 2 of the 4 collaborators" in lines[0]
    assert "sample more of them (aggregator.settings.sampling)" in lines[0]
    assert not (plan.workspace / "logs" / "metrics.jsonl").exists()  # no round was opened
