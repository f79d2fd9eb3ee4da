"""Tensors on the wire: raw little-endian bytes with name, dtype and shape, in bounded chunks.

``iter_tensor_chunks`` cuts a state into pieces without copying (memoryview slices of
each array's buffer); ``TensorAssembler`` checks the pieces as they arrive and copies
them into buffers allocated once per tensor by its ``Destination`` (arrays in memory by
default, or the file a receiver saves them in: aggregator/staging.py), decoding an encoded
piece (tensors/encodings.py) before it goes into place. Nothing is ever unpickled.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from accord.errors import AccordError, RefusedError
from accord.tensors.encodings import RAW, RAW_ONLY, Decoding, Encoding, chunk_count, decode_chunk
from accord.tensors.state import ALLOWED_DTYPES, little_endian

#: (name, dtype, shape, offset, data) — one piece of one tensor.
Chunk = tuple[str, str, tuple[int, ...], int, memoryview]

#: more dimensions than this is refused (NumPy itself stops at 64).
MAX_NDIM = 32
#: a tensor name longer than this is refused.
MAX_NAME_CHARS = 1024


def _shown(dtype: str, shape: tuple[int, ...]) -> str:
    """``dtype[d0, d1, ...]`` for a refusal's reason, cut short: a peer may send any dtype or shape."""
    dims = [str(d) for d in shape[:MAX_NDIM]] + (["..."] if len(shape) > MAX_NDIM else [])
    return f"{dtype[:32]}[{', '.join(dims)}]"


def iter_tensor_chunks(state: Mapping[str, np.ndarray], chunk_bytes: int) -> Iterator[Chunk]:
    """Yield each tensor of ``state`` as pieces of at most ``chunk_bytes`` bytes.

    A zero-size tensor yields one empty piece, so its name and shape still travel.
    Raises AccordError for a dtype that may not travel (see ALLOWED_DTYPES).
    """
    if chunk_bytes <= 0:
        raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes}")
    for name, value in state.items():
        array = little_endian(np.asarray(value))
        dtype = array.dtype.name
        if dtype not in ALLOWED_DTYPES:
            raise AccordError(
                f"tensor {name!r} has dtype {dtype}, which cannot be sent",
                f"convert it to one of {', '.join(sorted(ALLOWED_DTYPES))}",
            )
        shape = tuple(int(d) for d in array.shape)
        raw = array.reshape(-1).view(np.uint8).data
        if raw.nbytes == 0:
            yield name, dtype, shape, 0, raw
            continue
        for offset in range(0, raw.nbytes, chunk_bytes):
            yield name, dtype, shape, offset, raw[offset : offset + chunk_bytes]


class Buffer(Protocol):
    """Where one tensor's bytes go as they arrive."""

    def write(self, offset: int, data: bytes | memoryview) -> None:
        """Copy ``data`` to byte ``offset`` of the tensor (the assembler checked the bounds)."""


class Destination(Protocol):
    """Allocates each tensor's buffer once its name, dtype and shape are checked, and gives
    the tensors back once every chunk has arrived."""

    def allocate(self, name: str, dtype: np.dtype, shape: tuple[int, ...]) -> Buffer:
        """The buffer for tensor ``name`` (``dtype`` little-endian)."""

    def finish(self, names: list[str]) -> Mapping[str, np.ndarray]:
        """The tensors ``names`` (those that arrived, each whole), in arrival order."""

    def discard(self) -> None:
        """Release what was allocated (a stream refused, cut or cancelled; idempotent)."""


class _ArrayBuffer:
    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        self._raw = array.reshape(-1).view(np.uint8)

    def write(self, offset: int, data: bytes | memoryview) -> None:
        self._raw[offset : offset + memoryview(data).nbytes] = np.frombuffer(data, dtype=np.uint8)


