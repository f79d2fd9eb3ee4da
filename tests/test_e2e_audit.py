"""The signed audit trail with real processes over mutual TLS: a federation leaves a chain that
``fx audit verify`` checks and each site's record cross-checks; one edited, deleted, reordered
or re-signed entry is named; a kill -9 of the aggregator mid-round leaves a chain that still
verifies after the restart."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
from conftest import FAST
from test_e2e_faults import Sites, saved_state, slow_workspace, wait_for

from accord.audit.chain import canonical, entry_hash, signed_bytes
from accord.cli.main import main
from accord.experiment.local import prepare_workspace, run_processes
from accord.pki.keys import load_pem_cert, load_private_key
from accord.pki.layout import CertLayout
from accord.pki.signatures import signer_for

pytestmark = pytest.mark.e2e

SITES = ("collaborator1", "collaborator2")
ROUNDS = 2


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace after a real federation of 2 sites, 2 rounds (and the final validation)."""
    plan = prepare_workspace(tmp_path_factory.mktemp("audit") / "ws", len(SITES), ROUNDS, overrides=FAST)
    report = run_processes(plan, timeout=300)
    assert report.ok, report.returncodes
    return plan.workspace


def verify(capsys: pytest.CaptureFixture[str], workspace: Path, *records: Path, trail: Path | None = None) -> tuple[int, str]:
    """``fx audit verify`` on ``workspace``: (exit code, what it printed on stdout and stderr)."""
    capsys.readouterr()
    argv = ["audit", "verify", "-w", str(workspace), *(a for r in records for a in ("--site", str(r)))]
    code = main([*argv, *(["--trail", str(trail)] if trail else [])])
    out = capsys.readouterr()
    return code, out.out + out.err


