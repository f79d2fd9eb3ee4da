"""The in-process transport: a collaborator calls the aggregator's service directly.

Used by local simulation. Tensors pass through the same codec checks as on the wire
and are copied both ways, so aggregator and collaborator never share memory and a
payload refused over gRPC is refused here too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from contextlib import nullcontext

import numpy as np

from accord.messages import FederationInfo, TaskAssignment, TaskResult
from accord.plan.compression import NO_COMPRESSION, CompressionSettings
from accord.tensors.codec import Destination, TensorAssembler, iter_tensor_chunks
from accord.tensors.compression import Encoded, lossless
from accord.tensors.encodings import RAW, RAW_ONLY, Decoding
from accord.tensors.state import ModelState
from accord.transport.base import AggregatorService, TensorSpecs
from accord.transport.wire import (
    MAX_MODEL_BYTES,
    check_config,
    complete_model,
    model_bytes,
    phase_from_wire,
    phase_payload,
    result_phase,
    upload_limit,
)

# one chunk per tensor: the codec's checks and a single copy, no slicing
_WHOLE_TENSOR = 1 << 62
# encoded chunks as on the wire by default (network.settings.chunk_bytes)
_ENCODED_CHUNK = 1 << 20


def _copy_through_codec(
    state: Mapping[str, np.ndarray],
    expected: dict[str, tuple[str, tuple[int, ...]]] | None,
    max_total_bytes: int,
    encoded: Encoded | None = None,
    decoding: Decoding = RAW_ONLY,
    counted: Callable[[int], None] | None = None,
    destination: Destination | None = None,
) -> Mapping[str, np.ndarray]:
    """Copy ``state`` as the wire would: little-endian, allowed dtypes, checked against ``expected``;
    raw, or through ``encoded``'s chunks and ``decoding``, into ``destination`` (by default arrays
    in memory). ``counted`` is told each chunk's bytes."""
    chunks: Iterator[tuple[str, str, tuple[int, ...], int, bytes | memoryview, str]]
    if encoded is None:
        chunks = ((*chunk, RAW) for chunk in iter_tensor_chunks(state, _WHOLE_TENSOR))
    else:
        chunks = ((n, d, s, o, x, e) for n, d, s, o, e, x in encoded.chunks(_ENCODED_CHUNK))
    assembler = TensorAssembler(expected, max_total_bytes=max_total_bytes, decoding=decoding, destination=destination)
    for name, dtype, shape, offset, data, encoding in chunks:
        if counted is not None:
            counted(memoryview(data).nbytes)
        assembler.add(name, dtype, shape, offset, data, encoding)
    return assembler.finish()


class InProcessClient:
    """AggregatorClient that calls an AggregatorService in the same process.

    ``compression`` is the plan's pipeline: models and encoded results pass through its
    encodings as over gRPC (``counted`` is told the bytes of each chunk: ("download" or
    "upload", bytes)).
    """

    def __init__(
        self,
        service: AggregatorService,
        name: str,
        plan_hash: str,
        long_poll_seconds: float = 30.0,
        compression: CompressionSettings = NO_COMPRESSION,
        counted: Callable[[str, int], None] | None = None,
    ) -> None:
        self.name = name
        self._compression = compression
        self._counted = counted
        self.plan_hash = plan_hash
        self._service = service
        self._long_poll = long_poll_seconds

    def join(self) -> FederationInfo:
        return self._service.join(self.name, self.plan_hash)

    def get_tasks(self) -> TaskAssignment:
        """The service's assignment with its config and phase checked and copied as the wire would."""
        assignment = self._service.get_tasks(self.name, self.plan_hash, timeout=self._long_poll)
        return dataclasses.replace(
            assignment,
            config=check_config(assignment.config),
            phase=phase_from_wire(assignment.phase),
            payload=phase_payload(assignment.payload, "the assignment"),
        )

    def get_model(self, round_number: int, expected: TensorSpecs | None = None) -> ModelState:
        state = self._service.get_model(self.name, self.plan_hash, round_number)
        limit = MAX_MODEL_BYTES if expected is None else model_bytes(expected)
        compression = self._compression
        encoded = lossless(state, compression) if compression.download_encoding else None
        copy = _copy_through_codec(state, expected, limit, encoded, Decoding.download(compression), self._count("download"))
        return complete_model(copy, expected)

    def _count(self, direction: str) -> Callable[[int], None] | None:
        counted = self._counted
        return None if counted is None else lambda size: counted(direction, size)

    def send_result(self, result: TaskResult, encoded: Encoded | None = None) -> None:
        """Submit a copy of ``result`` under this client's name, as the gRPC server would: refused
        from its header (not owed, another round's model, a malformed phase) before its tensors are copied."""
        phase = result_phase(result.phase, result.payload)
        self._service.expect(
            self.name, self.plan_hash, result.round_number, result.task, result.model_digest, result.failure
        )
        with self._service.upload_slot() if result.tensors else nullcontext():  # metrics only: no slot
            tensors = destination = None
            try:
                if result.tensors:  # received as the gRPC server receives them, into the service's destination
                    expected = self._service.expected_tensors()
                    lossy = self._compression.lossy_upload and not result.is_delta
                    base = self._service.get_model(self.name, self.plan_hash, result.round_number) if lossy else None
                    decoding = Decoding.upload(self._compression, base)
                    destination = self._service.receiving(self.name, result.round_number, result.task)
                    limit = upload_limit(expected, None)
                    tensors = _copy_through_codec(
                        result.tensors, expected, limit, encoded, decoding, self._count("upload"), destination
                    )
                copy = dataclasses.replace(
                    result,
                    collaborator=self.name,
                    metrics={str(k): float(v) for k, v in result.metrics.items()},
                    tensors=tensors,
                    phase=phase,
                    update_digest="",  # the receiving transport's to set (the gRPC server's; accord/audit/)
                    sender_serial="",
                )
                self._service.submit(copy, self.plan_hash)
            finally:
                if destination is not None:
                    destination.discard()  # a no-op once the submit committed them

    def close(self) -> None:
        """Nothing to release."""
