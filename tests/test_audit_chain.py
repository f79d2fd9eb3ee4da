"""The audit chain's writer on its own: a cut-short last line dropped, the chain going on from
the entry before, a bad last entry refused in one line, the journal's replay chained once
(marked) or left out, a site's record locked while it runs, and the resumed chain not kept."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from accord.audit.chain import GENESIS, ChainWriter, entry_hash
from accord.audit.site_record import SiteRecord
from accord.audit.trail import AuditTrail
from accord.errors import AccordError
from accord.messages import TaskResult
from accord.pki import make_federation_pki
from accord.pki.keys import load_private_key
from accord.pki.layout import CertLayout
from accord.pki.signatures import signer_for


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_cut_short_last_line_is_dropped_and_the_chain_goes_on(tmp_path: Path, caplog) -> None:
    path = tmp_path / "audit.jsonl"
    chain = ChainWriter(path, lambda data: b"sig")
    for i in range(3):
        chain.append("model", round=i, digest=f"{i:064x}")
    chain.close()
    path.write_bytes(path.read_bytes()[:-7])  # a kill inside the third write
    again = ChainWriter(path, lambda data: b"sig")
    again.append("model", round=2, digest="ab" * 32)
    again.close()
    written = rows(path)
    assert "cut short" in caplog.text
    assert [e["seq"] for e in written] == [0, 1, 2] and written[2]["digest"] == "ab" * 32
    assert written[0]["prev"] == GENESIS and written[2]["prev"] == entry_hash(written[1])


def test_a_replayed_result_is_chained_once(tmp_path: Path) -> None:
    cert_dir = tmp_path / "cert"
    make_federation_pki(cert_dir, "localhost", ["a"])
    layout = CertLayout(cert_dir)
    sign = signer_for(load_private_key(layout.aggregator_key("localhost")))
    pem = layout.aggregator_cert("localhost").read_bytes()
    path = tmp_path / "audit.jsonl"
    first = TaskResult("a", 0, "train", 10, {}, update_digest="11" * 32, sender_serial="ab")
    lost = TaskResult("a", 0, "validate", 10, {}, update_digest="22" * 32, sender_serial="ab")
    trail = AuditTrail(path, sign, pem)
    trail.begin(False, "p" * 96, "w" * 96)
    trail.result(first)
    trail.close()
    again = AuditTrail(path, sign, pem)  # restarted: the journal replays both, the chain held one
    again.begin(True, "p" * 96, "w" * 96)
    assert not [v for v in vars(again._chain).values() if isinstance(v, list) and v]  # the chain read not kept: O(1)
    again.result(first, replay=True)
    again.result(lost, replay=True)
    again.close()
    results = [e for e in rows(path) if e["kind"] == "result"]
    assert [(e["task"], e.get("replay", False)) for e in results] == [("train", False), ("validate", True)]
    assert [e["kind"] for e in rows(path)] == ["start", "result", "stop", "seal", "restart", "result", "stop", "seal"]


def test_a_bad_last_entry_is_refused_in_one_line(tmp_path: Path) -> None:
    """A whole last line holding NaN (which no append can chain from) stops the writer at open, one line."""
    path = tmp_path / "audit.jsonl"
    chain = ChainWriter(path, lambda data: b"sig")
    chain.append("model", round=0, digest="00" * 32)
    chain.close()
    path.write_bytes(path.read_bytes() + b'{"at":NaN,"kind":"model","prev":"x","seq":1}\n')
    with pytest.raises(AccordError, match=r"line 2 is not an audit entry: the chain cannot go on from it"):
        ChainWriter(path, lambda data: b"sig")
    assert path.read_bytes().count(b"\n") == 2  # nothing cut or appended


def test_a_second_writer_of_a_site_record_is_refused(tmp_path: Path) -> None:
    """The record is locked while its site runs: a second start of the site is refused in one
    line, the record untouched; once the first closes, the site starts again."""
    cert_dir = tmp_path / "cert"
    make_federation_pki(cert_dir, "localhost", ["a"])
    layout = CertLayout(cert_dir)
    sign = signer_for(load_private_key(layout.collaborator_key("a")))
    pem = layout.collaborator_cert("a").read_bytes()
    path = tmp_path / "logs" / "audit-a.jsonl"
    running = SiteRecord(path, sign, "a", pem, "p" * 96, "w" * 96, 1 << 20)
    held = path.read_bytes()
    with pytest.raises(AccordError, match=r"site a is already running from this workspace") as refused:
        SiteRecord(path, sign, "a", pem, "p" * 96, "w" * 96, 1 << 20)
    assert "fx collaborator start -n a" in str(refused.value.fix)
    assert path.read_bytes() == held
    running.close()
    SiteRecord(path, sign, "a", pem, "p" * 96, "w" * 96, 1 << 20).close()
    assert [e["kind"] for e in rows(path)] == ["start", "stop", "seal", "restart", "stop", "seal"]



def test_without_the_blake3_package_a_site_does_not_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The record hashes each result the aggregator acknowledged: a missing blake3 is one message
    as the site starts (no record begun), not a stop after its first result went in unrecorded."""
    cert_dir = tmp_path / "cert"
    make_federation_pki(cert_dir, "localhost", ["a"])
    layout = CertLayout(cert_dir)
    sign = signer_for(load_private_key(layout.collaborator_key("a")))
    path = tmp_path / "logs" / "audit-a.jsonl"
    monkeypatch.setitem(sys.modules, "blake3", None)  # as if it were not installed
    with pytest.raises(AccordError, match="needs the blake3 package"):
        SiteRecord(path, sign, "a", layout.collaborator_cert("a").read_bytes(), "p" * 96, "w" * 96, 1 << 20)
    assert not path.exists()


def test_a_seal_flushed_on_a_thread_is_waited_for_by_the_next_seal_and_by_close(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A site's sent-result seal does not wait for the disk; what comes after it does, and a failed flush is not lost."""
    import os
    import threading

    from accord.audit import chain as chain_module

    gate, flushed = threading.Event(), []
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        gate.wait(10)
        real_fsync(fd)
        flushed.append(fd)

    monkeypatch.setattr(chain_module.os, "fsync", slow_fsync)
    path = tmp_path / "audit.jsonl"
    chain = ChainWriter(path, lambda data: b"sig")
    chain.append("sent", round=1)
    chain.seal(wait=False)  # returns while the flush waits on the gate
    assert flushed == [] and rows(path)[-1]["kind"] == "seal"
    threading.Timer(0.2, gate.set).start()
    chain.append("sent", round=2)
    chain.seal(wait=False)  # waits for the first flush before sealing again
    assert len(flushed) >= 1
    chain.close()  # waits for the second
    assert len(flushed) == 2

    def failing_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(chain_module.os, "fsync", failing_fsync)
    again = ChainWriter(path, lambda data: b"sig")
    again.append("sent", round=3)
    again.seal(wait=False)
    with pytest.raises(OSError, match="Input/output"):
        again.close()  # the flush's error, and the file closed all the same
    ChainWriter(path, lambda data: b"sig").close()  # its lock was released
