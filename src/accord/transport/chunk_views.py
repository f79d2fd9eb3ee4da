"""Received tensor chunks whose bytes are not copied: ``data`` is a view of the message gRPC received.

A chunk's ``data`` (up to ``chunk_bytes``) is the bulk of every model transfer. Protobuf's
parser copies it into the message, and again each time the field is read: two passes over
every byte, on the thread that also drives the transfer (bench/wire_throughput.py). Here a
chunk laid out the way ``wire.encoded_tensor_chunks`` writes it (each field once, ``data``
a single length-delimited field, nothing after the message) has its small fields parsed by
protobuf from the bytes around ``data``, and ``data`` handed on as a memoryview. Any other
message, valid or not, is parsed by protobuf whole, as before: what is accepted, and what
each field reads as, is protobuf's in both cases (tests/test_chunk_views.py checks the two
agree). A message's ``more`` chunks (small tensors sent together, ``wire.encoded_tensor_chunks``)
follow its own, in order; they are parsed by protobuf (their data copied: they are small),
and one that holds a ``more`` of its own is refused. The deserializers never raise on the
server (``wire.lenient``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf.message import DecodeError

from accord.transport import wire
from accord.transport.proto import accord_pb2 as pb

#: TensorChunk.data and ResultChunk.tensor: field numbers, and the length-delimited wire type
_DATA_FIELD = 5
_TENSOR_KEY = 2 << 3 | 2
_LENGTH_DELIMITED, _VARINT, _FIXED64, _FIXED32 = 2, 0, 1, 5


class ChunkView:
    """One received TensorChunk: its fields, ``data`` a view of the received message (no copy)."""

    __slots__ = ("data", "dtype", "encoding", "name", "offset", "shape")

    def __init__(self, meta: pb.TensorChunk, data: memoryview) -> None:
        self.name: str = meta.name
        self.dtype: str = meta.dtype
        self.shape: tuple[int, ...] = tuple(meta.shape)
        self.offset: int = meta.offset
        self.data = data
        self.encoding: str = meta.encoding



def chunks(meta: pb.TensorChunk, data: memoryview) -> list[ChunkView]:
    """The chunk ``meta`` (its ``data``), then those in its ``more``; DecodeError if one of those
    holds a ``more`` of its own."""
    views = [ChunkView(meta, data)]
    for chunk in meta.more:
        if chunk.more:
            raise DecodeError("a chunk in a TensorChunk's 'more' holds a 'more' of its own")
        views.append(ChunkView(chunk, memoryview(chunk.data)))
    return views


def tensor_chunks(data: bytes) -> list[ChunkView]:
    """A GetModel response's chunks; DecodeError if it is not a TensorChunk (gRPC then ends the call)."""
    view = memoryview(data)
    fast = _fast(view, 0, len(view))
    if fast is not None:
        return fast
    chunk = pb.TensorChunk.FromString(data)
    return chunks(chunk, memoryview(chunk.data))


_parse_result: Callable[[bytes], Any] = wire.lenient(pb.ResultChunk)


def result_chunk(data: bytes) -> Any:
    """A SendResult message: the list of ChunkViews of a tensor chunk (and its ``more``), else
    the parsed ResultChunk (a header, or no part), or ``wire.Undecodable``; it never raises
    (see ``wire.lenient``)."""
    try:
        view = memoryview(data)
        fast = _result_tensor(view)
        if fast is not None:
            return fast
        message = _parse_result(data)
        if isinstance(message, pb.ResultChunk) and message.WhichOneof("part") == "tensor":
            return chunks(message.tensor, memoryview(message.tensor.data))
        return message
    except DecodeError as exc:
        return wire.Undecodable(pb.ResultChunk.DESCRIPTOR.name, str(exc))


def _result_tensor(view: memoryview) -> list[ChunkView] | None:
    """The tensor chunk a ResultChunk holds as its one field, spanning the whole message; else None."""
    try:
        if not view or view[0] != _TENSOR_KEY:
            return None
        length, start = _varint(view, 1)
    except _NotCanonical:
        return None
    if start + length != len(view):
        return None
    return _fast(view, start, len(view))


class _NotCanonical(Exception):
    """The bytes are not laid out as ``encoded_tensor_chunks`` writes them: protobuf parses them."""


def _varint(view: memoryview, at: int) -> tuple[int, int]:
    """The varint at ``at`` and the position after it."""
    value = shift = 0
    while at < len(view) and shift < 64:
        byte = view[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7
    raise _NotCanonical


def _fast(view: memoryview, start: int, end: int) -> list[ChunkView] | None:
    """The chunks of the TensorChunk in ``view[start:end]`` with one ``data`` field, parsed around
    it; else None; DecodeError if a ``more`` chunk holds a ``more``."""
    try:
        data_at = _data_field(view, start, end)
    except _NotCanonical:
        return None
    if data_at is None:
        return None
    key_at, value_at, value_end = data_at
    try:
        meta = pb.TensorChunk.FromString(bytes(view[start:key_at]) + bytes(view[value_end:end]))
    except DecodeError:
        return None
    return chunks(meta, view[value_at:value_end])


def _data_field(view: memoryview, at: int, end: int) -> tuple[int, int, int] | None:
    """(key, value start, value end) of the one length-delimited ``data`` field in
    ``view[at:end]``; None if it is missing or repeated; _NotCanonical if a field runs past ``end``."""
    found: tuple[int, int, int] | None = None
    while at < end:
        key_at = at
        key, at = _varint(view, at)
        wire_type = key & 7
        if wire_type == _LENGTH_DELIMITED:
            length, at = _varint(view, at)
            if key >> 3 == _DATA_FIELD:
                if found is not None:
                    return None
                found = (key_at, at, at + length)
            at += length
        elif wire_type == _VARINT:
            _, at = _varint(view, at)
        elif wire_type in (_FIXED64, _FIXED32):
            at += 8 if wire_type == _FIXED64 else 4
        else:
            raise _NotCanonical
    if at != end:
        raise _NotCanonical
    return found
