"""Refused certificates, with real processes: revoked while the aggregator runs, expired,
and the revocation list the aggregator re-reads only when it changes."""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
from conftest import FAST

from accord.errors import AccordError, RefusedError
from accord.experiment.local import fx_command, prepare_workspace
from accord.pki import certify, load_pem_cert, make_federation_pki, records, revoke
from accord.pki.layout import CertLayout
from accord.pki.records import RevocationWatch
from accord.plan.loader import Plan
from accord.transport.grpc_client import GrpcAggregatorClient
from accord.transport.tls import ClientTLS


@pytest.mark.parametrize("key_type", ["ec", "ec-p384"])  # P-256 now, and the P-384 federations made before
def test_the_revocation_watch_rereads_only_when_the_list_changes(tmp_path: Path, monkeypatch, caplog, key_type: str) -> None:
    layout = make_federation_pki(tmp_path / "cert", "localhost", ["alice", "bob"], key_type)
    alice = load_pem_cert(layout.collaborator_cert("alice")).serial_number
    reads = []
    real = records.revoked_serials
    monkeypatch.setattr(records, "revoked_serials", lambda d: reads.append(d) or real(d))
    watch = RevocationWatch(layout.cert_dir)
    assert watch() == set() and reads == []  # no list yet: nothing read
    revoke(layout.cert_dir, "alice")
    reads.clear()
    assert watch() == {alice} and watch() == {alice} and len(reads) == 1
    with layout.revoked.open("a") as handle:
        handle.write("{not json\n")
    with caplog.at_level(logging.ERROR, logger="accord.pki"):
        assert watch() == {alice}  # a damaged list keeps the revocations already seen
    assert "keeping the 1 serials known" in caplog.text
    layout.revoked.unlink()
    with caplog.at_level(logging.ERROR, logger="accord.pki"):
        assert watch() == {alice}  # deleting the list revokes nothing back
    assert "disappeared" in caplog.text


# -- real processes ---------------------------------------------------------------------------


def _aggregator(plan: Plan, log: Path) -> subprocess.Popen:
    """`fx aggregator start` with its output (stdout and stderr) in ``log``; gRPC's log level as shipped."""
    env = {k: v for k, v in os.environ.items() if k not in ("GRPC_VERBOSITY", "GRPC_TRACE")}
    env["PYTHONUNBUFFERED"] = "1"
    with log.open("w") as out:
        return subprocess.Popen(
            fx_command("aggregator", "start", "-w", str(plan.workspace)), stdout=out, stderr=subprocess.STDOUT, env=env
        )


def _wait_listening(plan: Plan, aggregator: subprocess.Popen, timeout: float = 60.0) -> None:
    """Block until the aggregator accepts TCP connections (a TLS attempt before that is refused unlogged)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("localhost", plan.model.network.settings.agg_port), timeout=1.0).close()
            return
        except OSError:
            assert aggregator.poll() is None and time.monotonic() < deadline, "the aggregator did not start listening"
            time.sleep(0.1)


def _collaborator(plan: Plan, name: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        fx_command("collaborator", "start", "-n", name, "-w", str(plan.workspace), "--connect-timeout", "5"),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _client(plan: Plan, name: str) -> GrpcAggregatorClient:
    """A client in this process, with no pre-check of its certificate; it retries for 3 s only.

    A refused handshake looks like an unreachable aggregator ("Socket closed"), which a
    real site keeps trying for `reconnect_timeout_seconds`.
    """
    layout = CertLayout(plan.workspace / "cert")
    tls = ClientTLS(layout.collaborator_cert(name), layout.collaborator_key(name), layout.chain)
    net = plan.model.network.settings
    return GrpcAggregatorClient(
        name, plan.hash, net.agg_addr, net.agg_port, tls, connect_timeout=10.0, reconnect_timeout=3.0,
        workspace_hash=plan.workspace_hash(),
    )


def _finish(aggregator: subprocess.Popen, log: Path) -> str:
    try:
        aggregator.wait(timeout=60)
    finally:
        if aggregator.poll() is None:
            aggregator.kill()
            aggregator.wait()
    return log.read_text()


@pytest.mark.e2e
def test_a_certificate_revoked_while_the_aggregator_runs_is_refused(tmp_path: Path) -> None:
    plan = prepare_workspace(tmp_path / "ws", collaborators=1, rounds=1, overrides=FAST)
    layout = CertLayout(plan.workspace / "cert")
    serial = load_pem_cert(layout.collaborator_cert("collaborator1")).serial_number
    log = tmp_path / "aggregator.log"
    aggregator = _aggregator(plan, log)
    try:
        with _client(plan, "collaborator1") as early:
            early.join()  # accepted: the aggregator has read the (empty) revocation list
            revoked = subprocess.run(
                fx_command("workspace", "revoke", "collaborator1", "-w", str(plan.workspace), "--reason", "laptop stolen"),
                capture_output=True, text=True, timeout=60,
            )
            assert revoked.returncode == 0 and f"{serial:x}" in revoked.stdout, revoked.stderr
            with pytest.raises(RefusedError, match="revoked") as refused:
                early.get_tasks()  # the same channel, refused from the moment of revocation
            assert refused.value.kind == "identity"

        site = _collaborator(plan, "collaborator1")
        assert site.returncode == 2, site.stdout + site.stderr
        assert "revoked" in site.stderr and f"{serial:x}" in site.stderr and "Traceback" not in site.stderr

        # the site gets a new certificate (a new serial) and the federation completes
        certify(layout.cert_dir, "collaborator", "collaborator1", overwrite=True)
        renewed = _collaborator(plan, "collaborator1")
        assert renewed.returncode == 0, renewed.stdout + renewed.stderr
    finally:
        out = _finish(aggregator, log)
    assert aggregator.returncode == 0, out
    refusals = [line for line in out.splitlines() if "WARNING" in line and "revoked" in line]
    assert refusals and all("collaborator1" in line and f"{serial:x}" in line for line in refusals), out
    assert "federation finished" in out


@pytest.mark.e2e
def test_an_expired_certificate_is_refused_before_connecting_and_in_the_handshake(tmp_path: Path) -> None:
    plan = prepare_workspace(tmp_path / "ws", collaborators=1, rounds=1, overrides=FAST)
    layout = CertLayout(plan.workspace / "cert")
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    certify(layout.cert_dir, "collaborator", "collaborator1", days=2, now=past, overwrite=True)
    log = tmp_path / "aggregator.log"
    aggregator = _aggregator(plan, log)
    try:
        site = _collaborator(plan, "collaborator1")
        assert site.returncode == 2, site.stdout + site.stderr
        assert "certificate cert/client/col_collaborator1.crt expired on" in site.stderr
        assert "fx collaborator generate-cert-request -n collaborator1" in site.stderr

        # without the site's pre-check, the aggregator's TLS handshake refuses it (and logs why)
        _wait_listening(plan, aggregator)
        with _client(plan, "collaborator1") as bypass:
            with pytest.raises(AccordError, match="unreachable"):
                bypass.get_model(0)  # a plain call: gRPC's ready-future would outlive the channel

        certify(layout.cert_dir, "collaborator", "collaborator1", overwrite=True)
        renewed = _collaborator(plan, "collaborator1")
        assert renewed.returncode == 0, renewed.stdout + renewed.stderr
    finally:
        out = _finish(aggregator, log)
    assert aggregator.returncode == 0, out
    assert "Handshake failed" in out and "certificate has expired" in out, out
