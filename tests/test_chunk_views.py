"""Received tensor chunks parsed without copying their data (transport/chunk_views.py): every
message, canonical or not, valid or not, reads exactly as protobuf reads it."""

from __future__ import annotations

import random

import numpy as np
import pytest
from google.protobuf.message import DecodeError

from accord.transport import chunk_views, wire
from accord.transport.proto import accord_pb2 as pb

STATE = {"w": np.arange(3000, dtype=np.float32).reshape(30, 100), "b": np.ones(7, dtype=np.float64)}


def fields_of(chunk: object) -> tuple:
    name, dtype, shape, offset, data, encoding = wire.chunk_fields(chunk)
    return name, dtype, shape, offset, bytes(data), encoding


def protobuf_reading(data: bytes) -> object:
    """What protobuf makes of a SendResult message: a tensor's fields, the message, or 'undecodable'."""
    message = wire.lenient(pb.ResultChunk)(data)
    if isinstance(message, wire.Undecodable):
        return "undecodable"
    if message.WhichOneof("part") == "tensor":
        return protobuf_chunks(message.tensor)
    return message


def protobuf_chunks(chunk: pb.TensorChunk) -> object:
    """A TensorChunk's chunks as protobuf reads them: its own, then its ``more``'s ('undecodable' if one nests)."""
    if any(more.more for more in chunk.more):
        return "undecodable"
    return [(name, dtype, shape, offset, bytes(data), encoding) for name, dtype, shape, offset, data, encoding in wire.message_chunk_fields(chunk)]


def view_reading(data: bytes) -> object:
    parsed = chunk_views.result_chunk(data)
    if isinstance(parsed, wire.Undecodable):
        return "undecodable"
    return [fields_of(chunk) for chunk in parsed] if isinstance(parsed, list) else parsed


def sent_chunks(chunk_bytes: int = 4096) -> list[bytes]:
    return list(wire.encoded_tensor_chunks(STATE, chunk_bytes, in_result=True))


def test_a_sent_chunk_is_a_view_of_the_received_bytes() -> None:
    data = sent_chunks()[0]
    (parsed,) = chunk_views.result_chunk(data)
    assert parsed.data.obj is data  # no copy: a view of the message gRPC handed over
    assert [fields_of(parsed)] == protobuf_reading(data)
    assert fields_of(parsed)[:4] == ("w", "float32", (30, 100), 0)


def test_small_tensors_travel_together_within_a_chunk() -> None:
    """A model that fits in a chunk is one message; pieces are never reordered, and no message's
    pieces together pass chunk_bytes; each reads as protobuf reads it."""
    state = {f"t{i}": np.full(i + 1, i, dtype=np.float32) for i in range(24)}
    (whole,) = wire.encoded_tensor_chunks(state, 4096, in_result=True)
    parsed = chunk_views.result_chunk(whole)
    assert [chunk.name for chunk in parsed] == list(state)
    assert [fields_of(chunk) for chunk in parsed] == protobuf_reading(whole)
    assert all(bytes(chunk.data) == state[chunk.name].tobytes() for chunk in parsed)
    messages = list(wire.encoded_tensor_chunks(STATE, 4096))  # GetModel's, on the site: w's pieces, then b's
    pieces = [chunk for data in messages for chunk in chunk_views.tensor_chunks(data)]
    assert [(chunk.name, chunk.offset) for chunk in pieces] == [(n, o) for n, _, _, o, _, _ in wire.tensor_pieces(STATE, 4096)]
    assert len(messages) < len(pieces)  # w's last piece and b share a message
    for data in messages:
        parsed = chunk_views.tensor_chunks(data)
        assert sum(len(chunk.data) for chunk in parsed) <= 4096
        assert [fields_of(chunk) for chunk in parsed] == protobuf_chunks(pb.TensorChunk.FromString(data))


def test_a_more_chunk_holding_more_is_refused() -> None:
    nested = pb.TensorChunk(name="w", data=b"a" * 4, more=[pb.TensorChunk(name="b", more=[pb.TensorChunk(name="c")])])
    assert isinstance(chunk_views.result_chunk(pb.ResultChunk(tensor=nested).SerializeToString()), wire.Undecodable)
    with pytest.raises(DecodeError, match="holds a 'more' of its own"):
        chunk_views.tensor_chunks(nested.SerializeToString())


