"""Transports between collaborators and the aggregator: gRPC over mutual TLS, and in-process.

The classes are imported lazily so that ``accord.transport.base`` does not pull in gRPC.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "GrpcAggregatorServer": "accord.transport.grpc_server",
    "GrpcAggregatorClient": "accord.transport.grpc_client",
    "InProcessClient": "accord.transport.inprocess",
    "ServerTLS": "accord.transport.tls",
    "ClientTLS": "accord.transport.tls",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
