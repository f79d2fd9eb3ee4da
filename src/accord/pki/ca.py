"""The federation's certificate authority: a root CA, a signing CA below it, and leaf signing."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from accord.errors import PKIError
from accord.pki.csr import csr_common_name, generate_csr, load_csr
from accord.pki.keys import (
    PrivateKey,
    generate_private_key,
    load_pem_cert,
    load_private_key,
    read_pem_bytes,
    write_private_key,
    write_public_file,
)
from accord.pki.layout import CA_FIX, LEAF_KINDS, CertLayout, Kind, collaborator_fix, validate_name
from accord.pki.profiles import ORGANIZATION, ROOT_CN, SIGNING_CN, ca_extensions, leaf_extensions, subject_name
from accord.pki.records import record_issued, utc_now

CA_DAYS = 3650
LEAF_DAYS = 365
CLOCK_SKEW = dt.timedelta(minutes=5)
_EC_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
_RSA_MIN_BITS = 2048


def _build(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: CertificatePublicKeyTypes,
    signer: PrivateKey,
    extensions: list[tuple[x509.ExtensionType, bool]],
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(signer, hashes.SHA384())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def create_ca(cert_dir: str | os.PathLike[str], key_type: str = "ec", *, now: dt.datetime | None = None) -> CertLayout:
    """Create the root CA (path length 1), the signing CA (path length 0) and the chain file.

    Refuses (PKIError) if a CA already exists in ``cert_dir``.
    """
    layout = CertLayout(cert_dir)
    existing = [p for p in (layout.root_cert, layout.root_key, layout.signing_cert, layout.signing_key) if p.exists()]
    if existing:
        raise PKIError(
            f"a certificate authority already exists in {layout.ca_dir} ({existing[0].name})",
            f"keep using it, or delete {layout.ca_dir} and {layout.chain} to start a new federation "
            "(every certificate it signed stops being trusted)",
        )
    for folder in (layout.root_cert.parent, layout.signing_cert.parent):
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
    start = (now or utc_now()) - CLOCK_SKEW
    end = start + dt.timedelta(days=CA_DAYS)

    root_key = generate_private_key(key_type)
    root_name = subject_name(ROOT_CN, ORGANIZATION)
    root_pub = root_key.public_key()
    root = _build(root_name, root_name, root_pub, root_key, ca_extensions(1, root_pub, root_pub), start, end)

    signing_key = generate_private_key(key_type)
    signing_pub = signing_key.public_key()
    signing = _build(
        subject_name(SIGNING_CN, ORGANIZATION),
        root_name,
        signing_pub,
        root_key,
        ca_extensions(0, signing_pub, root_pub),
        start,
        end,
    )

    write_private_key(layout.root_key, root_key)
    write_private_key(layout.signing_key, signing_key)
    write_public_file(layout.root_cert, _pem(root))
    write_public_file(layout.signing_cert, _pem(signing))
    write_public_file(layout.chain, _pem(root) + _pem(signing))
    record_issued(layout, root, "root", ROOT_CN)
    record_issued(layout, signing, "signing", SIGNING_CN)
    return layout


def _check_public_key(key: CertificatePublicKeyTypes) -> None:
    fix = "make the request with an ECDSA P-256 (the default), P-384 or P-521 key, or an RSA key of 2048 bits or more"
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, _EC_CURVES):
            raise PKIError(f"CSR key uses unsupported curve {key.curve.name}", fix)
    elif isinstance(key, rsa.RSAPublicKey):
        if key.key_size < _RSA_MIN_BITS:
            raise PKIError(f"CSR RSA key has only {key.key_size} bits (minimum {_RSA_MIN_BITS})", fix)
    else:
        raise PKIError(f"CSR key type {type(key).__name__} is not supported", fix)


def load_signing_ca(layout: CertLayout) -> tuple[x509.Certificate, PrivateKey]:
    cert = load_pem_cert(layout.signing_cert, "signing CA certificate", CA_FIX)
    key = load_private_key(layout.signing_key, "signing CA private key", CA_FIX)
    der = serialization.Encoding.DER
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(der, spki) != key.public_key().public_bytes(der, spki):
        raise PKIError(
            f"signing CA key {layout.signing_key} does not match {layout.signing_cert}",
            "restore the matching pair from backup",
        )
    return cert, key


def sign_csr(
    cert_dir: str | os.PathLike[str],
    csr_pem: bytes,
    kind: Kind,
    days: int = LEAF_DAYS,
    *,
    now: dt.datetime | None = None,
    expected_name: str | None = None,
) -> bytes:
    """Sign a CSR with the signing CA as a ``kind`` certificate valid ``days`` days; returns the PEM.

    Checks the CSR's signature, key and common name (equal to ``expected_name`` when
    given); the CA sets every extension itself. ``now`` moves the validity window (for
    tests of expiry); it defaults to the current time.
    """
    if kind not in LEAF_KINDS:
        raise PKIError(f"unknown certificate kind {kind!r}", f"use one of {', '.join(LEAF_KINDS)}")
    if not isinstance(days, int) or days < 1:
        raise PKIError(f"certificate validity must be a whole number of days >= 1, not {days!r}", "pass --days N")
    csr = load_csr(csr_pem)
    if not csr.is_signature_valid:
        raise PKIError("CSR signature does not verify: the request was altered or corrupted", collaborator_fix())
    name = validate_name(kind, csr_common_name(csr))
    if expected_name is not None and name != expected_name:
        raise PKIError(
            f"the CSR is for {kind} {name!r}, not {expected_name!r}",
            "sign only a request whose common name is the participant's name; ask for a new request",
        )
    public_key = csr.public_key()
    _check_public_key(public_key)

    layout = CertLayout(cert_dir)
    ca_cert, ca_key = load_signing_ca(layout)
    start = (now or utc_now()) - CLOCK_SKEW
    end = min(start + CLOCK_SKEW + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    cert = _build(
        subject_name(name),
        ca_cert.subject,
        public_key,
        ca_key,
        leaf_extensions(kind, name, public_key, ca_key.public_key()),
        start,
        end,
    )
    record_issued(layout, cert, kind, name)
    return _pem(cert)


def certify(
    cert_dir: str | os.PathLike[str],
    kind: Kind,
    name: str,
    key_type: str = "ec",
    days: int = LEAF_DAYS,
    *,
    now: dt.datetime | None = None,
    overwrite: bool = False,
) -> tuple[Path, Path]:
    """Make key + CSR for ``name``, sign it with the local CA and write the certificate.

    Returns ``(cert_path, key_path)``.
    """
    layout = CertLayout(cert_dir)
    cert_path, key_path, _ = layout.leaf_paths(kind, name)
    csr_path, _ = generate_csr(cert_dir, kind, name, key_type, overwrite=overwrite)
    csr_pem = read_pem_bytes(csr_path, "certificate signing request", collaborator_fix(name))
    write_public_file(cert_path, sign_csr(cert_dir, csr_pem, kind, days, now=now))
    return cert_path, key_path


def make_federation_pki(
    cert_dir: str | os.PathLike[str],
    aggregator_fqdn: str,
    collaborators: list[str],
    key_type: str = "ec",
) -> CertLayout:
    """A whole federation's PKI in one folder: CA, the aggregator's and every collaborator's certificate."""
    validate_name("aggregator", aggregator_fqdn)
    for name in collaborators:
        validate_name("collaborator", name)
    if len(set(collaborators)) != len(collaborators):
        raise PKIError("collaborator names are not unique", "list each collaborator once")
    layout = create_ca(cert_dir, key_type)
    certify(cert_dir, "aggregator", aggregator_fqdn, key_type)
    for name in collaborators:
        certify(cert_dir, "collaborator", name, key_type)
    return layout