def test_every_sent_chunk_reads_as_protobuf_reads_it() -> None:
    for data in sent_chunks():
        assert view_reading(data) == protobuf_reading(data)
    for data in wire.encoded_tensor_chunks(STATE, 4096):  # GetModel's chunks, on the site
        parsed = chunk_views.tensor_chunks(data)
        assert [fields_of(chunk) for chunk in parsed] == protobuf_chunks(pb.TensorChunk.FromString(data))


def test_a_header_is_parsed_by_protobuf() -> None:
    data = pb.ResultChunk(header=pb.ResultHeader(round_number=3, tensor_count=2)).SerializeToString()
    parsed = chunk_views.result_chunk(data)
    assert isinstance(parsed, pb.ResultChunk) and parsed.header.round_number == 3


def tensor_message(*fields: bytes) -> bytes:
    inner = b"".join(fields)
    return bytes([2 << 3 | 2]) + wire._varint(len(inner)) + inner


def field(number: int, value: bytes) -> bytes:
    return bytes([number << 3 | 2]) + wire._varint(len(value)) + value


@pytest.mark.parametrize(
    "data",
    [
        # data first, the name after it
        tensor_message(field(5, b"\x00" * 8), field(1, b"w"), field(2, b"float32")),
        # data twice: protobuf keeps the last
        tensor_message(field(1, b"w"), field(5, b"a" * 4), field(5, b"b" * 8)),
        # no data at all
        tensor_message(field(1, b"w"), field(2, b"float32")),
        # a tensor, then a header: the oneof keeps the header
        tensor_message(field(1, b"w"), field(5, b"a" * 4)) + field(1, b""),
        # a header, then a tensor
        field(1, b"") + tensor_message(field(1, b"w"), field(5, b"a" * 4)),
        # the tensor twice: protobuf merges them
        tensor_message(field(1, b"w"), field(5, b"a" * 4)) + tensor_message(field(2, b"int8")),
        # a name that is not UTF-8
        tensor_message(field(1, b"\xff\xfe"), field(5, b"a" * 4)),
        # a length past the end, inside and outside
        tensor_message(field(1, b"w"), bytes([5 << 3 | 2]) + wire._varint(100) + b"a" * 4),
        bytes([2 << 3 | 2]) + wire._varint(100) + field(5, b"a"),
        # unknown fields of every wire type, and a field 5 of the wrong type
        tensor_message(field(9, b"x"), bytes([10 << 3 | 0, 7]), bytes([11 << 3 | 1]) + b"\x00" * 8,
                       bytes([12 << 3 | 5]) + b"\x00" * 4, field(5, b"a" * 4), bytes([5 << 3 | 0, 1])),
        # a group wire type, a varint that never ends, nothing
        tensor_message(bytes([1 << 3 | 3]), field(5, b"a")),
        tensor_message(bytes([4 << 3 | 0]) + b"\xff" * 12, field(5, b"a")),
        b"",
        b"\x12",
    ],
)
def test_a_message_not_laid_out_as_sent_reads_as_protobuf_reads_it(data: bytes) -> None:
    assert view_reading(data) == protobuf_reading(data)


def test_mangled_chunks_read_as_protobuf_reads_them() -> None:
    """Random bytes changed, cut or added in sent chunks: the two readings never differ."""
    rng = random.Random(7)
    chunks = sent_chunks(64)
    for _ in range(3000):
        data = bytearray(rng.choice(chunks))
        for _ in range(rng.randint(1, 3)):
            what = rng.random()
            at = rng.randrange(min(len(data), 40) + 1)  # the fields before the data are what can go wrong
            if what < 0.6 and at < len(data):
                data[at] = rng.randrange(256)
            elif what < 0.8:
                del data[at:]
            else:
                data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
        assert view_reading(bytes(data)) == protobuf_reading(bytes(data)), bytes(data[:48]).hex()


def test_mangled_messages_of_several_chunks_read_as_protobuf_reads_them() -> None:
    rng = random.Random(11)
    state = {f"t{i}": np.full(3, i, dtype=np.float32) for i in range(6)}
    (whole,) = wire.encoded_tensor_chunks(state, 4096, in_result=True)
    for _ in range(3000):
        data = bytearray(whole)
        at = rng.randrange(len(data))
        data[at] = rng.randrange(256)
        assert view_reading(bytes(data)) == protobuf_reading(bytes(data)), bytes(data).hex()
