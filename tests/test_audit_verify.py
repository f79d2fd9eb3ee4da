"""``fx audit verify`` against crafted chains, signed with a real federation's keys: a chain cut
back to a seal says where it ended and its head; a line not written as its canonical bytes, a
duplicate key, NaN, an out-of-range time or a deep nesting is one line (exit 2), never a
traceback; a missing CA chain is named as such; a restart under another subject, or an entry
signed after its certificate's revocation, or anything but a start after a sealed stop, is refused."""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path

import pytest

from accord.audit.chain import ChainWriter
from accord.audit.trail import AuditTrail
from accord.cli.main import main
from accord.messages import TaskResult
from accord.pki import make_federation_pki
from accord.pki.ca import certify
from accord.pki.crl import write_crl
from accord.pki.keys import load_pem_cert, load_private_key
from accord.pki.layout import CertLayout
from accord.pki.records import revoke
from accord.pki.signatures import signer_for

ROUNDS = 3


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    make_federation_pki(tmp_path / "cert", "localhost", ["a"])
    return tmp_path


def trail_path(ws: Path) -> Path:
    return ws / "logs" / "audit.jsonl"


def run_trail(ws: Path, resumed: bool = False, fqdn: str = "localhost", rounds: int = ROUNDS, serial: str = "ab") -> None:
    """A trail of ``rounds`` rounds (each sealed at its close, site a's result of each with a bare
    SHA-256 hex digest, as written before the digest named its algorithm, over certificate
    ``serial``) and a clean stop, signed by ``fqdn``'s key."""
    layout = CertLayout(ws / "cert")
    sign = signer_for(load_private_key(layout.aggregator_key(fqdn)))
    trail = AuditTrail(trail_path(ws), sign, layout.aggregator_cert(fqdn).read_bytes())
    trail.begin(resumed, "p" * 96, "w" * 96)
    trail.model(0, "00" * 32)
    for r in range(rounds):
        trail.result(TaskResult("a", r, "train", 10, {}, update_digest=f"{r + 1:064x}", sender_serial=serial))
        trail.model(r + 1, f"{r + 11:064x}")
        trail.seal()
    trail.close()


def verify(capsys: pytest.CaptureFixture[str], ws: Path) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["audit", "verify", "-w", str(ws)])
    out = capsys.readouterr()
    return code, out.out + out.err


def lines(ws: Path) -> list[bytes]:
    return trail_path(ws).read_bytes().splitlines()


def rewrite(ws: Path, rows: list[bytes]) -> None:
    trail_path(ws).write_bytes(b"".join(row + b"\n" for row in rows))


def test_a_chain_cut_back_to_a_seal_says_where_it_ended_and_its_head(ws: Path, capsys) -> None:
    run_trail(ws)
    whole = lines(ws)
    assert json.loads(whole[-2])["kind"] == "stop" and json.loads(whole[-1])["kind"] == "seal"
    code, out = verify(capsys, ws)
    head = f"head seal seq {len(whole) - 1} sha256 {hashlib.sha256(whole[-1]).hexdigest()}"
    assert code == 0 and "ends at a stop" in out and head in out, out
    first_seal = next(i for i, line in enumerate(whole) if json.loads(line)["kind"] == "seal")
    rewrite(ws, whole[: first_seal + 1])  # cut back to round 0's seal: every link and signature holds
    code, out = verify(capsys, ws)
    assert code == 0 and "ends mid-federation" in out and f"head seal seq {first_seal} " in out, out


def test_a_trail_sealed_with_a_p384_key_verifies(tmp_path: Path, capsys) -> None:
    """Federations made before P-256 became the default have P-384 keys: their seals still verify."""
    make_federation_pki(tmp_path / "cert", "localhost", ["a"], "ec-p384")
    run_trail(tmp_path)
    code, out = verify(capsys, tmp_path)
    assert code == 0 and "ends at a stop" in out, out
    rewrite(tmp_path, [line.replace(b'"round":1', b'"round":7') for line in lines(tmp_path)])
    code, out = verify(capsys, tmp_path)
    assert code != 0, out


def _respaced(line: bytes) -> bytes:
    return json.dumps(json.loads(line), indent=None, separators=(", ", ": ")).encode()