def entries(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def write(path: Path, rows: list[dict]) -> None:
    path.write_bytes(b"".join(canonical(row) + b"\n" for row in rows))


def record_of(workspace: Path, name: str) -> Path:
    return workspace / "logs" / f"audit-{name}.jsonl"


def test_a_federation_leaves_a_chain_that_verifies_and_each_site_record_cross_checks(federation: Path, capsys) -> None:
    trail = entries(federation / "logs" / "audit.jsonl")
    kinds = [e["kind"] for e in trail]
    assert kinds[0] == "start" and kinds[-1] == "seal"
    assert [e["round"] for e in trail if e["kind"] == "model"] == list(range(ROUNDS + 1))  # the final validation's too
    layout = CertLayout(federation / "cert")
    for name in SITES:
        serial = format(load_pem_cert(layout.collaborator_cert(name)).serial_number, "x")
        results = [e for e in trail if e["kind"] == "result" and e["collaborator"] == name]
        assert {e["serial"] for e in results} == {serial}
        assert {e["round"] for e in results} == set(range(ROUNDS + 1))
        assert all(re.fullmatch("blake3:[0-9a-f]{64}", e["update_digest"]) for e in results)
        sent = [e for e in entries(record_of(federation, name)) if e["kind"] == "sent"]
        assert sorted((e["round"], e["task"], e["update_digest"]) for e in sent) == sorted(
            (e["round"], e["task"], e["update_digest"]) for e in results
        )
    assert kinds.count("seal") >= ROUNDS + 1  # at each close and at stop
    assert kinds[-2] == "stop"  # a clean shutdown, sealed
    code, out = verify(capsys, federation, *(record_of(federation, n) for n in SITES))
    assert code == 0, out
    assert out.count("OK ") == 3 and out.count("ends at a stop") == 3 and out.count(" head seal seq ") == 3, out
    assert "ends at a stop (the federation finished), head seal seq " in out, out  # the aggregator's trail
    assert f"head seal seq {len(trail) - 1} sha256 {entry_hash(trail[-1])}" in out, out


def tampered(tmp_path: Path, source: Path, change) -> Path:
    rows = entries(source)
    change(rows)
    path = tmp_path / source.name
    write(path, rows)
    return path


def first(rows: list[dict], kind: str, nth: int = 0) -> int:
    return [i for i, e in enumerate(rows) if e["kind"] == kind][nth]


def _edit_digest(rows: list[dict]) -> None:
    rows[first(rows, "result", 1)]["update_digest"] = "0" * 64


def _edit_count(rows: list[dict]) -> None:
    rows[first(rows, "result", 2)]["sample_count"] += 1


def _delete(rows: list[dict]) -> None:
    del rows[first(rows, "result", 1)]


def _reorder(rows: list[dict]) -> None:
    i = first(rows, "result", 1)
    rows[i], rows[i + 1] = rows[i + 1], rows[i]


def _swap_signatures(rows: list[dict]) -> None:
    a, b = first(rows, "seal", 0), first(rows, "seal", 1)
    rows[a]["signature"], rows[b]["signature"] = rows[b]["signature"], rows[a]["signature"]


@pytest.mark.parametrize(
    ("change", "named", "why"),
    [
        (_edit_digest, ("result", 1), "it was changed"),
        (_edit_count, ("result", 2), "it was changed"),
        (_delete, ("result", 2), "an entry before it was deleted"),
        (_reorder, ("result", 2), "entries were reordered"),
        (_swap_signatures, ("seal", 0), "its signature does not verify"),
    ],
    ids=["digest", "sample-count", "deleted", "reordered", "signature"],
)
def test_one_changed_entry_is_named(federation: Path, tmp_path: Path, capsys, change, named, why) -> None:
    source = federation / "logs" / "audit.jsonl"
    rows = entries(source)
    path = tampered(tmp_path, source, change)
    # the entry named: its line and seq in the original order (a deleted or reordered one: the one now out of place)
    kind, nth = named
    target = rows[first(rows, kind, nth)]
    changed_rows = entries(path)
    line = next(i for i, e in enumerate(changed_rows, 1) if e["seq"] == target["seq"])
    code, out = verify(capsys, federation, trail=path)
    assert code == 2, out
    assert f"{path} line {line} (seq {target['seq']}, {kind})" in out and why in out, out
    assert out.count("\n") == 1, out  # one line


def test_a_cut_short_last_line_is_named_unsealed(federation: Path, tmp_path: Path, capsys) -> None:
    source = federation / "logs" / "audit.jsonl"
    path = tmp_path / "audit.jsonl"
    rows = entries(source)[:-1]  # the last seal gone: what a kill -9 before the stop's seal leaves
    write(path, rows)
    code, out = verify(capsys, federation, trail=path)
    last_seal = max(i for i, e in enumerate(rows) if e["kind"] == "seal")
    assert code == 2 and f"line {last_seal + 2} (seq {last_seal + 1}" in out and "not sealed" in out, out


def resigned(rows: list[dict], at: int, sign) -> list[dict]:
    """``rows`` chained and sealed again from ``at`` on with ``sign``, as their signer could."""
    for i in range(at, len(rows)):
        rows[i]["prev"] = entry_hash(rows[i - 1])
        if rows[i]["kind"] == "seal":
            rows[i]["signature"] = base64.b64encode(sign(signed_bytes(rows[i]))).decode()
    return rows


def test_a_forged_site_record_is_named(federation: Path, tmp_path: Path, capsys) -> None:
    """An edited "sent" digest breaks the site's own chain; the same edit chained and signed again
    with the site's own key (a lying site) passes its chain but not the cross-check."""
    source = record_of(federation, "collaborator1")
    rows = entries(source)
    at = first(rows, "sent", 1)
    edited = tampered(tmp_path, source, lambda r: r[at].update(update_digest="ab" * 32))
    code, out = verify(capsys, federation, edited)
    assert code == 2 and f"{edited} line {at + 1} (seq {at}, sent): it was changed" in out, out

    sign = signer_for(load_private_key(CertLayout(federation / "cert").collaborator_key("collaborator1")))
    rows[at]["update_digest"] = "ab" * 32
    forged = tmp_path / "forged.jsonl"
    write(forged, resigned(rows, at, sign))
    code, out = verify(capsys, federation, forged)
    assert code == 2, out
    assert f"{forged} line {at + 1} (seq {at}, sent)" in out and "is not in the aggregator's chain" in out, out
    # a record received model digest changed, re-signed: named too
    rows = entries(source)
    at = first(rows, "received", 1)
    rows[at]["digest"] = "cd" * 32
    write(forged, resigned(rows, at, sign))
    code, out = verify(capsys, federation, forged)
    assert code == 2 and f"line {at + 1} (seq {at}, received)" in out and "holds" in out, out


def test_the_aggregators_chain_passed_as_a_site_record_is_refused(federation: Path, tmp_path: Path, capsys) -> None:
    """The aggregator's own chain passed as a site's record is refused at its start: its
    certificate is not a site's."""
    code, out = verify(capsys, federation, federation / "logs" / "audit.jsonl")
    assert code == 2 and "line 1 (seq 0, start)" in out and "not the collaborator certificate" in out, out


def test_the_chain_survives_a_kill_of_the_aggregator_mid_round(tmp_path: Path, capsys) -> None:
    """kill -9 the aggregator in round 1 once results are journaled, cut its audit log's last
    line short (a kill mid-write), start it again: the chain goes on, holds each result once
    (a replayed one at most marked), and verifies with both sites' records."""
    plan = slow_workspace(tmp_path / "ws", 2, 3)
    sites = Sites(plan)
    trail = plan.workspace / "logs" / "audit.jsonl"
    try:
        sites.start("aggregator")
        sites.start("collaborator1", SLOW_SECONDS="1.0")
        sites.start("collaborator2")
        wait_for(lambda: saved_state(plan).get("round") == 1 and bool(saved_state(plan).get("results")), what="results of round 1")
        sites.kill("aggregator")
        data = trail.read_bytes()
        trail.write_bytes(data[:-10])  # the last entry cut short
        sites.start("aggregator")
        codes = sites.wait_all()
    finally:
        sites.close()
    assert codes == {"aggregator": 0, "collaborator1": 0, "collaborator2": 0}, sites.log("aggregator", 2)
    assert "cut short" in sites.log("aggregator", 2)
    rows = entries(trail)
    assert [e["kind"] for e in rows].count("restart") == 1
    results = [(e["round"], e["collaborator"], e["task"], e["update_digest"]) for e in rows if e["kind"] == "result"]
    assert len(results) == len(set(results))
    code, out = verify(capsys, plan.workspace, *(record_of(plan.workspace, n) for n in SITES))
    assert code == 0, out


def test_compressed_updates_cross_check(tmp_path: Path, capsys) -> None:
    """With topk+q8+zstd uploads, the digests of the encoded chunks a site sent are those the
    aggregator read."""
    pipeline = {
        "compression_pipeline.settings.upload": ["topk", "q8", "zstd"],
        "compression_pipeline.settings.download": ["zstd"],
        "compression_pipeline.settings.topk_ratio": 0.01,
    }
    plan = prepare_workspace(tmp_path / "ws", 2, 1, overrides={**FAST, **pipeline})
    report = run_processes(plan, timeout=300)
    assert report.ok, report.returncodes
    sent = [e for e in entries(record_of(plan.workspace, "collaborator1")) if e["kind"] == "sent" and e["task"] == "train"]
    assert sent
    code, out = verify(capsys, plan.workspace, *(record_of(plan.workspace, n) for n in SITES))
    assert code == 0, out
