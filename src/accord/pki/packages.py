"""The two zip packages a site and the CA exchange, written and read safely.

- request package ``col_NAME_to_agg_cert_request.zip`` (site -> CA): ``col_NAME.csr`` and
  ``manifest.json`` = ``{"kind": "collaborator", "name": NAME, "fingerprint_sha384": FP}``;
- signed package ``agg_to_col_NAME_signed_cert.zip`` (CA -> site): ``col_NAME.crt``,
  ``cert_chain.crt`` and the CA's revocation list ``crl.pem`` (older packages lack it).

Neither ever holds a private key. Reading never extracts to disk: the members must be
exactly the expected names, each at most :data:`MAX_MEMBER_BYTES`, read into memory.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from accord.errors import PKIError
from accord.files import atomic_path
from accord.pki.csr import csr_common_name, csr_fingerprint, load_csr
from accord.pki.keys import read_pem_bytes
from accord.pki.layout import CHAIN_FIX, CertLayout, collaborator_fix, validate_collaborator_name
from accord.pki.secrets import private_key_problem

MAX_MEMBER_BYTES = 64 * 1024
MAX_PACKAGE_BYTES = 1024 * 1024
MANIFEST = "manifest.json"
CHAIN = "cert_chain.crt"
CRL = "crl.pem"
REQUEST_KIND = "collaborator"
_FINGERPRINT = re.compile(r"^[0-9a-f]{96}$")

def request_package_name(name: str) -> str:
    return f"col_{validate_collaborator_name(name)}_to_agg_cert_request.zip"

def signed_package_name(name: str) -> str:
    return f"agg_to_col_{validate_collaborator_name(name)}_signed_cert.zip"

@dataclass(frozen=True)
class CertRequest:
    """A collaborator's certificate request, as read from its package."""

    name: str
    csr_pem: bytes
    fingerprint: str

@dataclass(frozen=True)
class SignedCert:
    """A signed collaborator certificate and the federation's chain, as read from their package."""

    name: str
    cert_pem: bytes
    chain_pem: bytes
    crl_pem: bytes | None = None

def _write_zip(path: Path, members: dict[str, bytes]) -> Path:
    """Write ``members`` to a new zip at ``path`` atomically (0644)."""
    for member, data in members.items():
        if private_key_problem(data):  # pragma: no cover - defensive: packages are built from public files
            raise PKIError(f"refusing to put a private key into {path} ({member})")
    with atomic_path(path) as partial:
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for member, data in members.items():
                zf.writestr(member, data)
    return path

def _read_zip(path: Path, what: str, fix: str) -> dict[str, bytes]:
    """Every member of the zip at ``path`` in memory, refusing folders, paths, duplicates and big members."""
    if not path.is_file():
        raise PKIError(f"{what} {path} does not exist", fix)
    if path.stat().st_size > MAX_PACKAGE_BYTES:
        raise PKIError(f"{what} {path} is larger than {MAX_PACKAGE_BYTES} bytes", fix)
    members: dict[str, bytes] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                member = info.filename
                if info.is_dir() or "/" in member or "\\" in member or member in members or len(members) >= 4:
                    raise PKIError(f"{what} {path} holds an unexpected entry {member!r}", fix)
                if info.file_size > MAX_MEMBER_BYTES:
                    raise PKIError(f"{what} {path}: {member} is larger than {MAX_MEMBER_BYTES} bytes", fix)
                with zf.open(info) as handle:
                    data = handle.read(MAX_MEMBER_BYTES + 1)
                if len(data) > MAX_MEMBER_BYTES:
                    raise PKIError(f"{what} {path}: {member} is larger than {MAX_MEMBER_BYTES} bytes", fix)
                members[member] = data
    except (zipfile.BadZipFile, zipfile.LargeZipFile, RuntimeError, NotImplementedError, EOFError) as exc:
        raise PKIError(f"{what} {path} is not a readable zip package: {exc}", fix) from None
    except OSError as exc:
        raise PKIError(f"{what} {path} cannot be read: {exc.strerror or exc}", fix) from None
    for member, data in members.items():
        if private_key_problem(data):
            raise PKIError(
                f"{what} {path} contains a private key ({member}): it has left its site",
                "delete the package, make a new key and request (the old key must be treated as exposed)",
            )
    return members

def _expect(members: dict[str, bytes], expected: set[str], path: Path, what: str, fix: str) -> None:
    if set(members) != expected:
        raise PKIError(
            f"{what} {path} holds {sorted(members)}, expected exactly {sorted(expected)}",
            fix,
        )