def _duplicate_count(line: bytes) -> bytes:
    return line.replace(b'"round"', b'"sample_count":999999,"round"', 1)


@pytest.mark.parametrize("change", [_respaced, _duplicate_count], ids=["respaced", "duplicate-key"])
def test_a_line_not_as_written_is_refused(ws: Path, capsys, change) -> None:
    """The same entry re-parsed (other spacing) or a duplicate key before the real one: the bytes differ, refused."""
    run_trail(ws)
    rows = lines(ws)
    at = next(i for i, line in enumerate(rows) if json.loads(line)["kind"] == "result")
    rows[at] = change(rows[at])
    rewrite(ws, rows)
    code, out = verify(capsys, ws)
    assert code == 2 and f"line {at + 1}: not an audit entry as written" in out, out
    assert out.count("\n") == 1, out


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (b"NaN", "NaN is not JSON"),
        (b"Infinity", "Infinity is not JSON"),
        (b"1e+300", "is not a Unix time"),
        (b"1" + b"0" * 400, "is not a Unix time"),
        (b"-1", "is not a Unix time"),
    ],
    ids=["nan", "infinity", "1e300", "huge-int", "negative"],
)
def test_a_crafted_time_is_one_line(ws: Path, capsys, value: bytes, why: str) -> None:
    run_trail(ws)
    rows = lines(ws)
    rows[0] = re.sub(rb'"at":[0-9.]+', b'"at":' + value, rows[0])
    rewrite(ws, rows)
    code, out = verify(capsys, ws)
    assert code == 2 and "line 1" in out and why in out, out
    assert out.count("\n") == 1, out


def test_a_deeply_nested_line_is_one_line(ws: Path, capsys) -> None:
    run_trail(ws)
    rewrite(ws, [b"[" * 100_000, *lines(ws)])
    code, out = verify(capsys, ws)
    assert code == 2 and "line 1: not an audit entry as written (nested too deep)" in out, out
    assert out.count("\n") == 1, out


def test_a_missing_ca_chain_is_named_with_its_fix(ws: Path, capsys) -> None:
    run_trail(ws)
    CertLayout(ws / "cert").chain.unlink()
    code, out = verify(capsys, ws)
    assert code == 2 and "cert_chain.crt does not exist" in out and "-w" in out and "--plan" in out, out
    assert "line 1" not in out and "tamper" not in out and out.count("\n") == 1, out


def test_a_restart_under_another_subject_is_refused(ws: Path, capsys) -> None:
    """Another non-collaborator certificate of the same CA cannot take the chain over at a restart."""
    certify(ws / "cert", "aggregator", "other.example")
    run_trail(ws)
    run_trail(ws, resumed=True, fqdn="other.example")
    restart = next(i for i, line in enumerate(lines(ws)) if json.loads(line)["kind"] == "restart")
    code, out = verify(capsys, ws)
    assert code == 2 and f"line {restart + 1} (seq {restart}, restart)" in out and "other.example" in out, out
    assert "whose chain it goes on" in out, out


def test_an_entry_signed_after_its_certificates_revocation_is_refused(ws: Path, capsys) -> None:
    """The CA's crl.pem is consulted at each entry's time: a chain written before the revocation
    still verifies, entries written after it do not."""
    run_trail(ws)
    serial = format(load_pem_cert(CertLayout(ws / "cert").aggregator_cert("localhost")).serial_number, "x")
    revoke(ws / "cert", serial, "key lost")
    write_crl(ws / "cert")
    code, out = verify(capsys, ws)
    assert code == 0, out
    before = len(lines(ws))
    time.sleep(1.1)  # past the revocation's second (a CRL's times are whole seconds)
    run_trail(ws, resumed=True)
    code, out = verify(capsys, ws)
    assert code == 2 and f"line {before + 1} (seq {before}, restart)" in out and f"(serial {serial}) was revoked" in out, out


