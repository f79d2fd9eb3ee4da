"""Mutual-TLS material for the gRPC transport: file paths in, gRPC credentials out.

There is no insecure mode: both ends always present a certificate signed by the
federation's CA chain, and the server requires the client's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import grpc

from accord.errors import PKIError

_CHAIN_FIX = "run `fx workspace certify` (aggregator) or import the signed package (collaborator)"


def _read(path: str | os.PathLike, what: str, fix: str) -> bytes:
    """Read a PEM file, or raise PKIError naming it and the fix."""
    source = Path(path)
    try:
        data = source.read_bytes()
    except FileNotFoundError:
        raise PKIError(f"{what} {source} does not exist", fix) from None
    except OSError as exc:
        raise PKIError(f"{what} {source} cannot be read: {exc.strerror or exc}", fix) from None
    if not data.strip():
        raise PKIError(f"{what} {source} is empty", fix)
    return data


@dataclass(frozen=True)
class TLSMaterial:
    """The PEM bytes of a certificate, its private key and the CA chain that signs peers."""

    cert: bytes
    key: bytes
    chain: bytes


@dataclass(frozen=True)
class ServerTLS:
    """Where the aggregator's certificate, key and the federation CA chain lie."""

    cert_path: str | os.PathLike
    key_path: str | os.PathLike
    chain_path: str | os.PathLike

    def load(self) -> TLSMaterial:
        fix = "run `fx aggregator certify`"
        return TLSMaterial(
            cert=_read(self.cert_path, "aggregator certificate", fix),
            key=_read(self.key_path, "aggregator private key", fix),
            chain=_read(self.chain_path, "CA certificate chain", _CHAIN_FIX),
        )

    def credentials(self) -> grpc.ServerCredentials:
        """Server credentials that require and verify a client certificate."""
        material = self.load()
        return grpc.ssl_server_credentials(
            [(material.key, material.cert)],
            root_certificates=material.chain,
            require_client_auth=True,
        )


@dataclass(frozen=True)
class ClientTLS:
    """Where a collaborator's certificate, key and the federation CA chain lie."""

    cert_path: str | os.PathLike
    key_path: str | os.PathLike
    chain_path: str | os.PathLike

    def load(self) -> TLSMaterial:
        fix = "run `fx collaborator generate-cert-request` and have the CA sign it"
        return TLSMaterial(
            cert=_read(self.cert_path, "collaborator certificate", fix),
            key=_read(self.key_path, "collaborator private key", fix),
            chain=_read(self.chain_path, "CA certificate chain", _CHAIN_FIX),
        )

    def credentials(self) -> grpc.ChannelCredentials:
        """Channel credentials presenting this collaborator's certificate."""
        material = self.load()
        return grpc.ssl_channel_credentials(
            root_certificates=material.chain,
            private_key=material.key,
            certificate_chain=material.cert,
        )
