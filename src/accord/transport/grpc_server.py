"""The aggregator's gRPC server: mutual TLS, on an asyncio event loop of its own.

An asyncio server (grpc.aio) on its own event loop in one thread, so that a waiting call
(a long poll, a stalled stream, a slow reader) costs no thread; the calls themselves are
servicer.py's (identity checked on arrival, bounded calls).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

import grpc

from accord.plan.compression import NO_COMPRESSION, CompressionSettings
from accord.transport import wire
from accord.transport.admission import CallLimits, Revoked
from accord.transport.base import AggregatorService
from accord.transport.binding import bind, bind_addresses
from accord.transport.heap import keep_message_pages
from accord.transport.servicer import SERVICE, Servicer, method_handlers
from accord.transport.tls import ServerTLS
from accord.transport.traffic import Traffic

logger = logging.getLogger("accord.transport")

#: HTTP/2 streams one connection may have open at once (a site needs two; the rest wait at the caller)
MAX_STREAMS_PER_CONNECTION = 100

__all__ = ["SERVICE", "GrpcAggregatorServer"]


async def _cancel_other_tasks() -> None:
    """Cancel every task of the running loop but this one, and wait for them to end."""
    tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class GrpcAggregatorServer:
    """Serves an AggregatorService over gRPC with mutual TLS (there is no insecure mode).

    ``on_refusal`` is called with the reason of every refused or cut call. ``revoked``
    returns the serials refused right now; it is called on every RPC as it arrives, so a
    revocation takes effect without a restart. ``max_workers`` bounds the threads that run
    the service's blocking calls; waiting calls hold none. ``limits`` bound each call and
    the calls in progress. ``max_upload_seconds``, when set, refuses an upload whose
    deadline is missing or later. ``compression`` is the plan's pipeline: the encoding of
    downloads, and what uploads may be encoded in. ``traffic`` counts the bytes of every message
    received and sent (transport/traffic.py). The port is bound exclusively (no SO_REUSEPORT) on every
    address ``host`` resolves to, or not at all.
    """

    def __init__(
        self,
        service: AggregatorService,
        host: str,
        port: int,
        tls: ServerTLS,
        chunk_bytes: int = wire.DEFAULT_CHUNK_BYTES,
        long_poll_seconds: float = 30.0,
        max_workers: int = 32,
        max_update_bytes: int | None = None,
        on_refusal: Callable[[str], None] | None = None,
        revoked: Revoked | None = None,
        max_upload_seconds: float | None = None,
        limits: CallLimits = CallLimits(),
        compression: CompressionSettings = NO_COMPRESSION,
        traffic: Traffic | None = None,
    ) -> None:
        self._service = service
        self.traffic = traffic or Traffic()
        self._host = host
        self._port = port
        self._tls = tls
        self._chunk_bytes = chunk_bytes
        self._limits = limits
        self._servicer_args = (
            service, chunk_bytes, long_poll_seconds, max_update_bytes, on_refusal, revoked, max_upload_seconds, limits, max_workers,
            compression,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: grpc.aio.Server | None = None
        self._servicer: Servicer | None = None
        self._unwatch: Callable[[], None] | None = None

    def start(self) -> int:
        """Bind and start serving; returns the bound port (``port=0`` picks a free one)."""
        if self._loop is not None:
            raise RuntimeError("server already started")
        keep_message_pages()  # each received chunk reuses freed pages (transport/heap.py)
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="accord-grpc", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            self._port = asyncio.run_coroutine_threadsafe(self._start(), loop).result()
        except BaseException:
            self.stop(0)
            raise
        logger.info("aggregator listening on %s:%d (mutual TLS)", self._host, self._port)
        return self._port

    async def _start(self) -> int:
        servicer = self._servicer = Servicer(*self._servicer_args)
        limits = self._limits
        server = self._server = grpc.aio.server(options=server_options(self._chunk_bytes, limits.max_concurrent_calls))
        handlers = method_handlers(servicer, self.traffic)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        server.add_registered_method_handlers(SERVICE, handlers)
        credentials = self._tls.credentials()
        port = self._port
        for address in bind_addresses(self._host, port):
            port = bind(server, f"{address}:{port}", credentials, self._host)
        loop = asyncio.get_running_loop()

        def wake() -> None:
            loop.call_soon_threadsafe(servicer.wake)

        self._unwatch = self._service.watch(wake)
        await server.start()
        return port

    @property
    def port(self) -> int:
        return self._port

    @property
    def calls_in_progress(self) -> int:
        """Calls admitted and not yet ended (a reading for tests and operators)."""
        return 0 if self._servicer is None else self._servicer.calls_in_progress

    def stop(self, grace: float | None = None) -> None:
        """Stop serving; in-flight RPCs get ``grace`` seconds, then are cancelled."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._loop = self._thread = None
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.stop(grace), loop).result()
            self._server = None
        # a call gRPC left running ends here, so that every upload slot it holds is released
        asyncio.run_coroutine_threadsafe(_cancel_other_tasks(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
        if self._servicer is not None:
            self._servicer.shutdown()
            self._servicer = None


def server_options(chunk_bytes: int, max_concurrent_calls: int) -> list[tuple[str, Any]]:
    """The aggregator's gRPC server options (bench/_grpc_floor.py serves its bare baseline with them)."""
    return [
        *wire.channel_options(chunk_bytes),
        ("grpc.so_reuseport", 0),  # a second aggregator on the port fails to bind
        ("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONNECTION),
        # no BDP probing: a stream's receive window stays at its initial 64 KiB unless a
        # read is pending (then it grows to the message being read), so an upload waiting
        # for a slot holds ~1-2 MB inside gRPC, not a window grown to 8-18 MB (failure-model.md)
        ("grpc.http2.bdp_probe", 0),
        # calls not yet taken by a handler; past the soft limit gRPC cancels some at random
        # (its default, 1000, cancels honest calls when a thousand sites long-poll)
        ("grpc.server.max_pending_requests", max_concurrent_calls),
        ("grpc.server.max_pending_requests_hard_limit", 2 * max_concurrent_calls),
    ]
