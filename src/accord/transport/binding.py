"""Where the aggregator listens: every address of its name, each bound exclusively, or none.

A second aggregator must not share the port (gRPC is given ``grpc.so_reuseport`` 0), and a
name like ``localhost`` that resolves to 127.0.0.1 and ::1 must be bound on both, or a
process holding the other could answer the collaborators in the aggregator's place.
"""

from __future__ import annotations

import errno
import logging
import socket

import grpc

from accord.errors import AccordError

logger = logging.getLogger("accord.transport")


def bind_addresses(host: str, port: int) -> list[str]:
    """Each address of this machine that ``host`` resolves to, as gRPC writes it (IPv6 in brackets).

    An address that is not this machine's (``::1`` where IPv6 is off) is left out: nothing can
    listen there. Every other one must be free on ``port`` (AccordError naming it otherwise),
    checked before gRPC binds any, so that a failed start leaves nothing bound.
    """
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise AccordError(
            f"the aggregator cannot listen on {host!r}: the name does not resolve ({exc})",
            "set `network.settings.agg_addr` in the plan to this machine's name or address",
        ) from None
    addresses: list[str] = []
    for family, _, _, _, sockaddr in infos:
        address = f"[{sockaddr[0]}]" if family == socket.AF_INET6 else str(sockaddr[0])
        try:
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds: a closed socket's TIME_WAIT is no owner
                probe.bind((sockaddr[0], port))
        except OSError as exc:
            if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                logger.info("not listening on %s (from %r): not an address of this machine", sockaddr[0], host)
                continue
            raise cannot_listen(f"{address}:{port}", host, exc) from None
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise AccordError(
            f"the aggregator cannot listen on {host!r}: none of its addresses is this machine's",
            "set `network.settings.agg_addr` in the plan to this machine's name or address",
        )
    return addresses


def cannot_listen(address: str, host: str, error: BaseException | None) -> AccordError:
    """The error of a start that cannot listen on ``address``, with what to do."""
    return AccordError(
        f"the aggregator cannot listen on {address} (from `network.settings.agg_addr` {host!r})"
        + (f": {error}" if error else "")
        + ": another process (another aggregator?) holds the port, or the address is not this machine's",
        "stop the other process, or change `network.settings.agg_port` (or agg_addr) in the plan",
    )


def bind(server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials, host: str) -> int:
    """Bind ``address`` (from ``host``) on ``server``; the bound port, or an AccordError naming it."""
    try:
        bound, error = server.add_secure_port(address, credentials), None
    except RuntimeError as exc:
        bound, error = 0, exc
    if not bound:
        raise cannot_listen(address, host, error)
    return bound
