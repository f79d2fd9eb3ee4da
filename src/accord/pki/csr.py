"""Certificate signing requests: make one for an aggregator or collaborator, fingerprint it."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from accord.errors import PKIError
from accord.pki.keys import (
    PrivateKey,
    generate_private_key,
    load_private_key,
    write_private_key,
    write_public_file,
)
from accord.pki.layout import CertLayout, Kind, collaborator_fix, validate_name
from accord.pki.profiles import subject_alt_names, subject_name


def build_csr(key: PrivateKey, kind: str, name: str) -> x509.CertificateSigningRequest:
    """A CSR signed with ``key`` for CN ``name`` (SHA-384), carrying the SAN the CA will set."""
    validate_name(kind, name)
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject_name(name))
        .add_extension(subject_alt_names(kind, name), critical=False)
        .sign(key, hashes.SHA384())
    )


def load_csr(csr_pem: bytes) -> x509.CertificateSigningRequest:
    """Parse a PEM (or DER) CSR, or raise PKIError."""
    try:
        if csr_pem.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_csr(csr_pem)
        return x509.load_der_x509_csr(csr_pem)
    except ValueError as exc:
        raise PKIError(
            f"not a valid certificate signing request: {exc}",
            "send the .csr file made by `fx collaborator generate-cert-request`",
        ) from None


def csr_common_name(csr: x509.CertificateSigningRequest) -> str:
    """The one common name in the CSR's subject; PKIError if there is not exactly one."""
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1 or not isinstance(names[0].value, str):
        raise PKIError("CSR subject must carry exactly one common name", collaborator_fix())
    return names[0].value


def csr_fingerprint(csr_pem: bytes) -> str:
    """SHA-384 hex (96 characters) of the CSR's DER: what the two operators compare out of band."""
    csr = load_csr(csr_pem)
    digest = hashes.Hash(hashes.SHA384())
    digest.update(csr.public_bytes(serialization.Encoding.DER))
    return digest.finalize().hex()


def generate_csr(
    cert_dir: str | os.PathLike[str],
    kind: Kind,
    name: str,
    key_type: str = "ec",
    overwrite: bool = False,
    *,
    reuse_key: bool = False,
) -> tuple[Path, str]:
    """Write a new private key (0600) and CSR for ``name`` at the layout paths.

    Returns ``(csr_path, fingerprint)``. Refuses to replace an existing key unless
    ``overwrite``; with ``reuse_key`` an existing key signs the new CSR instead (renewal).
    """
    layout = CertLayout(cert_dir)
    _, key_path, csr_path = layout.leaf_paths(kind, name)
    reuse = reuse_key and not overwrite and key_path.exists()
    key = load_private_key(key_path) if reuse else generate_private_key(key_type)
    csr_pem = build_csr(key, kind, name).public_bytes(serialization.Encoding.PEM)
    if not reuse:
        write_private_key(key_path, key, overwrite=overwrite)
    write_public_file(csr_path, csr_pem)
    return csr_path, csr_fingerprint(csr_pem)
