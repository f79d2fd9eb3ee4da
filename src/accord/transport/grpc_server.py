"""The aggregator's gRPC server: mutual TLS, identity checked on arrival, bounded calls.

An asyncio server (grpc.aio) on its own event loop in one thread, so that a waiting call
(a long poll, a stalled stream, a slow reader) costs no thread. Every RPC first takes the
caller's identity from its TLS certificate (revocation, kind, plan membership) and counts
it against the per-identity and total call limits, before reading any message; each
message must then come within a bound (network.settings). The AggregatorService's
blocking methods run on a small bounded executor; the service then sees only the
authenticated name.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import secrets
import threading
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc

from accord.errors import AccordError, RefusedError
from accord.messages import TaskAssignment
from accord.plan.compression import NO_COMPRESSION, CompressionSettings
from accord.tensors.compression import lossless
from accord.transport import chunk_views, wire
from accord.transport.admission import Admission, CallLimits, RepeatFilter, Revoked, check_claim, peer_name
from accord.transport.base import AggregatorService
from accord.transport.binding import bind, bind_addresses
from accord.transport.long_poll import LongPoll
from accord.transport.malloc_tuning import keep_message_buffers
from accord.transport.proto import accord_pb2 as pb
from accord.transport.streams import Stalled, read_within
from accord.transport.tls import ServerTLS
from accord.transport.traffic import Traffic
from accord.transport.uploads import Uploads

logger = logging.getLogger("accord.transport")

T = TypeVar("T")
Handler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]

#: a refusal's reason is cut to this many characters (gRPC's status trailer holds ~16 KiB)
MAX_REASON_CHARS = 1024
SERVICE = "accord.v1.Aggregator"
#: HTTP/2 streams one connection may have open at once (a site needs two; the rest wait at the caller)
MAX_STREAMS_PER_CONNECTION = 100

_STATUS_FOR_KIND = {
    "identity": grpc.StatusCode.PERMISSION_DENIED,
    "plan": grpc.StatusCode.FAILED_PRECONDITION,
    "payload": grpc.StatusCode.INVALID_ARGUMENT,
    "state": grpc.StatusCode.FAILED_PRECONDITION,
    "busy": grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def _method_handlers(servicer: _Servicer, traffic: Traffic) -> dict[str, grpc.RpcMethodHandler]:
    """The accord.v1.Aggregator methods, with lenient deserializers; ``traffic`` counts every
    message's bytes.

    Every method is served as a client stream (the wire is the same as for a unary call),
    so that the caller is identified and admitted before its request is read.
    """
    read, write = traffic.reader, traffic.writer
    return {
        "Join": grpc.stream_unary_rpc_method_handler(
            servicer.rpc("join", servicer.join), read(wire.lenient(pb.JoinRequest)), write(pb.JoinResponse.SerializeToString)
        ),
        "GetTasks": grpc.stream_unary_rpc_method_handler(
            servicer.rpc("get_tasks", servicer.get_tasks),
            read(wire.lenient(pb.TasksRequest)),
            write(pb.TasksResponse.SerializeToString),
        ),
        "GetModel": grpc.stream_stream_rpc_method_handler(
            servicer.rpc("get_model", servicer.get_model), read(wire.lenient(pb.ModelRequest)), write(wire.serialize)
        ),
        "SendResult": grpc.stream_unary_rpc_method_handler(
            servicer.rpc("send_result", servicer.send_result), read(chunk_views.result_chunk), write(pb.ResultAck.SerializeToString)
        ),
    }


class _Servicer:
    """Implements the accord.v1.Aggregator RPCs over an AggregatorService; runs on one event loop."""

    def __init__(
        self,
        service: AggregatorService,
        chunk_bytes: int,
        long_poll_seconds: float,
        max_update_bytes: int | None,
        on_refusal: Callable[[str], None] | None,
        revoked: Revoked | None,
        max_upload_seconds: float | None,
        limits: CallLimits,
        workers: int,
        compression: CompressionSettings,
    ) -> None:
        self._service = service
        self._compression = compression
        self._revoked = revoked
        self._chunk_bytes = chunk_bytes
        self._long_poll_seconds = long_poll_seconds
        self._on_refusal = on_refusal
        self._limits = limits
        self._admission = Admission(limits)
        self._repeats = RepeatFilter()
        self._executor = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="accord-rpc")
        self._long_poll = LongPoll()
        self._uploads = Uploads(service, self._executor, limits, max_update_bytes, max_upload_seconds, compression, chunk_bytes)

    @property
    def calls_in_progress(self) -> int:
        return self._admission.in_progress

    def wake(self) -> None:
        """A round opened or the federation ended: every waiting long poll looks again (on the loop)."""
        self._long_poll.wake()

    def shutdown(self) -> None:
        """End the blocking work: queued jobs are dropped, running ones end (each submit releases its slot first)."""
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._uploads.shutdown()

    # -- the frame of every call -------------------------------------------------------

    def rpc(self, what: str, body: Callable[[str, grpc.aio.ServicerContext], Awaitable[T]]) -> Handler:
        """``body`` behind the checks on arrival; its refusals and failures end the call with a fitting status."""

        async def handler(_requests: Any, context: grpc.aio.ServicerContext) -> T:
            name: str | None = None
            try:
                name = self._identify(context)
                self._admission.enter(name)
            except RefusedError as exc:
                await self._refuse(context, _who(context, name), exc)
            try:
                return await body(name, context)
            except RefusedError as exc:
                await self._refuse(context, name, exc)
            except Stalled as exc:
                await self._end(context, name, grpc.StatusCode.DEADLINE_EXCEEDED, f"{what} cut: {exc}")
            except grpc.aio.AbortError:
                raise
            except asyncio.CancelledError:
                logger.info("%s from %s broke off (the caller cancelled, or the server stops); nothing was kept", what, name)
                raise
            except Exception as exc:
                await _fail(context, what, name, exc)
            finally:
                self._admission.leave(name)
            raise AssertionError("unreachable")  # every branch above returns or aborts

        return handler

    def _identify(self, context: grpc.aio.ServicerContext) -> str:
        """The caller's certificate name, refused unless it is a current collaborator of the plan."""
        name = peer_name(context.auth_context(), self._revoked)
        self._service.check_member(name)
        return name

    async def _refuse(self, context: grpc.aio.ServicerContext, who: str, error: RefusedError) -> NoReturn:
        """Log, report and end the RPC with the status matching the refusal's kind."""
        reason = str(error)  # the message, and its fix when there is one
        if len(reason) > MAX_REASON_CHARS:
            reason = reason[: MAX_REASON_CHARS - 15] + " ... (cut short)"
        await self._end(context, who, _STATUS_FOR_KIND[error.kind], reason, error.kind)

    async def _end(
        self,
        context: grpc.aio.ServicerContext,
        who: str,
        code: grpc.StatusCode,
        reason: str,
        kind: str | None = None,
    ) -> NoReturn:
        """Log and report the refusal, and end the call with ``code`` (and the refusal kind in trailing metadata).

        A refusal repeated by the same caller is logged once per REPEAT_LOG_SECONDS, with the count left out.
        """
        quiet = self._repeats.admit(who, reason)
        if quiet is not None:
            logger.warning("refused %s: %s%s", who, reason, f" ({quiet} more such refusals not logged)" if quiet else "")
        if self._on_refusal is not None:
            try:
                self._on_refusal(reason)
            except Exception:  # a faulty hook must not turn a refusal into a crash
                logger.exception("on_refusal hook failed")
        await context.abort(code, reason, ((wire.REFUSAL_KIND_KEY, kind),) if kind else ())
        raise AssertionError("unreachable")  # context.abort raises

    async def _read(self, context: grpc.aio.ServicerContext) -> Any:
        """A call's first (or, for a unary call, closing) message, within first_message_seconds."""
        seconds = self._limits.first_message_seconds
        return await read_within(context, seconds, f"no message within {seconds:g} s (network.settings.first_message_seconds)")

    async def _request(self, context: grpc.aio.ServicerContext, name: str) -> Any:
        """The request of a unary call, whose header must name the certificate's owner."""
        request = await self._read(context)
        if request is None:
            raise RefusedError("the call carries no request", kind="payload")
        check_claim(request.header.sender, name)
        if await self._read(context) is not None:  # the end of the stream comes with the request
            raise RefusedError("the call carries more than one request", kind="payload")
        return request

    def _blocking(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        """``fn()`` on the bounded executor (it may wait on the runtime's lock or write to disk)."""
        return asyncio.get_running_loop().run_in_executor(self._executor, fn)

    # -- RPCs ----------------------------------------------------------------------------

    async def join(self, name: str, context: grpc.aio.ServicerContext) -> pb.JoinResponse:
        request = await self._request(context, name)
        header = request.header
        info = await self._blocking(lambda: self._service.join(name, header.plan_hash, header.workspace_hash))
        return wire.info_to_pb(info)

    async def get_tasks(self, name: str, context: grpc.aio.ServicerContext) -> pb.TasksResponse:
        """A long poll that holds no thread: it looks again only when the runtime says a round opened."""
        request = await self._request(context, name)
        plan_hash = request.header.plan_hash

        def look(final: bool) -> Awaitable[TaskAssignment | None]:
            return self._blocking(functools.partial(self._service.poll_tasks, name, plan_hash, final))

        return wire.assignment_to_pb(await self._long_poll.wait(look, self._long_poll_seconds))

    async def get_model(self, name: str, context: grpc.aio.ServicerContext) -> None:
        """Stream the model; a reader that takes no chunk for chunk_idle_seconds is cut."""
        request = await self._request(context, name)
        state = await self._blocking(lambda: self._service.get_model(name, request.header.plan_hash, request.round_number))
        seconds = self._limits.chunk_idle_seconds
        encoded = lossless(state, self._compression) if self._compression.download_encoding else None
        for chunk in wire.encoded_tensor_chunks(state, self._chunk_bytes, encoded=encoded):
            try:
                async with asyncio.timeout(seconds):
                    await context.write(chunk)
            except TimeoutError:
                raise Stalled(f"the reader took no chunk for {seconds:g} s (network.settings.chunk_idle_seconds)") from None

    async def send_result(self, name: str, context: grpc.aio.ServicerContext) -> pb.ResultAck:
        await self._uploads.receive(name, context, await self._read(context))
        return pb.ResultAck(accepted=True)


async def _fail(context: grpc.aio.ServicerContext, what: str, name: str, error: Exception) -> NoReturn:
    """End a call the aggregator failed: the detail (paths, state) stays in its log, the site gets an incident id."""
    incident = secrets.token_hex(4)
    if isinstance(error, AccordError):
        logger.error("%s for %s failed (incident %s): %s", what, name, incident, error)
    else:
        logger.exception("%s for %s failed (incident %s)", what, name, incident)
    reason = f"the aggregator failed during {what} (incident {incident}); its operator finds the cause in the aggregator log"
    await context.abort(grpc.StatusCode.INTERNAL, reason)
    raise AssertionError("unreachable")  # context.abort raises


async def _cancel_other_tasks() -> None:
    """Cancel every task of the running loop but this one, and wait for them to end."""
    tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _who(context: grpc.aio.ServicerContext, name: str | None) -> str:
    """The caller as a log line names it: its certificate name, else its address."""
    if name is not None:
        return name
    names = list(context.auth_context().get("x509_common_name") or [])
    return repr(names[0].decode("utf-8", "replace"))[1:-1][:64] if names else f"{context.peer()} (no common name)"


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
        self._servicer: _Servicer | None = None
        self._unwatch: Callable[[], None] | None = None

    def start(self) -> int:
        """Bind and start serving; returns the bound port (``port=0`` picks a free one)."""
        if self._loop is not None:
            raise RuntimeError("server already started")
        keep_message_buffers(wire.max_message_bytes(self._chunk_bytes))
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
        servicer = self._servicer = _Servicer(*self._servicer_args)
        limits = self._limits
        server = self._server = grpc.aio.server(
            options=[
                *wire.channel_options(self._chunk_bytes),
                ("grpc.so_reuseport", 0),  # a second aggregator on the port fails to bind
                ("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONNECTION),
                # no BDP probing: a stream's receive window stays at its initial 64 KiB unless a
                # read is pending (then it grows to the message being read), so an upload waiting
                # for a slot holds ~1-2 MB inside gRPC, not a window grown to 8-18 MB (failure-model.md)
                ("grpc.http2.bdp_probe", 0),
                # calls not yet taken by a handler; past the soft limit gRPC cancels some at random
                # (its default, 1000, cancels honest calls when a thousand sites long-poll)
                ("grpc.server.max_pending_requests", limits.max_concurrent_calls),
                ("grpc.server.max_pending_requests_hard_limit", 2 * limits.max_concurrent_calls),
            ]
        )
        handlers = _method_handlers(servicer, self.traffic)
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
