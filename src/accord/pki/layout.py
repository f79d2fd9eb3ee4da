"""Where the federation's keys and certificates lie under a workspace's ``cert`` folder.

Every other module asks :class:`CertLayout` for a path instead of building one, so the
layout is written down once. Names that become file names are validated here, so a
collaborator called ``../../etc`` never becomes a path.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Literal

from accord.errors import PKIError
from accord.plan.schema import NAME_PATTERN, RESERVED_NAMES

Kind = Literal["aggregator", "collaborator"]
LEAF_KINDS: tuple[str, ...] = ("aggregator", "collaborator")

COLLABORATOR_NAME = re.compile(NAME_PATTERN)
_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_CN_MAX = 64  # X.509 upper bound for a common name

CA_FIX = "run `fx workspace certify` to create the federation's certificate authority"
AGGREGATOR_FIX = "run `fx aggregator certify`"
CHAIN_FIX = (
    "run `fx workspace certify` on the CA machine, or copy cert_chain.crt from the "
    "federation's CA into the cert folder"
)


def collaborator_fix(name: str = "NAME") -> str:
    """The command that makes a collaborator's key and CSR."""
    return (
        f"run `fx collaborator generate-cert-request -n {name}`, "
        "then have the CSR signed by the federation's CA"
    )


def validate_collaborator_name(name: str) -> str:
    """Return ``name`` if it is a valid collaborator name, else raise PKIError."""
    if not isinstance(name, str) or not COLLABORATOR_NAME.match(name):
        raise PKIError(
            f"invalid collaborator name {name!r}",
            "use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    if name.lower() in RESERVED_NAMES:
        raise PKIError(f"collaborator name {name!r} is reserved: it is the origin of the aggregated metrics", "choose another name")
    return name


def validate_fqdn(fqdn: str) -> str:
    """Return ``fqdn`` if it is a hostname or IP address usable as a CN, else raise PKIError."""
    fix = "give the aggregator's hostname (e.g. agg.example.org, localhost) or IP address"
    if not isinstance(fqdn, str) or not fqdn or len(fqdn) > _CN_MAX:
        raise PKIError(f"invalid aggregator address {fqdn!r}", fix + f" of at most {_CN_MAX} characters")
    try:
        if "%" not in fqdn:  # no IPv6 scope ids: they are not certificate names
            ipaddress.ip_address(fqdn)
            return fqdn
    except ValueError:
        pass
    labels = fqdn[:-1].split(".") if fqdn.endswith(".") else fqdn.split(".")
    if not all(_HOST_LABEL.match(label) for label in labels):
        raise PKIError(f"invalid aggregator address {fqdn!r}", fix)
    return fqdn


def validate_name(kind: str, name: str) -> str:
    """Validate ``name`` for a leaf certificate of ``kind`` (aggregator or collaborator)."""
    if kind == "aggregator":
        return validate_fqdn(name)
    if kind == "collaborator":
        return validate_collaborator_name(name)
    raise PKIError(f"unknown certificate kind {kind!r}", f"use one of {', '.join(LEAF_KINDS)}")


class CertLayout:
    """Paths of the federation PKI files under ``cert_dir`` (normally ``<workspace>/cert``)."""

    def __init__(self, cert_dir: str | os.PathLike[str]) -> None:
        self.cert_dir = Path(cert_dir)

    def __repr__(self) -> str:
        return f"CertLayout({str(self.cert_dir)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CertLayout) and other.cert_dir == self.cert_dir

    def __hash__(self) -> int:
        return hash(self.cert_dir)

    @property
    def ca_dir(self) -> Path:
        """Folder of the certificate authority's own files."""
        return self.cert_dir / "ca"

    @property
    def root_cert(self) -> Path:
        return self.ca_dir / "root" / "root.crt"

    @property
    def root_key(self) -> Path:
        return self.ca_dir / "root" / "root.key"

    @property
    def signing_cert(self) -> Path:
        return self.ca_dir / "signing" / "signing.crt"

    @property
    def signing_key(self) -> Path:
        return self.ca_dir / "signing" / "signing.key"

    @property
    def index(self) -> Path:
        """JSON lines: one record per certificate issued."""
        return self.ca_dir / "index.jsonl"

    @property
    def revoked(self) -> Path:
        """JSON lines: one record per certificate revoked."""
        return self.ca_dir / "revoked.jsonl"

    @property
    def crl(self) -> Path:
        """The CA's certificate revocation list (X.509 CRL, PEM): the CA writes it, sites hold a copy."""
        return self.cert_dir / "crl.pem"

    @property
    def chain(self) -> Path:
        """Root + signing CA certificates: the trust bundle every participant holds."""
        return self.cert_dir / "cert_chain.crt"

    def aggregator_cert(self, fqdn: str) -> Path:
        return self.cert_dir / "server" / f"agg_{validate_fqdn(fqdn)}.crt"

    def aggregator_key(self, fqdn: str) -> Path:
        return self.cert_dir / "server" / f"agg_{validate_fqdn(fqdn)}.key"

    def aggregator_csr(self, fqdn: str) -> Path:
        return self.cert_dir / "server" / f"agg_{validate_fqdn(fqdn)}.csr"

    def collaborator_cert(self, name: str) -> Path:
        return self.cert_dir / "client" / f"col_{validate_collaborator_name(name)}.crt"

    def collaborator_key(self, name: str) -> Path:
        return self.cert_dir / "client" / f"col_{validate_collaborator_name(name)}.key"

    def collaborator_csr(self, name: str) -> Path:
        return self.cert_dir / "client" / f"col_{validate_collaborator_name(name)}.csr"

    def leaf_paths(self, kind: str, name: str) -> tuple[Path, Path, Path]:
        """(cert, key, csr) paths of the leaf certificate ``name`` of ``kind``."""
        validate_name(kind, name)
        if kind == "aggregator":
            return self.aggregator_cert(name), self.aggregator_key(name), self.aggregator_csr(name)
        return self.collaborator_cert(name), self.collaborator_key(name), self.collaborator_csr(name)


def fix_for_path(path: str | os.PathLike[str]) -> str:
    """The command that makes the PKI file at ``path``, judged by its layout name."""
    file_name = Path(path).name
    stem = Path(path).stem
    if file_name in ("root.crt", "root.key", "signing.crt", "signing.key", "index.jsonl"):
        return CA_FIX
    if file_name == "cert_chain.crt":
        return CHAIN_FIX
    if stem.startswith("agg_"):
        return AGGREGATOR_FIX
    if stem.startswith("col_"):
        return collaborator_fix(stem[len("col_") :])
    return "check the path, or create the file with the `fx` command that makes it"
