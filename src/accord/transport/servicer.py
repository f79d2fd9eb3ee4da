"""The accord.v1.Aggregator RPCs: each call's frame (identity from its TLS certificate,
admission, refusals and failures ended with a fitting status) and the four method bodies.

Every RPC first takes the caller's identity from its TLS certificate (revocation, kind, plan
membership) and counts it against the per-identity and total call limits, before reading
any message; each message must then come within a bound (network.settings). The
AggregatorService's blocking methods run on a small bounded executor; the service then sees
only the authenticated name. Runs on the server's event loop (grpc_server.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc

from accord.errors import AccordError, RefusedError
from accord.messages import TaskAssignment
from accord.plan.compression import CompressionSettings
from accord.tensors.compression import lossless
from accord.transport import chunk_views, wire
from accord.transport.admission import Admission, CallLimits, RepeatFilter, Revoked, check_claim, peer_name
from accord.transport.base import AggregatorService
from accord.transport.long_poll import LongPoll
from accord.transport.proto import accord_pb2 as pb
from accord.transport.streams import Stalled, read_within
from accord.transport.traffic import Traffic
from accord.transport.uploads import Uploads

logger = logging.getLogger("accord.transport")

T = TypeVar("T")
Handler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]

#: a refusal's reason is cut to this many characters (gRPC's status trailer holds ~16 KiB)
MAX_REASON_CHARS = 1024
SERVICE = "accord.v1.Aggregator"
#: HTTP/2 streams one connection may have open at once (a site needs two; the rest wait at the caller)
_STATUS_FOR_KIND = {
    "identity": grpc.StatusCode.PERMISSION_DENIED,
    "plan": grpc.StatusCode.FAILED_PRECONDITION,
    "payload": grpc.StatusCode.INVALID_ARGUMENT,
    "state": grpc.StatusCode.FAILED_PRECONDITION,
    "busy": grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def method_handlers(servicer: Servicer, traffic: Traffic) -> dict[str, grpc.RpcMethodHandler]:
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


class Servicer:
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


def _who(context: grpc.aio.ServicerContext, name: str | None) -> str:
    """The caller as a log line names it: its certificate name, else its address."""
    if name is not None:
        return name
    names = list(context.auth_context().get("x509_common_name") or [])
    return repr(names[0].decode("utf-8", "replace"))[1:-1][:64] if names else f"{context.peer()} (no common name)"