class InMemory:
    """The default Destination: one array per tensor, allocated when its first chunk arrives,
    or taken from ``spare`` (``Spares.take``) when it holds one of that name, dtype and shape."""

    def __init__(self, spare: dict[str, np.ndarray] | None = None) -> None:
        self._buffers: dict[str, _ArrayBuffer] = {}
        self._spare = spare or {}

    def allocate(self, name: str, dtype: np.dtype, shape: tuple[int, ...]) -> Buffer:
        array = self._spare.pop(name, None)
        if array is None or array.dtype != dtype or array.shape != shape:
            array = np.empty(shape, dtype=dtype)
        buffer = self._buffers[name] = _ArrayBuffer(array)
        return buffer

    def finish(self, names: list[str]) -> dict[str, np.ndarray]:
        return {name: self._buffers[name].array for name in names}

    def discard(self) -> None:
        self._buffers.clear()


class Spares:
    """The arrays of the last model received, to receive the next one into once nothing else
    holds them: fresh arrays cost a pass of the kernel zeroing their pages (bench/wire_throughput.py:
    ~40% of a site's CPU for get_model), reused ones none. An array the caller still holds, or
    anything made from it (a view, a torch tensor sharing its memory, a memoryview), is not reused."""

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def keep(self, state: Mapping[str, np.ndarray]) -> None:
        """Remember ``state``'s arrays (those the receiver allocated) for the next ``take``."""
        self._arrays = dict(state)

    def take(self) -> dict[str, np.ndarray]:
        """The kept arrays nothing else refers to now, forgotten here (the receiver overwrites them)."""
        arrays, self._arrays = self._arrays, {}
        free = {}
        while arrays:
            name, array = arrays.popitem()
            if sys.getrefcount(array) == 2:  # ``array`` and the call's argument: nothing else holds it
                free[name] = array
            del array
        return free


@dataclass
class _Pending:
    """One tensor being received: its buffer, its size, bytes so far."""

    dtype: str
    shape: tuple[int, ...]
    encoding: str
    buffer: Buffer
    nbytes: int
    received: int = 0

    @property
    def complete(self) -> bool:
        return self.received == self.nbytes


