"""A collaborator's gRPC client: a mutual-TLS channel to the aggregator, renewed after each large result."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from typing import NoReturn, TypeVar

import grpc
import numpy as np

from accord.errors import AccordError, PKIError, RefusedError
from accord.messages import FederationInfo, TaskAssignment, TaskResult
from accord.plan.compression import NO_COMPRESSION, CompressionSettings
from accord.plan.identity import shown_hash
from accord.tensors.codec import InMemory, Spares, TensorAssembler
from accord.tensors.compression import Encoded
from accord.tensors.encodings import Decoding
from accord.tensors.state import ALLOWED_DTYPES, ModelState
from accord.transport import chunk_views, wire
from accord.transport.base import TensorSpecs
from accord.transport.heap import keep_message_pages
from accord.transport.proto import accord_pb2 as pb
from accord.transport.proto import accord_pb2_grpc as pb_grpc
from accord.transport.tls import ClientTLS

logger = logging.getLogger("accord.transport")

T = TypeVar("T")

#: first and largest pause between attempts to reach an unreachable aggregator, in seconds
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0

_REFUSAL_CODES = {
    grpc.StatusCode.PERMISSION_DENIED: "identity",
    grpc.StatusCode.FAILED_PRECONDITION: "plan",
    grpc.StatusCode.INVALID_ARGUMENT: "payload",
}


class _Unverified(grpc.RpcError):
    """After an outage, the aggregator's certificate could not be read to check it again: retried."""

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return str(self)


#: a site started before its aggregator (or during an outage) tries to connect again at least every
#: 5 s: gRPC's own backoff grows to 120 s, so a site could join minutes after the aggregator is up
RECONNECT_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 500), ("grpc.max_reconnect_backoff_ms", 5_000)]


#: a join that finds no aggregator within this many seconds says it is waiting for one
JOIN_QUIET_SECONDS = 1.0


def _retryable(error: grpc.RpcError) -> bool:
    """The aggregator is unreachable or slow, or refused the call for now (a "busy" refusal:
    too many calls at once, a full disk). A message over gRPC's size limit is not retried."""
    if isinstance(error, _Unverified):
        return True
    code = error.code() if isinstance(error, grpc.Call) else None
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return True
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED and isinstance(error, grpc.Call):
        return (wire.REFUSAL_KIND_KEY, "busy") in tuple(error.trailing_metadata() or ())
    return False


