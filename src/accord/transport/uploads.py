"""Receiving one uploaded result: one upload per site at a time, inside a bounded upload slot.

A slot is the service's (it bounds the updates buffered at once). Entering one may wait, so
one thread of its own does that; the submit that ends an upload runs on the bounded
executor and releases the slot when it ends, in that thread (or when it is cancelled
unstarted), so no release ever depends on the event loop, which may be closed by then.
An upload must keep a minimum rate once it holds a slot: a site trickling a byte per chunk
bound cannot hold a slot for the whole transfer timeout.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from typing import Any

import grpc

from accord.errors import RefusedError
from accord.plan.compression import CompressionSettings
from accord.tensors.codec import Destination, InMemory, TensorAssembler
from accord.tensors.digest import UpdateDigest, require_update_digest
from accord.tensors.encodings import Decoding
from accord.transport import wire
from accord.transport.admission import CallLimits, check_claim, peer_serial
from accord.transport.base import AggregatorService
from accord.transport.chunk_writer import ChunkWriter
from accord.transport.heap import IN_FLIGHT, release_message_pages
from accord.transport.proto import accord_pb2 as pb
from accord.transport.streams import read_within

logger = logging.getLogger("accord.transport")

#: how long a second upload from one collaborator waits for its first to end
UPLOAD_WAIT_SECONDS = 60.0
#: gRPC adds a few seconds to the deadline a client sets
DEADLINE_SLACK_SECONDS = 60.0


class Uploads:
    """The SendResult receive path of the gRPC server (runs on its event loop)."""

    def __init__(
        self,
        service: AggregatorService,
        executor: concurrent.futures.ThreadPoolExecutor,
        limits: CallLimits,
        max_update_bytes: int | None,
        max_upload_seconds: float | None,
        compression: CompressionSettings,
        chunk_bytes: int,
    ) -> None:
        require_update_digest()  # every upload hashes its chunks: refused at the server's start, not at each upload
        self._service = service
        self._compression = compression
        self._chunk_bytes = chunk_bytes
        self._executor = executor
        self._limits = limits
        self._max_update_bytes = max_update_bytes
        self._max_upload_seconds = max_upload_seconds
        self._uploading: dict[str, asyncio.Lock] = {}
        # entering an upload slot may wait: one thread does it, so the waits never take the executor
        self._slots = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="accord-slots")

    def shutdown(self) -> None:
        """Stop entering slots (call it once the executor is shut down, so that every submit released its slot)."""
        self._slots.shutdown(wait=True, cancel_futures=True)

    async def receive(self, name: str, context: grpc.aio.ServicerContext, first: Any) -> None:
        """Check ``first`` (the stream's first message) and receive and submit the result it heads."""
        self._check_deadline(context)
        if not isinstance(first, pb.ResultChunk) or first.WhichOneof("part") != "header":
            raise RefusedError("a result stream must start with its header", kind="payload")
        head = first.header
        check_claim(head.header.sender, name)
        wire.result_phase(head.phase, head.phase_payload)  # a malformed phase (or payload) is refused from the header, before any tensor
        lock = self._uploading.setdefault(name, asyncio.Lock())  # names are plan members: a bounded map
        try:
            await asyncio.wait_for(lock.acquire(), UPLOAD_WAIT_SECONDS)
        except TimeoutError:
            raise RefusedError(
                f"an earlier upload from {name} is still in progress after {UPLOAD_WAIT_SECONDS:g} s",
                "send results one at a time",
                kind="state",
            ) from None
        try:
            await self._receive(name, head, context)
        finally:
            lock.release()

    def _check_deadline(self, context: grpc.aio.ServicerContext) -> None:
        """Refuse an upload whose deadline is missing or later than allowed (it could hold a slot for ever)."""
        limit = self._max_upload_seconds
        remaining = context.time_remaining()
        if limit is None or (remaining is not None and remaining <= limit + DEADLINE_SLACK_SECONDS):
            return
        has = "none" if remaining is None else f"{remaining:.0f} s"
        reason = f"an upload must carry a deadline of at most {limit:g} s (network.settings.transfer_timeout_seconds); this one has {has}"
        raise RefusedError(reason, kind="payload")

    async def _receive(self, name: str, head: pb.ResultHeader, context: grpc.aio.ServicerContext) -> None:
        """Assemble the tensors inside an upload slot, then submit the whole result."""
        plan_hash = head.header.plan_hash
        service = self._service
        loop = asyncio.get_running_loop()
        decoding = await loop.run_in_executor(self._executor, lambda: self._expect(name, head))
        # a result without tensors (metrics only: a validation, a failure) buffers nothing: it takes no slot
        slot = await self._enter_slot() if head.tensor_count else nullcontext()
        destination: Destination | None = None
        submitting: concurrent.futures.Future[None] | None = None
        writer = ChunkWriter()  # the chunks' digest, checks and writes, off this loop
        upload = IN_FLIGHT.begin() if head.tensor_count else None  # in flight: the pages it frees are kept (transport/heap.py)
        try:
            expected = service.expected_tensors()
            # a result without tensors (a validation) needs no file; one whose count lies is refused at its first tensor
            destination = service.receiving(name, head.round_number, head.task, head.is_delta) if head.tensor_count else InMemory()
            limit = wire.upload_limit(expected, self._max_update_bytes)
            assembler = TensorAssembler(expected, max_total_bytes=limit, decoding=decoding, destination=destination)
            length = self._length_bound(wire.model_bytes(expected))
            ends = loop.time() + length
            digest = UpdateDigest()  # of the chunks as they arrive, for the audit trail (accord/audit/)
            while (message := await self._next_chunk(context, ends - loop.time(), length)) is not None:
                if not isinstance(message, list):  # chunk_views.result_chunk: a tensor chunk's ChunkViews
                    raise RefusedError("a result stream holds one header, then only tensor chunks", kind="payload")
                if not head.tensor_count:  # it holds no slot: nothing of it is received
                    raise RefusedError("a tensor arrived in a result whose header announces none", kind="payload")
                fields = [wire.chunk_fields(chunk) for chunk in message]
                await writer.put(functools.partial(_take_chunks, digest, assembler, head.tensor_count, fields))
            await writer.drain()
            # the last upload in flight gives the pages kept for messages back before its submit (transport/heap.py)
            if upload is not None and upload.end(multi_chunk=assembler.total_bytes > self._chunk_bytes):
                await writer.put(release_message_pages)
                await writer.drain()
            result = replace(
                wire.result_from_pb(name, head, assembler.finish()),
                update_digest=digest.hexdigest(),
                sender_serial=peer_serial(context.auth_context()),
            )
            submitting = self._executor.submit(service.submit, result, plan_hash)
            # the slot is released as the submit ends (or is cancelled unstarted), in that thread, not on this loop;
            # so are the received tensors, unless the submit committed them
            submitting.add_done_callback(functools.partial(_release, slot, destination))
            await asyncio.shield(asyncio.wrap_future(submitting))
        finally:
            writer.close()  # before the file may be discarded: no write is under way after it
            if upload is not None:
                upload.abandon()  # refused or cancelled before its end: counted out
            if submitting is None:
                if destination is not None:
                    destination.discard()
                slot.__exit__(None, None, None)
        logger.debug("result of %s for round %d received from %s", head.task, head.round_number, name)

    def _expect(self, name: str, head: pb.ResultHeader) -> Decoding:
        """Refuse a result that is not owed now (``service.expect``), else say what the plan's
        pipeline lets its chunks be; a lossy change of weights is added back to the round's
        global model (the one ``expect`` bound the result to). Blocking: runs on the executor."""
        self._service.expect(name, head.header.plan_hash, head.round_number, head.task, head.model_digest, head.failure)
        lossy = self._compression.lossy_upload and not head.is_delta and not head.failure
        base = self._service.get_model(name, head.header.plan_hash, head.round_number) if lossy else None
        return Decoding.upload(self._compression, base, self._chunk_bytes)

    def _length_bound(self, model_bytes: int) -> float:
        """Seconds an upload of a model of ``model_bytes`` may take once it holds a slot."""
        limits = self._limits
        return limits.first_message_seconds + model_bytes / limits.min_upload_bytes_per_second

    async def _next_chunk(self, context: grpc.aio.ServicerContext, left: float, length: float) -> Any:
        """The next chunk within chunk_idle_seconds and the upload's length bound (``left`` of ``length`` s)."""
        idle = self._limits.chunk_idle_seconds
        if left <= idle:
            rate = self._limits.min_upload_bytes_per_second
            missing = (
                f"the upload did not end within {length:.1f} s, the bound for this model at "
                f"{rate:g} bytes/s (network.settings.min_upload_bytes_per_second)"
            )
            return await read_within(context, max(0.0, left), missing)
        return await read_within(context, idle, f"no further chunk within {idle:g} s (network.settings.chunk_idle_seconds)")

    async def _enter_slot(self) -> AbstractContextManager[None]:
        """The service's upload slot, entered without blocking the loop; released even if the call ends first."""
        slot = self._service.upload_slot()
        entering = self._slots.submit(slot.__enter__)
        try:
            await asyncio.wrap_future(entering)
        except BaseException:
            entering.add_done_callback(lambda f: _exit_if_entered(slot, f))
            raise
        return slot


def _take_chunks(digest: UpdateDigest, assembler: TensorAssembler, announced: int, chunks: list[wire.ChunkFields]) -> None:
    """Hash each chunk of one message in order, then check it and write it into place (on the
    upload's writer thread)."""
    for name, dtype, shape, offset, data, encoding in chunks:
        digest.add(name, dtype, shape, offset, encoding, data)
        assembler.add(name, dtype, shape, offset, data, encoding)
        if len(assembler) > announced:
            raise RefusedError(f"more tensors arrived than the {announced} the result header announces", kind="payload")


def _release(slot: AbstractContextManager[None], destination: Destination, _: concurrent.futures.Future[Any]) -> None:
    try:
        destination.discard()  # a no-op once the submit committed the tensors: the journal owns them
    finally:
        slot.__exit__(None, None, None)


def _exit_if_entered(slot: AbstractContextManager[None], entering: concurrent.futures.Future[Any]) -> None:
    if not entering.cancelled() and entering.exception() is None:
        slot.__exit__(None, None, None)
