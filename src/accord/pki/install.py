"""A participant's own certificate: install a signed one, and check it before connecting.

Both check the same three things: the certificate holds this participant's public key
(it answers *our* request), it is signed by the federation's chain, and it is valid now.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from accord.errors import PKIError
from accord.pki.keys import load_private_key, read_pem_bytes, write_public_file
from accord.pki.layout import CHAIN_FIX, CertLayout, Kind, fix_for_path
from accord.pki.records import iso
from accord.pki.verify import CertificateRejected, common_name, verify_peer_certificate


def renew_fix(kind: str, name: str) -> str:
    """The commands that get ``name`` a new certificate from the CA."""
    if kind == "aggregator":
        steps = f"fx aggregator generate-cert-request --fqdn {name}, then fx aggregator certify"
    else:
        steps = f"fx collaborator generate-cert-request -n {name}, then fx collaborator certify"
    return f"have the CA sign a new one ({steps})"


def shown(path: Path, base: Path | None) -> str:
    """``path`` relative to ``base`` when it lies below it (as the user knows it), else as is."""
    if base is not None:
        try:
            return str(path.resolve().relative_to(base.resolve()))
        except ValueError:
            pass
    return str(path)


def same_public_key(cert: x509.Certificate, key_path: Path, what: str, fix: str) -> bool:
    """Whether ``cert`` holds the public half of the private key at ``key_path``."""
    key = load_private_key(key_path, what, fix)
    der, spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return cert.public_key().public_bytes(der, spki) == key.public_key().public_bytes(der, spki)


def _verify_as_own(cert_pem: bytes, chain: Path, cert_label: str, chain_label: str, fix: str) -> x509.Certificate:
    """verify_peer_certificate, its refusal reworded for the certificate's owner."""
    try:
        return verify_peer_certificate(cert_pem, chain)
    except CertificateRejected as exc:
        when = iso(exc.when) if exc.when else ""
        messages = {
            "expired": f"certificate {cert_label} expired on {when}",
            "foreign": f"certificate {cert_label} was not issued by the federation's CA in {chain_label} "
            "(it comes from another CA)",
            "not_yet_valid": f"certificate {cert_label} is not valid until {when}",
        }
        if exc.reason == "not_yet_valid":
            fix = "check this machine's clock, or " + fix
        if exc.reason == "ca_expired":
            raise
        raise PKIError(messages.get(exc.reason, f"certificate {cert_label}: {exc.message}"), fix) from None


def check_own_certificate(
    cert_dir: str | os.PathLike[str], kind: Kind, name: str, workspace: Path | None = None
) -> x509.Certificate:
    """Refuse (PKIError naming the file) a certificate of our own that the peer's TLS
    handshake would refuse: expired, not yet valid, from another CA, or not matching our key."""
    layout = CertLayout(cert_dir)
    cert_path, key_path, _ = layout.leaf_paths(kind, name)
    fix = renew_fix(kind, name)
    cert_pem = read_pem_bytes(cert_path, f"{kind} certificate", fix_for_path(cert_path))
    read_pem_bytes(layout.chain, "CA certificate chain", CHAIN_FIX)
    label = shown(cert_path, workspace)
    cert = _verify_as_own(cert_pem, layout.chain, label, shown(layout.chain, workspace), fix)
    if not same_public_key(cert, key_path, f"{kind} private key", fix_for_path(key_path)):
        raise PKIError(f"certificate {label} does not match the private key {shown(key_path, workspace)}", fix)
    return cert


@dataclass(frozen=True)
class Installed:
    """Where a signed certificate was installed, and what it is."""

    cert_path: Path
    chain_path: Path
    certificate: x509.Certificate
    chain_added: bool


def install_certificate(
    cert_dir: str | os.PathLike[str],
    kind: Kind,
    name: str,
    cert_pem: bytes,
    chain_pem: bytes | None = None,
    source: str = "the signed certificate",
) -> Installed:
    """Check ``cert_pem`` answers this participant's own request, then write it (and the chain).

    The certificate must be for ``name``, hold the public half of our private key and be
    signed by ``chain_pem`` (or, without it, by the chain already in ``cert_dir``). An
    existing chain that differs from ``chain_pem`` is refused: trust changes deliberately.
    """
    layout = CertLayout(cert_dir)
    cert_path, key_path, _ = layout.leaf_paths(kind, name)
    fix = renew_fix(kind, name)
    if not key_path.is_file():
        raise PKIError(
            f"{source} is for {kind} {name!r}, but this workspace has no private key {key_path}",
            "import it in the workspace where the request was made (its key never leaves it)",
        )
    existing = layout.chain.read_bytes() if layout.chain.is_file() else None
    if chain_pem is not None and existing is not None and existing.strip() != chain_pem.strip():
        raise PKIError(
            f"the CA chain in {source} differs from {layout.chain} already here (another federation's CA?)",
            f"check with the CA's operator; if the federation's CA really changed, "
            f"delete {layout.chain} and import again",
        )
    if chain_pem is None and existing is None:
        raise PKIError(f"CA certificate chain {layout.chain} does not exist", CHAIN_FIX)
    chain = chain_pem if chain_pem is not None else existing
    assert chain is not None
    with tempfile.TemporaryDirectory(prefix="accord-chain-") as folder:
        candidate = Path(folder) / "cert_chain.crt"
        candidate.write_bytes(chain)
        cert = _verify_as_own(cert_pem, candidate, source, f"the chain of {source}", fix)
    if common_name(cert) != name:
        raise PKIError(f"{source} is for {common_name(cert)!r}, not {kind} {name!r}", fix)
    if not same_public_key(cert, key_path, f"{kind} private key", fix_for_path(key_path)):
        raise PKIError(
            f"{source} does not match this workspace's private key {key_path}: it answers another request",
            f"send the request package made here and import the answer to it; or {fix}",
        )
    chain_added = existing is None
    if chain_added:
        write_public_file(layout.chain, chain)
    write_public_file(cert_path, cert_pem)
    return Installed(cert_path, layout.chain, cert, chain_added)

