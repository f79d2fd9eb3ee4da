"""The aggregator's gRPC server: mutual TLS, identity checks, chunked tensor streams.

A thin adapter over an AggregatorService. Every RPC first checks that the caller's
certificate is not revoked and that the claimed sender equals its common name; the
service then sees only the authenticated name.
"""

from __future__ import annotations

import functools
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import AbstractSet, Any, Callable, Iterator, NoReturn, TypeVar

import grpc
from cryptography import x509
from google.protobuf.message import DecodeError, Message

from accord.errors import AccordError, RefusedError
from accord.pki.install import renew_fix
from accord.transport import wire
from accord.transport.base import AggregatorService
from accord.transport.proto import accord_pb2 as pb
from accord.transport.proto import accord_pb2_grpc as pb_grpc
from accord.transport.tls import ServerTLS
from accord.tensors.codec import TensorAssembler

logger = logging.getLogger("accord.transport")

T = TypeVar("T")

Revoked = Callable[[], AbstractSet[int]]

#: a refusal's reason is cut to this many characters (gRPC's status trailer holds ~16 KiB)
MAX_REASON_CHARS = 1024
#: how long a second upload from one collaborator waits for its first to end
UPLOAD_WAIT_SECONDS = 60.0
SERVICE = "accord.v1.Aggregator"

_STATUS_FOR_KIND = {
    "identity": grpc.StatusCode.PERMISSION_DENIED,
    "plan": grpc.StatusCode.FAILED_PRECONDITION,
    "payload": grpc.StatusCode.INVALID_ARGUMENT,
    "state": grpc.StatusCode.FAILED_PRECONDITION,
    "busy": grpc.StatusCode.RESOURCE_EXHAUSTED,
}


class _Undecodable:
    """Stands for a request body that is not the expected protobuf message."""

    def __init__(self, expected: str, error: str) -> None:
        self.expected = expected
        self.error = error

    def refusal(self) -> RefusedError:
        return RefusedError(f"the request is not a valid accord.v1.{self.expected}: {self.error[:200]}", kind="payload")


def _lenient(message: type[Message]) -> Callable[[bytes], Any]:
    """A deserializer that returns _Undecodable instead of raising.

    When a deserializer raises, grpcio's server aborts the call twice and never frees it
    (about 16 KB per bad body): a collaborator could grow the aggregator's memory at will.
    """

    def parse(data: bytes) -> Any:
        try:
            return message.FromString(data)
        except DecodeError as exc:
            return _Undecodable(message.DESCRIPTOR.name, str(exc))

    return parse


def _method_handlers(servicer: "_Servicer") -> dict[str, grpc.RpcMethodHandler]:
    """The accord.v1.Aggregator methods, with lenient deserializers."""
    return {
        "Join": grpc.unary_unary_rpc_method_handler(
            servicer.Join, _lenient(pb.JoinRequest), pb.JoinResponse.SerializeToString
        ),
        "GetTasks": grpc.unary_unary_rpc_method_handler(
            servicer.GetTasks, _lenient(pb.TasksRequest), pb.TasksResponse.SerializeToString
        ),
        "GetModel": grpc.unary_stream_rpc_method_handler(
            servicer.GetModel, _lenient(pb.ModelRequest), pb.TensorChunk.SerializeToString
        ),
        "SendResult": grpc.stream_unary_rpc_method_handler(
            servicer.SendResult, _lenient(pb.ResultChunk), pb.ResultAck.SerializeToString
        ),
    }


