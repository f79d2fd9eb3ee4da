"""The aggregator's start closes what it opened when the audit trail fails: a corrupt chain
leaves no metrics sink open (the Prometheus port free again), and a runtime that fails after
beginning the trail leaves it stopped, sealed and unlocked. A second start of a running site
(real processes) is refused in one line, exit 2."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest
from conftest import FAST
from test_e2e_faults import Sites, slow_workspace, wait_for

from accord.aggregator import serve
from accord.audit.chain import ChainWriter
from accord.errors import AccordError
from accord.experiment.local import fx_command, prepare_workspace


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_corrupt_chain_leaves_no_sink_open(tmp_path: Path) -> None:
    port = free_port()
    overrides = {**FAST, "aggregator.settings.metrics.prometheus": {"host": "127.0.0.1", "port": port}}
    plan = prepare_workspace(tmp_path / "ws", 1, 1, overrides=overrides)
    trail = plan.workspace / "logs" / "audit.jsonl"
    trail.parent.mkdir(parents=True, exist_ok=True)
    trail.write_bytes(b"not an entry\n")
    with pytest.raises(AccordError, match="line 1 is not an audit entry"):
        serve.start_aggregator(plan)
    with socket.socket() as sock:  # the Prometheus endpoint was closed
        sock.bind(("127.0.0.1", port))


def test_a_runtime_failing_after_begin_leaves_the_trail_closed(tmp_path: Path, monkeypatch) -> None:
    plan = prepare_workspace(tmp_path / "ws", 1, 1, overrides=FAST)

    def failing_runtime(plan, *, audit, **_):  # what a runtime failing once it began the trail does
        audit.begin(False, plan.hash, "w" * 96)
        raise AccordError("the runtime failed to start")

    monkeypatch.setattr(serve, "AggregatorRuntime", failing_runtime)
    with pytest.raises(AccordError, match="the runtime failed to start"):
        serve.start_aggregator(plan)
    path = plan.workspace / "logs" / "audit.jsonl"
    assert path.read_bytes().count(b'"kind":"stop"') == 1 and b'"kind":"seal"' in path.read_bytes().splitlines()[-1]
    ChainWriter(path, lambda data: b"").close()  # its lock released


@pytest.mark.e2e
def test_a_second_start_of_a_running_site_is_refused(tmp_path: Path) -> None:
    plan = slow_workspace(tmp_path / "ws", 2, 2)
    sites = Sites(plan)
    record = plan.workspace / "logs" / "audit-collaborator1.jsonl"
    try:
        sites.start("aggregator")
        sites.start("collaborator1", SLOW_SECONDS="2.0")
        wait_for(lambda: record.exists() and record.stat().st_size > 0, what="collaborator1's record")
        held = record.read_bytes()
        second = subprocess.run(
            fx_command("collaborator", "start", "-n", "collaborator1", "-w", str(plan.workspace)),
            capture_output=True, text=True, timeout=120,
        )
        assert second.returncode == 2, second.stdout + second.stderr
        assert "site collaborator1 is already running from this workspace" in second.stderr, second.stderr
        assert record.read_bytes().startswith(held)
    finally:
        sites.close()