def test_entries_after_a_sealed_stop_other_than_a_start_are_refused(ws: Path, capsys) -> None:
    """After a sealed stop the writer closed: a result chained and sealed there (by the key's
    holder) is named; a kill between a stop and its seal, then a restart, still verifies."""
    run_trail(ws, rounds=1)
    layout = CertLayout(ws / "cert")
    sign = signer_for(load_private_key(layout.aggregator_key("localhost")))
    rows = lines(ws)
    cut = ChainWriter(trail_path(ws), sign)
    cut.append("result", round=0, collaborator="a", serial="ab", task="train", update_digest="99" * 32, sample_count=5)
    cut.seal()
    cut.close()
    code, out = verify(capsys, ws)
    assert code == 2 and f"line {len(rows) + 1} (seq {len(rows)}, result): follows a sealed stop" in out, out
    rewrite(ws, rows[:-1])  # killed after the stop, before its seal
    run_trail(ws, resumed=True)
    code, out = verify(capsys, ws)
    assert code == 0 and "ends at a stop" in out, out


def site_record(ws: Path, digests: dict[int, str]) -> Path:
    """Site a's record of the trail's rounds (``run_trail``): each model received, and each round's
    train result sent with the digest ``digests`` gives it, signed with site a's key."""
    from accord.audit.trail import identity

    layout = CertLayout(ws / "cert")
    path = ws / "logs" / "audit-a.jsonl"
    path.unlink(missing_ok=True)
    chain = ChainWriter(path, signer_for(load_private_key(layout.collaborator_key("a"))))
    chain.append("start", site="a", **identity(layout.collaborator_cert("a").read_bytes(), "p" * 96, "w" * 96))
    for r, digest in digests.items():
        chain.append("received", round=r, digest="00" * 32 if r == 0 else f"{r + 10:064x}", plan_hash="p" * 96)
        chain.append("sent", round=r, task="train", update_digest=digest, sample_count=10)
        chain.seal()
    chain.close()
    return path


def test_a_trail_and_record_of_bare_sha256_digests_still_cross_check(ws: Path, capsys) -> None:
    """Records written before the update digest named its algorithm (bare SHA-256 hex) verify as before."""
    run_trail(ws, serial=format(load_pem_cert(CertLayout(ws / "cert").collaborator_cert("a")).serial_number, "x"))
    record = site_record(ws, {r: f"{r + 1:064x}" for r in range(ROUNDS)})
    code, out = verify_site(capsys, ws, record)
    assert code == 0 and out.count("OK ") == 2, out
    record = site_record(ws, {r: f"{r + 2:064x}" for r in range(ROUNDS)})  # a digest the trail does not hold: still found out
    code, out = verify_site(capsys, ws, record)
    assert code == 2 and "digest sha256 0000000000000000..., 10 samples) is not in the aggregator's chain" in out, out


def test_digests_of_two_algorithms_are_named_as_such(ws: Path, capsys) -> None:
    """A site that hashed with BLAKE3 against a trail of SHA-256 digests: the message names both algorithms."""
    run_trail(ws)
    record = site_record(ws, {0: "blake3:" + "11" * 32})
    code, out = verify_site(capsys, ws, record)
    assert code == 2 and "digest blake3 1111111111111111..., 10 samples) is not in the aggregator's chain" in out, out
    assert "which holds line 3: digest sha256 0000000000000000..., 10 samples" in out, out
    assert "(fix: the site hashed its update with blake3, the aggregator with sha256: the two ran different Accord versions" in out, out


@pytest.mark.parametrize(
    "forged",
    ["md5:" + "11" * 32, "blake3:", "BLAKE3:" + "11" * 32, "blake3:" + "11" * 31, "11" * 31, " " + "11" * 32, ""],
    ids=["another-prefix", "a-prefix-without-hex", "upper-case", "short-hex", "short-bare", "whitespace", "empty"],
)
def test_a_digest_no_accord_writes_is_not_excused_as_another_version(ws: Path, capsys, forged: str) -> None:
    """A site record whose digest is of no form Accord writes (``blake3:`` and 64 lower-case hex,
    or 64 bare for SHA-256) is refused as not as written, not explained away as a version mismatch."""
    run_trail(ws)
    record = site_record(ws, {0: forged})
    code, out = verify_site(capsys, ws, record)
    assert code == 2 and "is not in the aggregator's chain" in out, out
    assert "different Accord versions" not in out and "not an update digest Accord writes" in out, out
    assert "(fix: an audit file must stay as it was written" in out, out


def verify_site(capsys: pytest.CaptureFixture[str], ws: Path, record: Path) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["audit", "verify", "-w", str(ws), "--site", str(record)])
    out = capsys.readouterr()
    return code, out.out + out.err
