"""The audit chain's writer on its own: a cut-short last line dropped, the chain going on from
the entry before, and the journal's replay chained once (marked) or left out."""

from __future__ import annotations

import json
from pathlib import Path

from accord.audit.chain import GENESIS, ChainWriter, entry_hash
from accord.audit.trail import AuditTrail
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
    again.result(first, replay=True)
    again.result(lost, replay=True)
    again.close()
    results = [e for e in rows(path) if e["kind"] == "result"]
    assert [(e["task"], e.get("replay", False)) for e in results] == [("train", False), ("validate", True)]
    assert [e["kind"] for e in rows(path)] == ["start", "result", "stop", "seal", "restart", "result", "stop", "seal"]
