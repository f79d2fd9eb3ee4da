"""``fx audit verify``: check an audit chain (chain.py) and cross-check a site's record against
the aggregator's (docs/audit.md). The first thing wrong ends it, as an AuditBroken naming the
file, the line, the entry's seq and kind, and what is wrong."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from accord.audit.chain import GENESIS, SEAL, STOP, parse_line, read_lines, signed_bytes
from accord.errors import AccordError, PKIError
from accord.tensors.digest import update_digest_algorithm

FIX = "an audit file must stay as it was written: compare it with a copy kept elsewhere (a site's record, a published seal)"

#: the fields each kind of entry must have, and their types
FIELDS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "start": {"certificate": str, "serial": str, "plan_hash": str, "workspace_hash": str},
    "result": {"round": int, "collaborator": str, "serial": str, "task": str, "update_digest": str, "sample_count": int},
    "model": {"round": int, "digest": str},
    "received": {"round": int, "digest": str, "plan_hash": str},
    "sent": {"round": int, "task": str, "update_digest": str, "sample_count": int},
    SEAL: {"signature": str},
    STOP: {},
}
FIELDS["restart"] = FIELDS["start"]
COMMON: dict[str, type | tuple[type, ...]] = {"seq": int, "kind": str, "prev": str, "at": (int, float)}
#: the last Unix time an entry's ``at`` may hold (the end of year 9999)
MAX_AT = 253402300799


class AuditBroken(AccordError):
    """An audit file that does not verify: the first bad entry and what is wrong with it."""


@dataclass
class Entry:
    line: int
    data: dict[str, Any]
    #: SHA-256 (hex) of the line's bytes: the next entry's ``prev``
    digest: str

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def named(self, path: Path) -> str:
        return f"{path} line {self.line} (seq {self.data.get('seq')}, {self.data.get('kind')})"


@dataclass
class Chain:
    """A chain that verified: its entries, and whose it is (``site``: None for the aggregator's)."""

    path: Path
    entries: list[Entry]
    site: str | None
    seals: int = 0
    serials: set[str] = field(default_factory=set)

    @property
    def stopped(self) -> bool:
        """Whether the chain ends at a clean shutdown (a sealed ``stop``), not mid-federation."""
        return len(self.entries) > 1 and self.entries[-2]["kind"] == STOP

    def head(self) -> str:
        """The head seal's seq and hash, and where the chain ended: to compare with a copy kept elsewhere."""
        last = self.entries[-1]
        if self.stopped:
            finished = self.entries[-2].data.get("finished")
            where = "at a stop" + (" (the federation finished)" if finished is True else " (before the federation finished)" if finished is False else "")
        else:
            where = "mid-federation (no stop after its last seal)"
        return f"ends {where}, head seal seq {last['seq']} sha256 {last.digest}"

    def of_kind(self, *kinds: str) -> list[Entry]:
        return [e for e in self.entries if e["kind"] in kinds]


def read_chain(path: Path, chain_path: Path, site: bool, crl_path: Path | None = None) -> Chain:
    """``path``'s chain checked whole: each line an entry of a known kind with its fields,
    written as its canonical bytes, seq 0, 1, ..., each ``prev`` the previous line's hash, each
    seal's signature that of the certificate the last start or restart holds (issued by the
    federation's CA in ``chain_path``, of the subject of the chain's first start: the
    aggregator's, or a collaborator's whose name is the record's ``site``; not revoked at the
    entry's time by the CA's revocation list ``crl_path``, if present), a ``stop`` followed
    by its seal then a start or restart only, and the last entry a seal. AuditBroken otherwise."""
    if not chain_path.is_file():
        raise AccordError(
            f"the federation's CA chain {chain_path} does not exist: the audit files cannot be checked without it",
            "point -w at the workspace (or --plan at its plan, whose network cert_dir holds cert_chain.crt)",
        )
    revoked = _revocations(crl_path, chain_path)
    entries = _parse(path)
    if not entries:
        raise AuditBroken(f"audit file {path} holds no entry", FIX)
    chain = Chain(path, entries, None)
    signer: x509.Certificate | None = None
    subject: x509.Name | None = None
    for index, entry in enumerate(entries):
        _check_link(path, entries, index)
        kind = entry["kind"]
        _check_after_stop(path, entries, index)
        if kind in ("start", "restart"):
            signer = _signer(path, entry, chain_path, site)
            if subject is None:
                subject = signer.subject
            elif signer.subject != subject:
                raise AuditBroken(
                    f"{entry.named(path)}: its certificate is of {signer.subject.rfc4514_string()!r}, "
                    f"not {subject.rfc4514_string()!r} whose chain it goes on",
                    FIX,
                )
            chain.serials.add(entry["serial"])
            if site:
                if chain.site not in (None, entry["site"]):
                    raise AuditBroken(f"{entry.named(path)}: names site {entry['site']!r}, the record's is {chain.site!r}", FIX)
                chain.site = entry["site"]
        elif signer is None:
            raise AuditBroken(f"{entry.named(path)}: comes before any start entry (which names the signer)", FIX)
        elif kind == SEAL:
            _check_seal(path, entry, signer)
            chain.seals += 1
        elif kind in (STOP, *(("received", "sent") if site else ("result", "model"))):
            pass
        else:
            raise AuditBroken(f"{entry.named(path)}: a {kind!r} entry has no place in {'a site' if site else 'the aggregator'}'s record", FIX)
        _check_revoked(path, entry, signer, revoked)
    last = entries[-1]
    if last["kind"] != SEAL:
        sealed = [i for i, e in enumerate(entries) if e["kind"] == SEAL]
        unsealed = entries[sealed[-1] + 1 if sealed else 0]
        raise AuditBroken(
            f"{unsealed.named(path)} and the entries after it are not sealed (no signature covers them): "
            "the writer stopped without sealing (killed, and not started again?), or they were appended since",
            "start the aggregator (or site) again, which seals the chain, then verify again; " + FIX,
        )
    return chain


def _parse(path: Path) -> list[Entry]:
    try:
        lines = list(read_lines(path))
    except OSError as exc:
        raise AccordError(f"audit file {path} cannot be read: {exc.strerror or exc}", "check the path") from None
    entries = []
    for number, line in lines:
        try:
            data = parse_line(line)
        except ValueError as exc:
            raise AuditBroken(f"{path} line {number}: not an audit entry as written ({exc})", FIX) from None
        entry = Entry(number, data, hashlib.sha256(line).hexdigest())
        kind = data.get("kind")
        if not isinstance(kind, str) or kind not in FIELDS:
            raise AuditBroken(f"{entry.named(path)}: unknown kind {kind!r}", FIX)
        site_field = {"site": str} if kind in ("start", "restart") and "site" in data else {}
        for name, types in {**COMMON, **FIELDS[kind], **site_field}.items():
            value = data.get(name)
            if not isinstance(value, types) or isinstance(value, bool):
                raise AuditBroken(f"{entry.named(path)}: field {name!r} is missing or of the wrong type", FIX)
        if not 0 <= data["at"] <= MAX_AT or not math.isfinite(data["at"]):
            raise AuditBroken(f"{entry.named(path)}: its time 'at' {data['at']!r} is not a Unix time (0..{MAX_AT})", FIX)
        entries.append(entry)
    return entries


def _check_link(path: Path, entries: Sequence[Entry], index: int) -> None:
    """Entry ``index``'s seq and prev; a changed entry is named: the one whose hash its
    successor does not hold, unless the successor's own hash is not what follows it either."""
    entry = entries[index]
    expected = 0 if index == 0 else entries[index - 1]["seq"] + 1
    if entry["seq"] != expected:
        raise AuditBroken(
            f"{entry.named(path)}: seq {expected} expected here: an entry before it was deleted, or entries were reordered", FIX
        )
    prev = GENESIS if index == 0 else entries[index - 1].digest
    if entry["prev"] == prev:
        return
    after = entries[index + 1] if index + 1 < len(entries) else None
    if index == 0 or after is None or after["prev"] != entry.digest:
        raise AuditBroken(f"{entry.named(path)}: it was changed (its prev does not chain to the entry before it)", FIX)
    changed = entries[index - 1]
    raise AuditBroken(f"{changed.named(path)}: it was changed (its hash is not the one line {entry.line} chains to)", FIX)


def _check_after_stop(path: Path, entries: Sequence[Entry], index: int) -> None:
    """A ``stop`` is followed by its seal (or, killed before it, by the next start or restart),
    and that seal by a start or restart only."""
    entry = entries[index]
    before = [e["kind"] for e in entries[max(0, index - 2) : index]]
    if before[-1:] == [STOP] and entry["kind"] not in (SEAL, "start", "restart"):
        raise AuditBroken(f"{entry.named(path)}: follows a stop entry, whose seal must come next", FIX)
    if before == [STOP, SEAL] and entry["kind"] not in ("start", "restart"):
        raise AuditBroken(f"{entry.named(path)}: follows a sealed stop, after which only a start or restart may come", FIX)


def _revocations(crl_path: Path | None, chain_path: Path) -> dict[int, dt.datetime]:
    """serial -> revocation time of the CA's revocation list at ``crl_path`` (none if absent)."""
    if crl_path is None or not crl_path.exists():
        return {}
    from accord.pki.crl import parse_crl

    try:
        crl = parse_crl(crl_path.read_bytes(), chain_path, str(crl_path))
    except OSError as exc:
        raise AccordError(f"revocation list {crl_path} cannot be read: {exc.strerror or exc}", "check its permissions") from None
    return {item.serial_number: item.revocation_date_utc for item in x509.load_pem_x509_crl(crl.pem)}


def _check_revoked(path: Path, entry: Entry, signer: x509.Certificate, revoked: dict[int, dt.datetime]) -> None:
    when = revoked.get(signer.serial_number)  # a CRL's times are whole seconds: an entry of that second passes
    if when is not None and int(entry["at"]) > when.timestamp():
        raise AuditBroken(
            f"{entry.named(path)}: its signer's certificate (serial {format(signer.serial_number, 'x')}) was revoked "
            f"at {when.isoformat()}, before this entry's time",
            FIX,
        )


def _signer(path: Path, entry: Entry, chain_path: Path, site: bool) -> x509.Certificate:
    """The certificate a start or restart entry holds, checked against the federation's CA."""
    from accord.pki.signatures import is_collaborator_certificate
    from accord.pki.verify import common_name, verify_peer_certificate

    when = dt.datetime.fromtimestamp(float(entry["at"]), dt.UTC)
    try:
        cert = verify_peer_certificate(entry["certificate"].encode("ascii", "replace"), chain_path, None, when)
    except PKIError as exc:
        raise AuditBroken(f"{entry.named(path)}: its certificate does not check out: {exc.message}", FIX) from None
    if format(cert.serial_number, "x") != entry["serial"]:
        raise AuditBroken(f"{entry.named(path)}: its serial {entry['serial']} is not its certificate's", FIX)
    if site:
        if "site" not in entry.data or not is_collaborator_certificate(cert) or common_name(cert) != entry["site"]:
            raise AuditBroken(f"{entry.named(path)}: its certificate is not the collaborator certificate of the site it names", FIX)
    elif is_collaborator_certificate(cert):
        raise AuditBroken(f"{entry.named(path)}: its certificate is a collaborator's, not the aggregator's", FIX)
    return cert


def _check_seal(path: Path, entry: Entry, signer: x509.Certificate) -> None:
    from accord.pki.signatures import signature_valid

    try:
        signature = base64.b64decode(entry["signature"], validate=True)
    except (binascii.Error, ValueError):
        signature = b""
    if not signature or not signature_valid(signer, signed_bytes(entry.data), signature):
        raise AuditBroken(f"{entry.named(path)}: its signature does not verify under the certificate of the chain's start", FIX)


def cross_check(record: Chain, trail: Chain) -> None:
    """Each model the site ``record`` received has the digest the aggregator's ``trail`` holds
    for its round, each result it sent is a result entry of the trail (round, site, task, update
    digest and sample count), from the site's certificate, and its plan hash is one the trail
    started with; AuditBroken naming the site's entry otherwise."""
    path, site = record.path, record.site
    plans = {e["plan_hash"] for e in trail.of_kind("start", "restart")}
    models: dict[int, list[str]] = {}
    for e in trail.of_kind("model"):
        models.setdefault(e["round"], []).append(e["digest"])
    results: dict[tuple[int, str], list[Entry]] = {}
    for e in trail.of_kind("result"):
        if e["collaborator"] == site:
            results.setdefault((e["round"], e["task"]), []).append(e)
    for entry in record.entries:
        kind = entry["kind"]
        if kind in ("start", "restart", "received") and entry["plan_hash"] not in plans:
            raise AuditBroken(f"{entry.named(path)}: plan hash {entry['plan_hash'][:16]}... is not one the aggregator's chain {trail.path} started with", FIX)
        if kind == "received" and entry["digest"] not in models.get(entry["round"], ()):
            held = ", ".join(d[:16] + "..." for d in models.get(entry["round"], ())) or "none"
            raise AuditBroken(
                f"{entry.named(path)}: the model of round {entry['round']} received has digest {entry['digest'][:16]}..., "
                f"the aggregator's chain {trail.path} holds {held}",
                FIX,
            )
        if kind == "sent":
            _check_sent(record, entry, results.get((entry["round"], entry["task"]), []), trail.path)


def _check_sent(record: Chain, entry: Entry, held: list[Entry], trail: Path) -> None:
    what = f"{entry.named(record.path)}: the {entry['task']} result of round {entry['round']}"
    same = [e for e in held if e["update_digest"] == entry["update_digest"] and e["sample_count"] == entry["sample_count"]]
    if not same:
        found = "; ".join(f"line {e.line}: digest {_shown(e['update_digest'])}, {e['sample_count']} samples" for e in held)
        raise AuditBroken(
            f"{what} (digest {_shown(entry['update_digest'])}, {entry['sample_count']} samples) is not in the aggregator's "
            f"chain {trail}" + (f", which holds {found}" if found else ", which holds no such result of this site"),
            _algorithm_fix(entry, held),
        )
    if not any(e["serial"] in record.serials for e in same):
        raise AuditBroken(f"{what}: the aggregator's chain {trail} line {same[0].line} names serial {same[0]['serial']}, not the site's certificate", FIX)


def _shown(digest: str) -> str:
    """An update digest cut for a message, its algorithm named (tensors/digest.py)."""
    algorithm = update_digest_algorithm(digest)
    if algorithm is None:
        return f"{digest[:24]!r}, not an update digest Accord writes"
    return f"{algorithm} {digest.rpartition(':')[2][:16]}..."


def _algorithm_fix(entry: Entry, held: list[Entry]) -> str:
    """FIX, or, when the site's digest and the aggregator's were made with different algorithms
    (each a digest Accord writes, else FIX), why they cannot match."""
    mine = update_digest_algorithm(entry["update_digest"])
    theirs = {algorithm for e in held if (algorithm := update_digest_algorithm(e["update_digest"])) is not None}
    if mine is None or not theirs or mine in theirs:
        return FIX
    return (
        f"the site hashed its update with {mine}, the aggregator with {', '.join(sorted(theirs))}: the two ran "
        "different Accord versions for this result, whose digests cannot agree; run one version at both ends"
    )