class _Servicer(pb_grpc.AggregatorServicer):
    """Implements the accord.v1.Aggregator RPCs over an AggregatorService."""

    def __init__(
        self,
        service: AggregatorService,
        chunk_bytes: int,
        long_poll_seconds: float,
        max_update_bytes: int | None,
        on_refusal: Callable[[str], None] | None,
        revoked: Revoked | None = None,
        max_upload_seconds: float | None = None,
    ) -> None:
        self._service = service
        self._revoked = revoked
        self._max_upload_seconds = max_upload_seconds
        self._chunk_bytes = chunk_bytes
        self._long_poll = long_poll_seconds
        self._max_update_bytes = max_update_bytes
        self._on_refusal = on_refusal
        self._uploading: dict[str, threading.Lock] = {}
        self._uploading_guard = threading.Lock()

    # -- helpers -------------------------------------------------------------------------

    def _refuse(self, context: grpc.ServicerContext, who: str, error: RefusedError) -> NoReturn:
        """Log, report and end the RPC with the status matching the refusal's kind."""
        reason = str(error)  # the message, and its fix when there is one
        if len(reason) > MAX_REASON_CHARS:
            reason = reason[: MAX_REASON_CHARS - 15] + " ... (cut short)"
        logger.warning("refused %s: %s", who, reason)
        if self._on_refusal is not None:
            try:
                self._on_refusal(reason)
            except Exception:  # a faulty hook must not turn a refusal into a crash
                logger.exception("on_refusal hook failed")
        context.set_trailing_metadata(((wire.REFUSAL_KIND_KEY, error.kind),))
        context.abort(_STATUS_FOR_KIND[error.kind], reason)
        raise AssertionError("unreachable")  # context.abort raises

    def _decoded(self, request: Any, context: grpc.ServicerContext) -> Any:
        """``request``, unless its body did not decode: then the RPC is refused."""
        if isinstance(request, _Undecodable):
            self._refuse(context, context.peer(), request.refusal())
        return request

    def _authenticate(self, header: pb.Header, context: grpc.ServicerContext) -> str:
        """The caller's certificate common name, refused unless it equals ``header.sender``."""
        claimed = header.sender
        names = context.auth_context().get("x509_common_name") or []
        common_name = names[0].decode("utf-8", "replace") if names else None
        if common_name == claimed and claimed:
            self._check_certificate(claimed, context)
            return claimed
        if common_name is None:
            reason = f"the connection presents no certificate common name (claimed collaborator {claimed[:64]!r})"
        else:
            reason = f"certificate common name {common_name!r} does not match claimed collaborator {claimed[:64]!r}"
        who = f"{context.peer()} ({common_name or 'no common name'})"
        self._refuse(context, who, RefusedError(reason, kind="identity"))

    def _check_certificate(self, name: str, context: grpc.ServicerContext) -> None:
        """Refuse a caller whose certificate is not a collaborator's, or is revoked now."""
        pems = context.auth_context().get("x509_pem_cert") or []
        peer = _peer_of(pems[0]) if pems else None
        if peer is None:
            reason = f"the certificate of {name!r} cannot be read to check its kind and revocation"
            self._refuse(context, name, RefusedError(reason, kind="identity"))
        serial, server_cert = peer
        if server_cert:
            reason = f"{name!r} presents a server (aggregator) certificate; only collaborator certificates may call"
            self._refuse(context, name, RefusedError(reason, kind="identity"))
        if self._revoked is not None and serial in self._revoked():
            reason = f"the certificate of {name!r} (serial {serial:x}) has been revoked by the federation's CA"
            self._refuse(context, name, RefusedError(reason, renew_fix("collaborator", name), kind="identity"))

    def _call(self, context: grpc.ServicerContext, name: str, what: str, fn: Callable[[], T]) -> T:
        """Run ``fn``; a RefusedError or failure ends the RPC with a fitting status."""
        try:
            return fn()
        except RefusedError as exc:
            refusal = exc
        except grpc.RpcError:
            logger.info("%s from %s broke off; nothing was kept", what, name)
            raise
        except AccordError as exc:
            logger.error("%s for %s failed: %s", what, name, exc)
            context.abort(grpc.StatusCode.INTERNAL, f"the aggregator failed during {what}: {exc}")
        except Exception:
            logger.exception("%s for %s failed", what, name)
            context.abort(grpc.StatusCode.INTERNAL, f"internal aggregator error during {what}; see the aggregator log")
        self._refuse(context, name, refusal)

    # -- RPCs ----------------------------------------------------------------------------

    def Join(self, request: pb.JoinRequest, context: grpc.ServicerContext) -> pb.JoinResponse:
        name = self._authenticate(self._decoded(request, context).header, context)
        info = self._call(context, name, "join", lambda: self._service.join(name, request.header.plan_hash, request.header.workspace_hash))
        return wire.info_to_pb(info)

    def GetTasks(self, request: pb.TasksRequest, context: grpc.ServicerContext) -> pb.TasksResponse:
        name = self._authenticate(self._decoded(request, context).header, context)
        assignment = self._call(
            context,
            name,
            "get_tasks",
            lambda: self._service.get_tasks(name, request.header.plan_hash, timeout=self._long_poll),
        )
        return wire.assignment_to_pb(assignment)

    def GetModel(self, request: pb.ModelRequest, context: grpc.ServicerContext) -> Iterator[pb.TensorChunk]:
        name = self._authenticate(self._decoded(request, context).header, context)
        state = self._call(
            context,
            name,
            "get_model",
            lambda: self._service.get_model(name, request.header.plan_hash, request.round_number),
        )
        yield from wire.tensor_pb_chunks(state, self._chunk_bytes)

    def SendResult(self, request_iterator: Iterator[pb.ResultChunk], context: grpc.ServicerContext) -> pb.ResultAck:
        first = self._decoded(next(request_iterator, None), context)
        if first is None or first.WhichOneof("part") != "header":
            self._refuse(
                context,
                context.peer(),
                RefusedError("a result stream must start with its header", kind="payload"),
            )
        head = first.header
        name = self._authenticate(head.header, context)
        self._check_deadline(name, context)
        self._call(context, name, "send_result", lambda: self._receive_one(name, head, request_iterator))
        return pb.ResultAck(accepted=True)

    def _check_deadline(self, name: str, context: grpc.ServicerContext) -> None:
        """Refuse an upload whose deadline is missing or later than allowed (it could hold a slot for ever)."""
        limit = self._max_upload_seconds
        remaining = context.time_remaining()
        if limit is None or (remaining is not None and remaining <= limit + 60.0):  # gRPC adds a few s
            return
        has = "none" if remaining is None else f"{remaining:.0f} s"
        reason = f"an upload must carry a deadline of at most {limit:g} s (network.settings.transfer_timeout_seconds); this one has {has}"
        self._refuse(context, name, RefusedError(reason, kind="payload"))

    def _receive_one(self, name: str, head: pb.ResultHeader, chunks: Iterator[pb.ResultChunk]) -> None:
        """One upload per collaborator at a time: a stalled stream holds at most one upload slot."""
        with self._uploading_guard:
            lock = self._uploading.setdefault(name, threading.Lock())
        if not lock.acquire(timeout=UPLOAD_WAIT_SECONDS):
            raise RefusedError(
                f"an earlier upload from {name} is still in progress after {UPLOAD_WAIT_SECONDS:g} s",
                "send results one at a time",
                kind="state",
            )
        try:
            self._receive(name, head, chunks)
        finally:
            lock.release()

    def _receive(self, name: str, head: pb.ResultHeader, chunks: Iterator[pb.ResultChunk]) -> None:
        """Assemble the tensors inside an upload slot, then submit the whole result."""
        self._service.expect(name, head.header.plan_hash, head.round_number, head.task, head.model_digest, head.failure)
        with self._service.upload_slot():
            expected = self._service.expected_tensors()
            limit = wire.upload_limit(expected, self._max_update_bytes)
            assembler = TensorAssembler(expected, max_total_bytes=limit)
            for message in chunks:
                if isinstance(message, _Undecodable):
                    raise message.refusal()
                if message.WhichOneof("part") != "tensor":
                    raise RefusedError("a result stream holds one header, then only tensor chunks", kind="payload")
                t = message.tensor
                assembler.add(t.name, t.dtype, tuple(t.shape), t.offset, t.data)
                if len(assembler) > head.tensor_count:
                    raise RefusedError(
                        f"more tensors arrived than the {head.tensor_count} the result header announces",
                        kind="payload",
                    )
            result = wire.result_from_pb(name, head, assembler.finish())
            self._service.submit(result, head.header.plan_hash)
        logger.debug("result of %s for round %d received from %s", head.task, head.round_number, name)


