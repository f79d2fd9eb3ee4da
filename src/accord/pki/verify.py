"""Check a peer's certificate against the federation's chain: issuer, validity, revocation."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import NameOID

from accord.errors import PKIError
from accord.pki.keys import load_pem_certs
from accord.pki.layout import CHAIN_FIX
from accord.pki.records import iso, serial_hex

_PEER_FIX = "have the peer get a certificate signed by this federation's CA (check the CSR fingerprint)"
_RENEW_FIX = "have the peer make a new CSR and get it signed"


class CertificateRejected(PKIError):
    """A certificate that does not check out against the chain, with why in ``reason``:
    ``foreign`` (another CA), ``ca`` (a CA certificate), ``not_yet_valid``, ``expired``,
    ``ca_expired`` or ``revoked``; ``when`` is the date that matters, if any."""

    def __init__(self, message: str, fix: str, *, reason: str, when: dt.datetime | None = None) -> None:
        super().__init__(message, fix)
        self.reason = reason
        self.when = when


def common_name(cert: x509.Certificate) -> str:
    """The subject common name of ``cert``; PKIError if it has none."""
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names or not isinstance(names[0].value, str):
        raise PKIError(f"certificate {cert.subject.rfc4514_string()!r} has no common name", _PEER_FIX)
    return names[0].value


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _parse(cert_pem_or_der: bytes) -> x509.Certificate:
    try:
        if cert_pem_or_der.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(cert_pem_or_der)
        return x509.load_der_x509_certificate(cert_pem_or_der)
    except (ValueError, TypeError) as exc:
        raise PKIError(f"peer certificate cannot be parsed: {exc}", _PEER_FIX) from None


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def signing_ca(chain_path: Path, data: bytes | None = None) -> x509.Certificate:
    """The signing CA of the chain file, after checking it was issued by the chain's root
    (``data``: the file's bytes, read_pem_bytes's, if the caller read them; None: read here)."""
    certs = load_pem_certs(chain_path, "CA certificate chain", CHAIN_FIX, data=data)
    roots = [c for c in certs if _is_ca(c) and c.issuer == c.subject and _issued_by(c, c)]
    signing = [c for c in certs if _is_ca(c) and c.issuer != c.subject]
    if len(roots) != 1 or len(signing) != 1:
        raise PKIError(
            f"CA certificate chain {chain_path} must hold one root CA and one signing CA "
            f"(found {len(roots)} root, {len(signing)} signing)",
            CHAIN_FIX,
        )
    if not _issued_by(signing[0], roots[0]):
        raise PKIError(f"signing CA in {chain_path} was not issued by its root CA", CHAIN_FIX)
    return signing[0]


def verify_peer_certificate(
    cert_pem_or_der: bytes,
    chain_path: str | os.PathLike[str],
    revoked: set[int] | None = None,
    now: dt.datetime | None = None,
    *,
    signing: x509.Certificate | None = None,
) -> x509.Certificate:
    """Return the parsed peer certificate if the chain's signing CA issued it, it is valid at
    ``now`` and its serial is not in ``revoked``; raise PKIError saying why otherwise.
    ``signing``: the chain's signing CA as ``signing_ca(chain_path)`` returned it, if the caller
    keeps it (None: read and checked from ``chain_path``)."""
    cert = _parse(cert_pem_or_der)
    if signing is None:
        signing = signing_ca(Path(chain_path))
    subject = cert.subject.rfc4514_string()
    if cert.issuer != signing.subject:
        raise CertificateRejected(
            f"certificate {subject!r} was issued by {cert.issuer.rfc4514_string()!r}, "
            f"not by this federation's signing CA",
            _PEER_FIX,
            reason="foreign",
        )
    if not _issued_by(cert, signing):
        raise CertificateRejected(
            f"certificate {subject!r} was not signed by this federation's signing CA "
            "(a different CA with the same name?)",
            _PEER_FIX,
            reason="foreign",
        )
    if _is_ca(cert):
        raise CertificateRejected(
            f"certificate {subject!r} is a CA certificate, not a participant's", _PEER_FIX, reason="ca"
        )
    moment = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    if moment < cert.not_valid_before_utc:
        raise CertificateRejected(
            f"certificate {subject!r} is not valid until {iso(cert.not_valid_before_utc)}",
            "check the clocks of both machines",
            reason="not_yet_valid",
            when=cert.not_valid_before_utc,
        )
    if moment > cert.not_valid_after_utc:
        raise CertificateRejected(
            f"certificate {subject!r} expired at {iso(cert.not_valid_after_utc)}",
            _RENEW_FIX,
            reason="expired",
            when=cert.not_valid_after_utc,
        )
    if moment > signing.not_valid_after_utc:
        raise CertificateRejected(
            f"the federation's signing CA expired at {iso(signing.not_valid_after_utc)}",
            CHAIN_FIX,
            reason="ca_expired",
            when=signing.not_valid_after_utc,
        )
    if revoked and cert.serial_number in revoked:
        raise CertificateRejected(
            f"certificate {subject!r} (serial {serial_hex(cert.serial_number)}) has been revoked",
            _RENEW_FIX,
            reason="revoked",
        )
    return cert
