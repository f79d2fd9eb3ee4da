"""The CA's certificate revocation list: a standard X.509 CRL signed by the signing CA.

The CA writes ``cert/crl.pem`` from ``ca/revoked.jsonl`` (``fx workspace revoke``; every
signed certificate package carries the current one). A site installs a CRL only if the
chain's signing CA signed it and it is not older than the one it holds (its CRL number),
and refuses an aggregator whose certificate serial it lists.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from accord.errors import PKIError
from accord.pki.ca import load_signing_ca
from accord.pki.keys import write_public_file
from accord.pki.layout import CertLayout
from accord.pki.records import iso, parse_serial, revoked_records, serial_hex, utc_now
from accord.pki.verify import CertificateRejected, signing_ca, verify_peer_certificate

log = logging.getLogger("accord.pki")

#: days until a CRL's nextUpdate; a site holding an older one warns (and still uses it)
CRL_DAYS = 30
MAX_CRL_BYTES = 1024 * 1024
_FIX = "ask the federation's CA operator for the current crl.pem (fx workspace revoke writes it)"


@dataclass(frozen=True)
class RevocationList:
    """A CRL that verified against the chain: its number, issue date and revoked serials."""

    number: int
    issued: dt.datetime
    next_update: dt.datetime | None
    serials: frozenset[int]
    pem: bytes


def _number(crl: x509.CertificateRevocationList) -> int:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return 0


def parse_crl(data: bytes, chain_path: Path, source: str) -> RevocationList:
    """Parse a CRL (PEM or DER) and check the chain's signing CA signed it; PKIError otherwise."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            crl = x509.load_pem_x509_crl(data)
        else:
            crl = x509.load_der_x509_crl(data)
    except ValueError as exc:
        raise PKIError(f"revocation list {source} is not an X.509 CRL: {exc}", _FIX) from None
    signing = signing_ca(chain_path)
    # The stubs' public_key() includes keys that cannot sign (X25519, X448, ML-KEM); a CA's key signs.
    if crl.issuer != signing.subject or not crl.is_signature_valid(signing.public_key()):  # type: ignore[arg-type]
        raise PKIError(
            f"revocation list {source} is not signed by this federation's signing CA ({chain_path})",
            "install only the crl.pem of this federation's CA",
        )
    return RevocationList(
        number=_number(crl),
        issued=crl.last_update_utc,
        next_update=crl.next_update_utc,
        serials=frozenset(entry.serial_number for entry in crl),
        pem=crl.public_bytes(serialization.Encoding.PEM),
    )


def write_crl(cert_dir: str | os.PathLike[str], days: int = CRL_DAYS) -> RevocationList:
    """(CA) Sign a new CRL of every revocation in ca/revoked.jsonl into cert/crl.pem; returns it.

    Its CRL number is one more than that of the CRL it replaces.
    """
    layout = CertLayout(cert_dir)
    ca_cert, ca_key = load_signing_ca(layout)
    previous = installed_crl(layout.cert_dir)
    now = utc_now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now)
        .next_update(now + dt.timedelta(days=days))
        .add_extension(x509.CRLNumber((previous.number if previous else 0) + 1), critical=False)
    )
    for record in revoked_records(layout.cert_dir):
        serial = parse_serial(str(record.get("serial", "")))
        if serial is None:
            continue
        try:
            when = dt.datetime.fromisoformat(str(record.get("revoked_at", "")).replace("Z", "+00:00"))
        except ValueError:
            when = now
        entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
        builder = builder.add_revoked_certificate(entry)
    crl = builder.sign(ca_key, hashes.SHA384())
    write_public_file(layout.crl, crl.public_bytes(serialization.Encoding.PEM))
    return parse_crl(layout.crl.read_bytes(), layout.chain, str(layout.crl))


def current_crl(cert_dir: str | os.PathLike[str]) -> RevocationList:
    """(CA) The CA's CRL, written first if there is none yet."""
    return installed_crl(cert_dir) or write_crl(cert_dir)


def installed_crl(cert_dir: str | os.PathLike[str]) -> RevocationList | None:
    """The CRL held in ``cert_dir`` (checked against its chain), or None if there is none."""
    layout = CertLayout(cert_dir)
    try:
        data = layout.crl.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PKIError(f"revocation list {layout.crl} cannot be read: {exc.strerror or exc}", _FIX) from None
    held = parse_crl(data, layout.chain, str(layout.crl))
    if held.next_update is not None and held.next_update < utc_now() and _first_warning(str(layout.crl), held.next_update):
        log.warning(
            "the revocation list %s was due for renewal at %s; still using it (%s)",
            layout.crl,
            iso(held.next_update),
            _FIX,
        )
    return held


#: (CRL path, next update) already warned of as due for renewal (a site checks every round)
_warned: set[tuple[str, dt.datetime]] = set()


def _first_warning(path: str, next_update: dt.datetime) -> bool:
    """True the first time this process sees ``path`` due for renewal at ``next_update``."""
    key = (path, next_update)
    first = key not in _warned
    _warned.add(key)
    return first


def install_crl(
    cert_dir: str | os.PathLike[str], data: bytes, source: str, keep_newer: bool = False
) -> tuple[RevocationList, bool]:
    """(site) Install a CRL signed by the chain's signing CA and newer than the held one.

    Returns the CRL now held and whether it replaced the file (False: the same one was held,
    or, with ``keep_newer``, a newer one, which stays; otherwise an older one is refused).
    """
    layout = CertLayout(cert_dir)
    if len(data) > MAX_CRL_BYTES:
        raise PKIError(f"revocation list {source} is larger than {MAX_CRL_BYTES} bytes", _FIX)
    new = parse_crl(data, layout.chain, source)
    held = installed_crl(layout.cert_dir)
    if held is not None:
        if held.pem == new.pem or (keep_newer and new.number < held.number):
            return held, False
        if new.number <= held.number:
            raise PKIError(
                f"revocation list {source} (number {new.number}, issued {iso(new.issued)}) is not newer than "
                f"the one held in {layout.crl} (number {held.number}, issued {iso(held.issued)})",
                "keep the one held, or ask the CA's operator for the current crl.pem",
            )
    write_public_file(layout.crl, new.pem)
    return new, True


def check_aggregator_certificate(cert_der: bytes, cert_dir: str | os.PathLike[str], address: str) -> None:
    """(site) Refuse the aggregator's certificate if the held CRL lists it or the chain does not sign it.

    Without a CRL held, only the chain and the dates are checked (as the TLS handshake did).
    """
    layout = CertLayout(cert_dir)
    held = installed_crl(layout.cert_dir)
    try:
        verify_peer_certificate(cert_der, layout.chain, revoked=set(held.serials) if held else None)
    except CertificateRejected as exc:
        if exc.reason != "revoked" or held is None:
            raise PKIError(
                f"the aggregator at {address} presents a certificate this site refuses: {exc.message}", exc.fix
            ) from None
        serial = serial_hex(x509.load_der_x509_certificate(cert_der).serial_number)
        raise PKIError(
            f"the aggregator at {address} presents certificate serial {serial}, which the CA revoked "
            f"(revocation list {layout.crl}, number {held.number}): refusing to connect",
            "do not use this aggregator; ask the federation's operator whether it moved to a new certificate "
            "(fx aggregator certify) and for the current crl.pem (fx collaborator update-crl)",
        ) from None