@functools.lru_cache(maxsize=1024)
def _peer_of(pem: bytes) -> tuple[int, bool] | None:
    """(serial, is a server certificate) of a peer's PEM certificate, parsed once per certificate."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return None
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return cert.serial_number, False
    return cert.serial_number, x509.oid.ExtendedKeyUsageOID.SERVER_AUTH in usages


class GrpcAggregatorServer:
    """Serves an AggregatorService over gRPC with mutual TLS (there is no insecure mode).

    ``on_refusal`` is called with the reason of every refused request (identity, plan
    hash or payload), e.g. to count them. ``revoked`` returns the serials refused right
    now; it is called on every RPC, so a revocation takes effect without a restart.
    ``max_workers`` bounds concurrent RPCs, long polls included: give it more than the
    number of collaborators. ``max_upload_seconds``, when set, refuses an upload whose
    deadline is missing or later, so a stalled stream cannot hold an upload slot for ever.
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
    ) -> None:
        self._host = host
        self._port = port
        self._tls = tls
        self._chunk_bytes = chunk_bytes
        self._max_workers = max_workers
        self._servicer = _Servicer(
            service, chunk_bytes, long_poll_seconds, max_update_bytes, on_refusal, revoked, max_upload_seconds
        )
        self._server: grpc.Server | None = None

    def start(self) -> int:
        """Bind and start serving; returns the bound port (``port=0`` picks a free one)."""
        if self._server is not None:
            raise RuntimeError("server already started")
        credentials = self._tls.credentials()
        server = grpc.server(
            ThreadPoolExecutor(max_workers=self._max_workers, thread_name_prefix="accord-rpc"),
            options=wire.channel_options(self._chunk_bytes),
        )
        handlers = _method_handlers(self._servicer)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        server.add_registered_method_handlers(SERVICE, handlers)
        address = f"[{self._host}]:{self._port}" if ":" in self._host else f"{self._host}:{self._port}"
        try:
            bound = server.add_secure_port(address, credentials)
        except RuntimeError as exc:
            bound, error = 0, exc
        else:
            error = None
        if not bound:
            raise AccordError(
                f"the aggregator cannot listen on {address}" + (f": {error}" if error else ""),
                "free the port or change `network.settings.agg_port` in the plan",
            )
        server.start()
        self._server = server
        self._port = bound
        logger.info("aggregator listening on %s:%d (mutual TLS)", self._host, bound)
        return bound

    @property
    def port(self) -> int:
        return self._port

    def stop(self, grace: float | None = None) -> None:
        """Stop serving; in-flight RPCs get ``grace`` seconds, then are cancelled."""
        if self._server is None:
            return
        server, self._server = self._server, None
        server.stop(grace).wait()
