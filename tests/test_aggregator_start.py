"""One aggregator per workspace and per port, and `fx aggregator status` after a restart (issue 9, property 8).

Real `fx aggregator start` processes on 127.0.0.1 with real certificates.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest
from conftest import FAST, wait_listening

from accord.errors import AccordError
from accord.experiment.local import free_port, fx_command, prepare_workspace
from accord.pki.layout import CertLayout
from accord.plan.loader import Plan, update_plan_file
from accord.transport import binding
from accord.transport.grpc_server import GrpcAggregatorServer
from accord.transport.tls import ServerTLS

pytestmark = pytest.mark.e2e


def start(plan: Plan, log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(
            fx_command("aggregator", "start", "-w", str(plan.workspace)),
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def fx(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(fx_command(*args), capture_output=True, text=True, timeout=120)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()


@pytest.fixture
def plan(tmp_path: Path) -> Plan:
    return prepare_workspace(tmp_path / "ws", collaborators=1, rounds=3, overrides=FAST)


def test_a_second_aggregator_on_the_same_workspace_fails_with_a_clear_line(plan: Plan, tmp_path: Path) -> None:
    first = start(plan, tmp_path / "first.log")
    try:
        wait_listening(plan.model.network.settings.agg_port, first, tmp_path / "first.log")
        saved = [plan.workspace / "save" / "state" / name for name in ("snapshot-00000.json", "journal-00000.jsonl")]
        state = [path.read_bytes() for path in saved]
        second = fx("aggregator", "start", "-w", str(plan.workspace))
        assert second.returncode == 2, second.stdout + second.stderr
        assert f"another aggregator (pid {first.pid}) is already serving this workspace" in second.stderr
        assert "aggregator.lock" in second.stderr and "stop that aggregator first" in second.stderr
        assert "Traceback" not in second.stderr
        assert first.poll() is None  # the first goes on, its saved state untouched
        assert [path.read_bytes() for path in saved] == state
    finally:
        stop(first)


def test_a_second_aggregator_on_the_same_port_fails_with_a_clear_line(plan: Plan, tmp_path: Path) -> None:
    other = prepare_workspace(tmp_path / "other", collaborators=1, rounds=3, overrides=FAST)
    port = plan.model.network.settings.agg_port
    update_plan_file(other.path, {"network.settings.agg_port": port})
    first = start(plan, tmp_path / "first.log")
    try:
        wait_listening(plan.model.network.settings.agg_port, first, tmp_path / "first.log")
        second = fx("aggregator", "start", "-w", str(other.workspace))
        assert second.returncode == 2, second.stdout + second.stderr
        assert f"the aggregator cannot listen on 127.0.0.1:{port}" in second.stderr
        assert "another process (another aggregator?) holds the port" in second.stderr
        assert "change `network.settings.agg_port`" in second.stderr and "Traceback" not in second.stderr
        assert first.poll() is None
    finally:
        stop(first)


def test_every_resolved_address_must_be_bound(plan: Plan, monkeypatch) -> None:
    """A name resolving to two addresses (as localhost to 127.0.0.1 and ::1), one of them taken."""
    real = socket.getaddrinfo
    two = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 0)), (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.2", 0))]
    monkeypatch.setattr(binding.socket, "getaddrinfo", lambda host, *a, **k: two if host == "twofold" else real(host, *a, **k))
    port = free_port()
    layout = CertLayout(plan.workspace / "cert")
    tls = ServerTLS(layout.aggregator_cert("localhost"), layout.aggregator_key("localhost"), layout.chain)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.2", port))
        squatter.listen()
        server = GrpcAggregatorServer(None, "twofold", port, tls)  # type: ignore[arg-type]  (fails before serving)
        with pytest.raises(AccordError, match=rf"cannot listen on 127\.0\.0\.2:{port} \(from `network.settings.agg_addr` 'twofold'\)"):
            server.start()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))  # nothing was left listening on the address that did bind


def status(plan: Plan) -> str:
    shown = fx("aggregator", "status", "-w", str(plan.workspace))
    assert shown.returncode == 0, shown.stderr
    return shown.stdout


def test_status_reports_the_live_aggregator_after_a_kill_and_a_restart(plan: Plan, tmp_path: Path) -> None:
    first = start(plan, tmp_path / "first.log")
    try:
        wait_listening(plan.model.network.settings.agg_port, first, tmp_path / "first.log")
        assert f"aggregator running (pid {first.pid})" in status(plan)
        first.send_signal(signal.SIGKILL)
        first.wait()
        assert f"aggregator NOT running (pid {first.pid} gone" in status(plan)
        second = start(plan, tmp_path / "second.log")
        try:
            wait_listening(plan.model.network.settings.agg_port, second, tmp_path / "second.log")
            shown = status(plan)
            assert f"aggregator running (pid {second.pid})" in shown, shown  # the snapshot still names the first
            assert str(first.pid) not in shown
        finally:
            stop(second)
        assert "aggregator NOT running" in status(plan)
    finally:
        stop(first)