def write_request_package(
    cert_dir: str | os.PathLike[str], name: str, output_dir: str | os.PathLike[str]
) -> tuple[Path, str]:
    """Package collaborator ``name``'s CSR (already made in ``cert_dir``) for the CA.

    Returns ``(package_path, fingerprint)``.
    """
    csr_path = CertLayout(cert_dir).collaborator_csr(name)
    csr_pem = read_pem_bytes(csr_path, "certificate signing request", collaborator_fix(name))
    fingerprint = csr_fingerprint(csr_pem)
    manifest = {"kind": REQUEST_KIND, "name": name, "fingerprint_sha384": fingerprint}
    members = {csr_path.name: csr_pem, MANIFEST: (json.dumps(manifest, indent=2) + "\n").encode("utf-8")}
    return _write_zip(Path(output_dir) / request_package_name(name), members), fingerprint

def read_request_package(path: str | os.PathLike[str]) -> CertRequest:
    """Read and check a request package: its manifest, and that the CSR matches it (fingerprint, name)."""
    source = Path(path)
    what = "certificate request package"
    fix = "ask the site for the package `fx collaborator generate-cert-request` made"
    members = _read_zip(source, what, fix)
    try:
        manifest = json.loads(members.get(MANIFEST, b"").decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise PKIError(f"{what} {source} has no readable {MANIFEST}", fix) from None
    if not isinstance(manifest, dict) or set(manifest) != {"kind", "name", "fingerprint_sha384"}:
        raise PKIError(f"{what} {source}: {MANIFEST} must hold exactly kind, name and fingerprint_sha384", fix)
    if manifest["kind"] != REQUEST_KIND:
        raise PKIError(f"{what} {source} requests a {manifest['kind']!r} certificate, not a collaborator's", fix)
    name = validate_collaborator_name(manifest["name"])
    claimed = manifest["fingerprint_sha384"]
    if not isinstance(claimed, str) or not _FINGERPRINT.match(claimed):
        raise PKIError(f"{what} {source}: the manifest's fingerprint is not 96 lowercase hex digits", fix)
    csr_member = f"col_{name}.csr"
    _expect(members, {csr_member, MANIFEST}, source, what, fix)
    csr_pem = members[csr_member]
    fingerprint = csr_fingerprint(csr_pem)
    if fingerprint != claimed:
        raise PKIError(
            f"{what} {source}: the CSR's fingerprint {fingerprint[:16]}... differs from the manifest's "
            f"{claimed[:16]}...: the package was altered or damaged",
            "do not sign it; ask the site for a new request package",
        )
    common = csr_common_name(load_csr(csr_pem))
    if common != name:
        raise PKIError(
            f"{what} {source} is named for {name!r} but its CSR asks for {common!r}",
            "do not sign it; ask the site for a new request package",
        )
    return CertRequest(name, csr_pem, fingerprint)

def write_signed_package(
    cert_dir: str | os.PathLike[str],
    name: str,
    cert_pem: bytes,
    output_dir: str | os.PathLike[str],
    crl_pem: bytes | None = None,
) -> Path:
    """Package a signed collaborator certificate with the CA chain of ``cert_dir`` (and its CRL) for the site."""
    chain_pem = read_pem_bytes(CertLayout(cert_dir).chain, "CA certificate chain", CHAIN_FIX)
    members = {f"col_{validate_collaborator_name(name)}.crt": cert_pem, CHAIN: chain_pem}
    if crl_pem is not None:
        members[CRL] = crl_pem
    return _write_zip(Path(output_dir) / signed_package_name(name), members)

def read_signed_package(path: str | os.PathLike[str]) -> SignedCert:
    """Read a signed package: exactly one ``col_NAME.crt`` and the chain, both PEM certificates, and maybe a CRL."""
    source = Path(path)
    what = "signed certificate package"
    fix = "ask the CA for the package `fx collaborator certify --request-pkg` made"
    members = _read_zip(source, what, fix)
    certs = [m for m in members if m.startswith("col_") and m.endswith(".crt")]
    if len(certs) != 1:
        raise PKIError(f"{what} {source} must hold one col_NAME.crt, found {sorted(members)}", fix)
    name = validate_collaborator_name(certs[0][len("col_") : -len(".crt")])
    _expect(members, {certs[0], CHAIN} | ({CRL} & set(members)), source, what, fix)
    for member in (certs[0], CHAIN):  # parse both: a package of anything else is refused here
        try:
            x509.load_pem_x509_certificates(members[member])
        except ValueError as exc:
            raise PKIError(f"{what} {source}: {member} is not a PEM certificate: {exc}", fix) from None
    return SignedCert(name, members[certs[0]], members[CHAIN], members.get(CRL))  # the CRL is checked at install
