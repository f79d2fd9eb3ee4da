"""Mutual-TLS material for the gRPC transport: file paths in, gRPC credentials out.

There is no insecure mode: both ends always present a certificate signed by the
federation's CA chain, and the server requires the client's.
"""

from __future__ import annotations

import os
import socket
import ssl
from dataclasses import dataclass
from typing import ClassVar

import grpc

from accord.pki.keys import read_pem_bytes

_CHAIN_FIX = "run `fx workspace certify` (aggregator) or import the signed package (collaborator)"


@dataclass(frozen=True)
class TLSMaterial:
    """The PEM bytes of a certificate, its private key and the CA chain that signs peers."""

    cert: bytes
    key: bytes
    chain: bytes


@dataclass(frozen=True)
class _TLSFiles:
    """Where a participant's certificate, private key and the federation's CA chain lie."""

    ROLE: ClassVar[str]
    FIX: ClassVar[str]

    cert_path: str | os.PathLike
    key_path: str | os.PathLike
    chain_path: str | os.PathLike

    def load(self) -> TLSMaterial:
        """Read the three PEM files; PKIError naming a missing or unreadable one and its fix."""
        return TLSMaterial(
            cert=read_pem_bytes(self.cert_path, f"{self.ROLE} certificate", self.FIX),
            key=read_pem_bytes(self.key_path, f"{self.ROLE} private key", self.FIX),
            chain=read_pem_bytes(self.chain_path, "CA certificate chain", _CHAIN_FIX),
        )


@dataclass(frozen=True)
class ServerTLS(_TLSFiles):
    """The aggregator's TLS files."""

    ROLE: ClassVar[str] = "aggregator"
    FIX: ClassVar[str] = "run `fx aggregator certify`"

    def credentials(self) -> grpc.ServerCredentials:
        """Server credentials that require and verify a client certificate."""
        material = self.load()
        return grpc.ssl_server_credentials(
            [(material.key, material.cert)],
            root_certificates=material.chain,
            require_client_auth=True,
        )


@dataclass(frozen=True)
class ClientTLS(_TLSFiles):
    """A collaborator's TLS files."""

    ROLE: ClassVar[str] = "collaborator"
    FIX: ClassVar[str] = "run `fx collaborator generate-cert-request` and have the CA sign it"

    def credentials(self) -> grpc.ChannelCredentials:
        """Channel credentials presenting this collaborator's certificate."""
        material = self.load()
        return grpc.ssl_channel_credentials(
            root_certificates=material.chain,
            private_key=material.key,
            certificate_chain=material.cert,
        )

    def server_certificate(self, host: str, port: int, timeout: float) -> bytes:
        """The DER certificate the server at ``host:port`` presents, from a mutual-TLS handshake of our own.

        gRPC's Python client does not expose the server's certificate, so this opens one
        TLS connection with the same trust anchor (the chain), the same client certificate
        and host-name check, reads the certificate and closes it. gRPC's channel makes its
        own connection: a check made here covers the server reached here (see
        docs/operator-guide.md).
        """
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_verify_locations(cafile=os.fspath(self.chain_path))
        context.load_cert_chain(os.fspath(self.cert_path), os.fspath(self.key_path))
        context.set_alpn_protocols(["h2"])
        with socket.create_connection((host, port), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=host) as tls:
                der = tls.getpeercert(binary_form=True)
        if not der:
            raise ssl.SSLError(f"the server at {host}:{port} presented no certificate")
        return der