class TensorAssembler:
    """Rebuild tensors from chunks, refusing a malformed stream as early as possible.

    ``expected`` (name -> (dtype, shape)), when given, refuses unknown names and
    mismatched dtypes or shapes. ``max_total_bytes`` bounds the memory the declared
    tensors may take together. ``decoding`` says which encoding each tensor must come in
    (default: raw only) and the global model a lossy change is added to. ``destination``
    allocates the tensors (by default arrays in memory: ``InMemory``).
    Every refusal is a RefusedError(kind="payload").
    """

    def __init__(
        self,
        expected: dict[str, tuple[str, tuple[int, ...]]] | None,
        max_total_bytes: int,
        max_tensors: int = 1_000_000,
        decoding: Decoding = RAW_ONLY,
        destination: Destination | None = None,
    ) -> None:
        self._decoding = decoding
        self._expected = (
            None
            if expected is None
            else {name: (dtype, tuple(int(d) for d in shape)) for name, (dtype, shape) in expected.items()}
        )
        self._max_total = int(max_total_bytes)
        self._max_tensors = int(max_tensors)
        self._tensors: dict[str, _Pending] = {}
        self._total = 0
        self._destination = InMemory() if destination is None else destination

    def __len__(self) -> int:
        """How many distinct tensors have started arriving."""
        return len(self._tensors)

    @property
    def total_bytes(self) -> int:
        """Bytes declared by the tensors started so far (what is allocated)."""
        return self._total

    def add(
        self,
        name: str,
        dtype: str,
        shape: tuple[int, ...] | list[int],
        offset: int,
        data: bytes | memoryview,
        encoding: str = RAW,
    ) -> None:
        """Check one chunk and copy (or decode) its bytes into place."""
        shape = tuple(int(d) for d in shape)
        pending = self._tensors.get(name)
        if pending is None:
            pending = self._start(name, dtype, shape, encoding)
        elif pending.complete:
            raise RefusedError(f"tensor {name!r} was sent twice", kind="payload")
        elif (dtype, shape) != (pending.dtype, pending.shape):
            raise RefusedError(
                f"tensor {name!r} changed from {_shown(pending.dtype, pending.shape)} "
                f"to {_shown(dtype, shape)} in the middle of its stream",
                kind="payload",
            )
        elif encoding != pending.encoding:
            raise RefusedError(f"tensor {name!r} changed encoding in the middle of its stream", kind="payload")
        if offset != pending.received:
            raise RefusedError(
                f"tensor {name!r}: chunk at byte {offset}, expected byte {pending.received} "
                "(chunks missing, repeated or out of order)",
                kind="payload",
            )
        itemsize = np.dtype(pending.dtype).itemsize
        size = len(data) if isinstance(data, bytes) else memoryview(data).nbytes
        if encoding != RAW:
            size = chunk_count(data, name) * itemsize
        end = offset + size
        if end > pending.nbytes:
            raise RefusedError(
                f"tensor {name!r}: {end} bytes received, more than the "
                f"{pending.nbytes} its dtype and shape declare",
                kind="payload",
            )
        if encoding != RAW:
            # decoded beside the buffer (at most one chunk's elements at a time), then written into place like raw bytes
            decoder = Encoding.parse(encoding)
            start, count = offset // itemsize, size // itemsize
            base = self._decoding.base_of(name, start, count) if decoder.lossy else None
            most = decoder.per_chunk(self._decoding.chunk_bytes, itemsize)
            little = np.dtype(pending.dtype).newbyteorder("<")
            for first, decoded in decode_chunk(decoder, data, count, little, base, most, name):
                pending.buffer.write(offset + first * itemsize, decoded.view(np.uint8).data)
        elif size:
            pending.buffer.write(offset, data)
        pending.received = end

    def _start(self, name: str, dtype: str, shape: tuple[int, ...], encoding: str) -> _Pending:
        if not name or len(name) > MAX_NAME_CHARS:
            raise RefusedError(f"tensor name {name[:64]!r} is empty or too long", kind="payload")
        if len(self._tensors) >= self._max_tensors:
            raise RefusedError(f"more than {self._max_tensors} tensors in one stream", kind="payload")
        if dtype not in ALLOWED_DTYPES:
            raise RefusedError(
                f"tensor {name!r} has dtype {dtype[:32]!r}, not one of {sorted(ALLOWED_DTYPES)}",
                kind="payload",
            )
        if self._expected is not None:
            if name not in self._expected:
                raise RefusedError(f"tensor {name!r} is not part of the model", kind="payload")
            want_dtype, want_shape = self._expected[name]
            if dtype != want_dtype or shape != want_shape:
                raise RefusedError(
                    f"tensor {name!r} is {_shown(dtype, shape)}, expected {_shown(want_dtype, want_shape)}",
                    kind="payload",
                )
        if len(shape) > MAX_NDIM or any(d < 0 for d in shape):
            raise RefusedError(f"tensor {name!r} has an invalid shape {list(shape)[:MAX_NDIM + 1]}", kind="payload")
        np_dtype = np.dtype(dtype).newbyteorder("<")
        nbytes = math.prod(shape) * np_dtype.itemsize
        wanted = self._decoding.expected(dtype, nbytes)
        if encoding != wanted:
            raise RefusedError(
                f"tensor {name!r} arrived in encoding {encoding[:40]!r}; the plan's {self._decoding.source} "
                f"sends a {dtype} tensor as {wanted or 'raw'!r}",
                "run the same plan at both ends (its compression_pipeline section is part of the plan hash)",
                kind="payload",
            )
        if self._total + nbytes > self._max_total:
            raise RefusedError(
                f"tensor {name!r} of shape {list(shape)} would bring the stream to "
                f"{self._total + nbytes} bytes, over the limit of {self._max_total}",
                kind="payload",
            )
        pending = _Pending(dtype, shape, encoding, self._destination.allocate(name, np_dtype, shape), nbytes)
        self._tensors[name] = pending
        self._total += nbytes
        return pending

    def finish(self) -> Mapping[str, np.ndarray]:
        """Every started tensor, in arrival order, from the destination; refused if any is incomplete."""
        for name, pending in self._tensors.items():
            if not pending.complete:
                raise RefusedError(
                    f"tensor {name!r} is truncated: {pending.received} of {pending.nbytes} bytes arrived",
                    kind="payload",
                )
        return self._destination.finish(list(self._tensors))
