"""The CA's records: every certificate issued (index.jsonl) and every one revoked (revoked.jsonl)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from accord.errors import PKIError
from accord.pki.layout import CA_FIX, LEAF_KINDS, CertLayout

log = logging.getLogger("accord.pki")

def utc_now() -> dt.datetime:
    """The current time, timezone-aware UTC, to the second."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def iso(moment: dt.datetime) -> str:
    """ISO 8601 UTC text of ``moment`` (``2025-01-31T12:00:00Z``)."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def serial_hex(serial: int) -> str:
    """A certificate serial number as lowercase hex without prefix."""
    return format(serial, "x")


def parse_serial(text: str) -> int | None:
    """A serial from hex text (``0x`` prefix and ``:`` separators allowed), or None."""
    cleaned = text.strip().lower().replace(":", "")
    cleaned = cleaned[2:] if cleaned.startswith("0x") else cleaned
    try:
        return int(cleaned, 16) if cleaned else None
    except ValueError:
        return None


def cert_fingerprint(cert: x509.Certificate) -> str:
    """SHA-384 hex of the certificate's DER."""
    return cert.fingerprint(hashes.SHA384()).hex()


def _append(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line in a single write (O_APPEND keeps concurrent lines whole)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, sort_keys=True) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def _read(path: Path) -> list[dict[str, Any]]:
    """Every record of a JSON-lines file; an absent file has none."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise PKIError(f"CA record {path} cannot be read: {exc.strerror or exc}", CA_FIX) from None
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            raise PKIError(f"CA record {path} line {number} is not valid JSON", "repair or restore the file") from None
    return records


def record_issued(layout: CertLayout, cert: x509.Certificate, kind: str, subject: str) -> dict[str, Any]:
    """Append ``cert`` to the index of issued certificates; returns the record."""
    record = {
        "serial": serial_hex(cert.serial_number),
        "subject": subject,
        "kind": kind,
        "not_before": iso(cert.not_valid_before_utc),
        "not_after": iso(cert.not_valid_after_utc),
        "issued_at": iso(utc_now()),
        "fingerprint_sha384": cert_fingerprint(cert),
    }
    _append(layout.index, record)
    return record


def issued(cert_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every record of the index of issued certificates, oldest first."""
    return _read(CertLayout(cert_dir).index)


def issued_with_status(cert_dir: str | os.PathLike[str], now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """The index of issued certificates, each record with ``status``: valid, expired or revoked."""
    revoked = revoked_serials(cert_dir)
    moment = iso(now or utc_now())
    listed = []
    for record in issued(cert_dir):
        if parse_serial(str(record.get("serial", ""))) in revoked:
            status = "revoked"
        else:
            status = "expired" if str(record.get("not_after", "")) < moment else "valid"
        listed.append({**record, "status": status})
    return listed


def revoked_records(cert_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every record of ca/revoked.jsonl (serial, subject, revoked_at, reason), oldest first."""
    return _read(CertLayout(cert_dir).revoked)


def revoked_serials(cert_dir: str | os.PathLike[str]) -> set[int]:
    """Serial numbers of every revoked certificate (empty when nothing was revoked)."""
    serials = set()
    for record in revoked_records(cert_dir):
        value = parse_serial(str(record.get("serial", "")))
        if value is not None:
            serials.add(value)
    return serials


def revoke(cert_dir: str | os.PathLike[str], serial_or_name: str, reason: str = "") -> str:
    """Revoke a leaf certificate by hex serial, or every leaf issued to a subject CN; returns what."""
    layout = CertLayout(cert_dir)
    records = [r for r in issued(cert_dir) if r.get("kind") in LEAF_KINDS]
    wanted = parse_serial(serial_or_name)
    targets = [r for r in records if wanted is not None and parse_serial(r["serial"]) == wanted]
    if not targets:
        targets = [r for r in records if r.get("subject") == serial_or_name]
    if not targets:
        raise PKIError(
            f"no aggregator or collaborator certificate with serial or name {serial_or_name!r} "
            f"in {layout.index}",
            "give a serial or subject name listed in the CA's index.jsonl",
        )
    already = revoked_serials(cert_dir)
    fresh = [r for r in targets if parse_serial(r["serial"]) not in already]
    now = iso(utc_now())
    for record in fresh:
        _append(
            layout.revoked,
            {"serial": record["serial"], "subject": record["subject"], "revoked_at": now, "reason": reason},
        )
    if not fresh:
        return f"already revoked: {', '.join(r['serial'] for r in targets)}"
    listed = ", ".join(f"{r['subject']} ({r['serial']})" for r in fresh)
    return f"revoked {len(fresh)} certificate(s): {listed}"



class RevocationWatch:
    """``watch()`` -> the revoked serials of ``cert_dir``, re-read only when revoked.jsonl changes.

    Cheap enough to call on every RPC (one ``stat``). Thread-safe. If the file becomes
    unreadable, the last good set is kept (revocations already seen stay in force) and
    the error is logged once per version of the file.
    """

    def __init__(self, cert_dir: str | os.PathLike[str]) -> None:
        self._cert_dir = Path(cert_dir)
        self._path = CertLayout(cert_dir).revoked
        self._lock = threading.Lock()
        self._version: tuple[int, int, int] | None = None
        self._serials: frozenset[int] = frozenset()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = self._path.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def __call__(self) -> frozenset[int]:
        with self._lock:
            version = self._stat()
            if version is None:
                if self._version is not None:
                    log.error("revocation list %s disappeared; keeping the %d serials known", self._path, len(self._serials))
            elif version != self._version:
                self._version = version
                try:
                    self._serials = frozenset(revoked_serials(self._cert_dir))
                except PKIError as exc:
                    log.error("revocation list not reloaded, keeping the %d serials known: %s", len(self._serials), exc)
            return self._serials
