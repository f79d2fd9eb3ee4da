"""What the operators see, with real processes: a site's per-round figures on its console and
in its logs/, its "waiting for the aggregator" line, and SIGINT / SIGTERM to a running
aggregator and collaborator: the line that says what is saved, and the command it suggests
really resumes the federation."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
from pathlib import Path

import pytest
from conftest import FAST
from test_e2e_faults import wait_for

from accord.experiment.local import fx_command, prepare_workspace
from accord.metric_records import read_metrics

pytestmark = pytest.mark.e2e


class Console:
    """One ``fx`` process with its output (stdout and stderr) in a file."""

    def __init__(self, log: Path, *args: str) -> None:
        self.log = log
        with log.open("w") as out:
            self.proc = subprocess.Popen(
                fx_command(*args), stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
            )

    @property
    def text(self) -> str:
        return self.log.read_text()

    def shows(self, pattern: str, timeout: float = 180.0) -> re.Match[str]:
        """The first match of ``pattern`` in the output, once it appears (the process still running)."""
        found: list[re.Match[str]] = []

        def seen() -> bool:
            match = re.search(pattern, self.text)
            if match is None and self.proc.poll() is not None:
                raise AssertionError(f"{self.log.name} exited ({self.proc.returncode}) without {pattern!r}:\n{self.text}")
            found[:] = [match] if match else []
            return match is not None

        wait_for(seen, timeout, f"{pattern!r} in {self.log.name}")
        return found[0]

    def stop(self, number: int, timeout: float = 60.0) -> int:
        self.proc.send_signal(number)
        return self.proc.wait(timeout=timeout)


def resumed(line: str, log: Path) -> Console:
    """The process that the ``resume with: fx ...`` command of ``line`` starts."""
    words = shlex.split(line)
    assert words[0] == "fx", line
    return Console(log, *words[1:])


@pytest.mark.parametrize(
    ("agg_signal", "site_signal"),
    [(signal.SIGTERM, signal.SIGINT), (signal.SIGINT, signal.SIGTERM)],
    ids=["aggregator_SIGTERM-site_SIGINT", "aggregator_SIGINT-site_SIGTERM"],
)
def test_sites_show_their_rounds_and_both_ends_stop_and_resume_cleanly(
    tmp_path: Path, agg_signal: signal.Signals, site_signal: signal.Signals
) -> None:
    # wait_for_all (the default): round 0 stays open until collaborator2 comes, so the stops land mid-federation
    plan = prepare_workspace(tmp_path / "ws", collaborators=2, rounds=2, overrides=FAST)
    ws, port = plan.workspace, plan.model.network.settings.agg_port
    logs = tmp_path / "out"
    logs.mkdir()
    running: list[Console] = []

    def start(name: str, *args: str) -> Console:
        running.append(Console(logs / name, *args))
        return running[-1]

    try:
        site1 = start("site1", "collaborator", "start", "-n", "collaborator1", "-w", str(ws))
        site1.shows(rf"waiting for the aggregator at localhost:{port} \(up to \d+ s\)")  # no aggregator yet
        aggregator = start("aggregator", "aggregator", "start", "-w", str(ws))
        site1.shows(r"collaborator1: round 0 done here: 3 tasks in [\d.]+s, [\d.]+ KB down, [\d.]+ KB up")

        # the aggregator stopped mid-round: where, what is saved, the command that resumes it
        assert aggregator.stop(agg_signal) == 128 + agg_signal
        line = re.search(rf"aggregator stopped by {agg_signal.name} at round 0 of 2; state saved in save/state .*", aggregator.text)
        assert line, aggregator.text
        command = line.group(0).split("resume with: ", 1)[1]
        assert command == f"fx aggregator start -w {ws}"
        # the site keeps trying, and says so once for the outage, not once a try
        site1.shows(rf"waiting for the aggregator at localhost:{port}: it is unreachable")
        aggregator = resumed(command, logs / "aggregator-resumed")
        aggregator.shows(r"resuming round 0 from .* with 3 results already received")
        site1.shows(rf"the aggregator at localhost:{port} answers again")

        # the site stopped while it waits for round 1: what it holds, how to resume
        assert site1.stop(site_signal) == 128 + site_signal
        line = re.search(rf"collaborator collaborator1 stopped by {site_signal.name}: it holds the global model of round 0 .*", site1.text)
        assert line, site1.text
        assert "nothing is lost" in line.group(0)
        command = line.group(0).split("resume with: ", 1)[1]
        assert command == f"fx collaborator start -n collaborator1 -w {ws}"

        site2 = start("site2", "collaborator", "start", "-n", "collaborator2", "-w", str(ws))
        site1 = resumed(command, logs / "site1-resumed")
        running.append(site1)
        for site in (site1, site2):
            assert site.proc.wait(timeout=240) == 0, site.text
        assert aggregator.proc.wait(timeout=60) == 0, aggregator.text
    finally:
        for console in running:
            if console.proc.poll() is None:
                console.proc.kill()
                console.proc.wait()
    assert "federation finished: 2 rounds" in aggregator.text

    # each site's console, its log file and its metrics file show its own rounds
    for name, console in (("collaborator1", site1), ("collaborator2", site2)):
        assert re.search(rf"{name}: round 1  train +loss=[\d.]+  \(n=\d+, [\d.]+s\)", console.text), console.text
        assert re.search(rf"{name}: round 1  aggregated_model_validation +accuracy=[\d.]+  loss=[\d.]+", console.text)
        assert f"{name}: round 2 done here: 1 task in" in console.text  # the final validation
        site_log = (ws / "logs" / f"collaborator-{name}.log").read_text()
        assert f"{name}: round 1 done here: 3 tasks in" in site_log
        records = read_metrics(ws / "logs" / f"collaborator-{name}-metrics.jsonl")
        assert {r.origin for r in records} == {name}
        trained = {r.round: r for r in records if r.task == "train" and r.metric == "sample_count"}
        assert set(trained) >= {1} and all(r.value > 0 for r in trained.values())
        sent = [r for r in records if r.task == "round" and r.metric == "bytes_up" and r.round == 1]
        received = [r for r in records if r.task == "round" and r.metric == "bytes_down" and r.round == 1]
        assert sent and sent[0].value > 0 and received and received[0].value > 0
    # the first collaborator1 logged its stop in its own log file too (appended to by the restart)
    assert f"collaborator collaborator1 stopped by {site_signal.name}" in (ws / "logs" / "collaborator-collaborator1.log").read_text()