class GrpcAggregatorClient:
    """AggregatorClient over gRPC; one channel, replaced by a new one after each result larger
    than one chunk (``chunk_bytes``; ``_reconnect``), with the credentials read at the start.

    A call that finds the aggregator unreachable (down, restarting, network cut) is tried
    again after a pause that doubles from BACKOFF_FIRST up to BACKOFF_MAX, with random
    jitter so that sites do not all come back at once, for up to ``reconnect_timeout``
    seconds. Model and result transfers end after ``transfer_timeout`` seconds.

    Every header carries ``workspace_hash``; ``join`` refuses an aggregator whose answer
    names another plan or workspace hash. ``check_server`` (e.g. the revocation check) gets
    the aggregator's DER certificate before the first call, again after an outage and after
    each new channel.
    ``compression`` is the plan's pipeline: the only encoding a downloaded model may come in.
    ``counted`` is told the bytes of each chunk as it goes: ("download" or "upload", bytes).

    While the aggregator is unreachable (at the start, or an outage later) the site logs
    "waiting for the aggregator at HOST:PORT" once, each further attempt at DEBUG only, and
    a line when it answers again.
    """

    def __init__(
        self,
        name: str,
        plan_hash: str,
        host: str,
        port: int,
        tls: ClientTLS,
        chunk_bytes: int = wire.DEFAULT_CHUNK_BYTES,
        long_poll_seconds: float = 30.0,
        connect_timeout: float = 30.0,
        reconnect_timeout: float = 600.0,
        transfer_timeout: float = 3600.0,
        workspace_hash: str = "",
        check_server: Callable[[bytes], None] | None = None,
        compression: CompressionSettings = NO_COMPRESSION,
        counted: Callable[[str, int], None] | None = None,
    ) -> None:
        self.name = name
        self._counted = counted
        self._compression = compression
        self.plan_hash = plan_hash
        self.workspace_hash = workspace_hash
        self._check_server = check_server
        self._recheck = False  # set after an outage: check the certificate again before the next call
        self._tls = tls
        self._host, self._port = host, port
        self._address = f"{host}:{port}"
        self._chunk_bytes = chunk_bytes
        self._long_poll = long_poll_seconds
        self._connect_timeout = connect_timeout
        self._reconnect_timeout = reconnect_timeout
        self._transfer_timeout = transfer_timeout
        self._spares = Spares()
        self._target = f"[{host}]:{port}" if ":" in host and not host.startswith("[") else self._address
        keep_message_pages()  # each received chunk reuses freed pages (transport/heap.py)
        self._credentials = tls.credentials()  # read once: a new channel neither reads files nor changes identity
        self._channel, self._stub = self._connect()

    def _connect(self) -> tuple[grpc.Channel, pb_grpc.AggregatorStub]:
        """A new channel to the aggregator and its stub (it connects on its first call)."""
        options = [*wire.channel_options(self._chunk_bytes), *RECONNECT_OPTIONS]
        channel = grpc.secure_channel(self._target, self._credentials, options=options)
        stub = pb_grpc.AggregatorStub(channel)
        stub.SendResult = wire.send_result_method(channel)
        stub.GetModel = channel.unary_stream(
            "/accord.v1.Aggregator/GetModel",
            request_serializer=pb.ModelRequest.SerializeToString,
            response_deserializer=chunk_views.tensor_chunks,
        )
        return channel, stub

    def _reconnect(self) -> None:
        """Replace the channel with a new one, and check the aggregator's certificate again before
        the next call, as after an outage.

        gRPC keeps about one received message's worth of buffers (0.4 to 1.3 MB for messages of
        256 KiB to 4 MiB) for every connection that carried an upload, until it closes: a site
        that opens a new connection after each result larger than one chunk keeps the
        aggregator's memory flat in the number of sites (docs/failure-model.md). Nothing here
        can fail: the channel connects (and the certificate is checked) at the next call."""
        old = self._channel
        self._channel, self._stub = self._connect()
        self._recheck = self._check_server is not None
        old.close()

    def __enter__(self) -> GrpcAggregatorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _header(self) -> pb.Header:
        return wire.header(self.name, self.plan_hash, self.workspace_hash)

    def _fail(self, error: grpc.RpcError, what: str) -> NoReturn:
        """Turn a gRPC error into a RefusedError or AccordError the user can act on."""
        code = error.code() if isinstance(error, grpc.Call) else None
        details = (error.details() if isinstance(error, grpc.Call) else None) or str(error)
        if code is not None and (code in _REFUSAL_CODES or (code is grpc.StatusCode.RESOURCE_EXHAUSTED and _retryable(error))):
            kind = _REFUSAL_CODES.get(code, "busy")
            trailing: tuple[tuple[str, str | bytes], ...] = (error.trailing_metadata() or ()) if isinstance(error, grpc.Call) else ()
            for key, value in trailing:
                if key == wire.REFUSAL_KIND_KEY and isinstance(value, str) and value in RefusedError.KINDS:
                    kind = value
            raise RefusedError(f"the aggregator refused {what}: {details}", kind=kind) from None
        if code == grpc.StatusCode.UNAVAILABLE:
            raise AccordError(
                f"the aggregator at {self._address} is unreachable ({what}): {details}",
                "check that the aggregator is running and reachable from here; if it is, its log "
                "may show a refused TLS handshake (a certificate it does not accept)",
            ) from None
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            raise AccordError(f"the aggregator at {self._address} did not answer in time ({what})") from None
        name = code.name if code is not None else "error"
        raise AccordError(f"{what} failed: {name}: {details}") from None

    def _retrying(self, what: str, call: Callable[[], T]) -> T:
        """``call()``, tried again with backoff and jitter while the aggregator is unreachable."""
        give_up: float | None = None  # counted from the first failure: a long transfer may precede it
        pause = BACKOFF_FIRST
        while True:
            try:
                self._recheck_server()
                answer = call()
            except grpc.RpcError as exc:
                if not _retryable(exc):
                    raise
                code = exc.code()
                give_up = give_up or time.monotonic() + self._reconnect_timeout
                wait = random.uniform(pause / 2, pause)
                if time.monotonic() + wait > give_up:
                    raise
                details = (exc.details() if isinstance(exc, (grpc.Call, _Unverified)) else None) or code.name
                busy = code is grpc.StatusCode.RESOURCE_EXHAUSTED
                logger.log(
                    logging.DEBUG if pause > BACKOFF_FIRST else logging.WARNING,  # one line an outage, not one a try
                    "%s: %s (%s); trying again in %.1f s%s",
                    what,
                    f"the aggregator at {self._address} cannot take it now" if busy else f"waiting for the aggregator at {self._address}: it is unreachable",
                    details[:200],
                    wait,
                    "" if pause > BACKOFF_FIRST else f", then with backoff for up to {self._reconnect_timeout:g} s",
                )
                time.sleep(wait)
                pause = min(pause * 2, BACKOFF_MAX)
                self._recheck = self._check_server is not None and code is grpc.StatusCode.UNAVAILABLE
            else:
                if give_up is not None:
                    logger.info("%s: the aggregator at %s answers again", what, self._address)
                return answer

    def join(self) -> FederationInfo:
        """Wait for the channel (up to connect_timeout), then introduce this collaborator."""
        ready = grpc.channel_ready_future(self._channel)
        try:
            try:
                ready.result(timeout=min(JOIN_QUIET_SECONDS, self._connect_timeout))
            except grpc.FutureTimeoutError:
                logger.warning("waiting for the aggregator at %s (up to %g s)", self._address, self._connect_timeout)
                ready.result(timeout=max(self._connect_timeout - JOIN_QUIET_SECONDS, 0.0))
                logger.info("the aggregator at %s answers", self._address)
        except grpc.FutureTimeoutError:
            raise AccordError(
                f"cannot reach the aggregator at {self._address} within {self._connect_timeout:g} s",
                "check that it is running, that the plan's agg_addr/agg_port point at it, and that "
                "this collaborator's certificate is signed by the federation's CA",
            ) from None
        self._check_server_certificate()
        request = pb.JoinRequest(header=self._header())
        try:
            response = self._retrying("join", lambda: self._stub.Join(request, timeout=self._connect_timeout))
        except grpc.RpcError as exc:
            self._fail(exc, "join")
        info = wire.info_from_pb(response)
        self._check_answer(info)
        return info

    def _check_answer(self, info: FederationInfo) -> None:
        """Refuse an aggregator that serves another plan or other code than this site's."""
        if info.plan_hash == self.plan_hash and (not self.workspace_hash or info.workspace_hash == self.workspace_hash):
            return
        raise AccordError(
            f"the aggregator at {self._address} serves plan {shown_hash(info.plan_hash)} with workspace "
            f"{shown_hash(info.workspace_hash)}, but this site has plan {shown_hash(self.plan_hash)} with workspace "
            f"{shown_hash(self.workspace_hash)}: refusing to work for it",
            "compare the workspace hash with the federation operator's (fx workspace import and fx collaborator "
            "certify print it); import the federation's workspace archive again if yours differs",
        )

    def _check_server_certificate(self) -> None:
        """Hand the aggregator's certificate to ``check_server`` (which raises to refuse it)."""
        if self._check_server is None:
            return
        try:
            der = self._tls.server_certificate(self._host, self._port, self._connect_timeout)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise AccordError(
                f"cannot read the certificate of the aggregator at {self._address} to check it: {exc}",
                "check that the plan's agg_addr/agg_port point at the aggregator",
            ) from None
        self._check_server(der)

    def _recheck_server(self) -> None:
        """After an outage, check whichever aggregator answers now before calling it; _Unverified
        (retried like an unreachable aggregator) while its certificate cannot be read."""
        if not self._recheck:
            return
        try:
            self._check_server_certificate()
        except PKIError:
            raise
        except AccordError as exc:
            raise _Unverified(exc.message) from None
        self._recheck = False

    def get_tasks(self) -> TaskAssignment:
        """Long-poll for work: returns when a round opens, the federation ends, or the poll times out."""
        request = pb.TasksRequest(header=self._header())
        try:
            response = self._retrying(
                "the task request", lambda: self._stub.GetTasks(request, timeout=self._long_poll + 30.0)
            )
        except grpc.RpcError as exc:
            self._fail(exc, "the task request")
        try:
            return wire.assignment_from_pb(response)
        except (ValueError, KeyError) as exc:
            raise AccordError(
                f"the aggregator at {self._address} sent malformed tasks: {exc}",
                "check that the plan's agg_addr/agg_port point at this federation's aggregator "
                "and that both sides run the same version of Accord",
            ) from None

    def get_model(self, round_number: int, expected: TensorSpecs | None = None) -> ModelState:
        """Stream the global model of ``round_number`` into arrays: the last model's, if nothing
        holds them any more (``Spares``), else freshly allocated ones.

        With ``expected`` (this site's own model), a tensor whose name, dtype or shape differs,
        or a model that lacks one, is refused before any memory is allocated for it.
        """
        what = f"the model request for round {round_number}"
        request = pb.ModelRequest(header=self._header(), round_number=round_number)
        try:
            return self._retrying(what, lambda: self._receive_model(request, expected))
        except grpc.RpcError as exc:
            self._fail(exc, what)

    def _receive_model(self, request: pb.ModelRequest, expected: TensorSpecs | None) -> ModelState:
        limit = wire.MAX_MODEL_BYTES if expected is None else wire.model_bytes(expected)
        destination = InMemory(self._spares.take())  # the last model's arrays, if the caller dropped them
        decoding = Decoding.download(self._compression, self._chunk_bytes)
        assembler = TensorAssembler(expected, max_total_bytes=limit, decoding=decoding, destination=destination)
        call = self._stub.GetModel(request, timeout=self._transfer_timeout)
        try:
            counted = self._counted
            for message in call:  # a message holds one chunk or several (small tensors travel together)
                for chunk in message:
                    fields = wire.chunk_fields(chunk)
                    assembler.add(*fields)
                    if counted is not None:
                        counted("download", memoryview(fields[4]).nbytes)
            model = wire.complete_model(assembler.finish(), expected)
            self._spares.keep(model)
            return model
        except RefusedError as exc:
            call.cancel()
            raise AccordError(
                f"the aggregator at {self._address} sent a model that is not this site's model: {exc.message}",
                "check that the plan's agg_addr/agg_port point at this federation's aggregator and that "
                "both sides run the same plan; the site stopped before using it",
            ) from None

    def send_result(self, result: TaskResult, encoded: Encoded | None = None) -> None:
        """Stream the result's header, then its tensors chunk by chunk (made lazily): raw, or as
        ``encoded`` (the plan's compression pipeline) cuts them."""
        tensors = result.tensors or {}
        for tensor_name, value in tensors.items():
            dtype = np.asarray(value).dtype.name
            if dtype not in ALLOWED_DTYPES:
                raise AccordError(
                    f"tensor {tensor_name!r} of the {result.task} result has dtype {dtype}, which cannot be sent",
                    f"convert it to one of {', '.join(sorted(ALLOWED_DTYPES))}",
                )
        failure: list[BaseException] = []
        sent = [0]  # the tensor chunks' bytes, serialized, of the last attempt

        def stream() -> Iterator[pb.ResultChunk | bytes]:
            counted = self._counted
            sent[0] = 0
            try:
                for message in wire.result_stream(result, self.name, self.plan_hash, self._chunk_bytes, encoded):
                    yield message
                    if isinstance(message, bytes):  # a tensor chunk, serialized
                        sent[0] += len(message)
                        if counted is not None:
                            counted("upload", len(message))
            except Exception as exc:  # re-raised below instead of gRPC's "Exception iterating requests!"
                failure.append(exc)
                raise

        what = f"the {result.task} result of round {result.round_number}"
        try:
            self._retrying(what, lambda: self._stub.SendResult(stream(), timeout=self._transfer_timeout))
        except grpc.RpcError as exc:
            if failure:
                raise failure[0] from None
            self._fail(exc, what)
        if sent[0] > self._chunk_bytes:
            self._reconnect()

    def close(self) -> None:
        """Close the channel; the client cannot be used afterwards."""
        self._channel.close()
