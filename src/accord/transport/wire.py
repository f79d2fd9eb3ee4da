"""Conversions between Accord's message dataclasses and the accord.v1 protobuf messages,
plus the gRPC channel options both ends share."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError, Message

from accord.errors import RefusedError
from accord.messages import Action, ConfigValue, FederationInfo, Task, TaskAssignment, TaskResult
from accord.tensors.codec import iter_tensor_chunks
from accord.tensors.compression import Encoded
from accord.tensors.digest import UpdateDigest
from accord.tensors.encodings import RAW
from accord.transport.proto import accord_pb2 as pb

MIB = 1024 * 1024
#: default size of one tensor chunk on the wire
DEFAULT_CHUNK_BYTES = 1 * MIB
#: the most model bytes a collaborator accepts from the aggregator
MAX_MODEL_BYTES = 64 * 1024**3
#: headroom over twice the model's size that an upload may declare when no limit is set
UPLOAD_SLACK_BYTES = 16 * MIB
#: trailing-metadata key carrying RefusedError.kind from server to client
REFUSAL_KIND_KEY = "accord-refusal-kind"
#: a site's failure text (peer text) is cut to this many characters
MAX_FAILURE_CHARS = 500
#: bounds on a per-round config received from the aggregator (a hostile one gets no further)
MAX_CONFIG_KEYS = 64
MAX_CONFIG_KEY_CHARS = 64
MAX_CONFIG_STRING_CHARS = 1024
#: a config key is a keyword argument's name
CONFIG_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: a phase is a short lower-case name; an empty one on the wire reads as the default
PHASE = re.compile(r"[a-z][a-z0-9_]{0,31}")
DEFAULT_PHASE = "train"
#: the most bytes a phase payload (either way) may carry: it travels in one message, under
#: channel_options' limit of one chunk plus 1 MiB (secure aggregation's roster of 100 sites is ~10 KB)
MAX_PHASE_PAYLOAD_BYTES = 1024 * 1024 - 4096
_INT64 = (-(2**63), 2**63 - 1)

_ACTION_TO_PB = {
    Action.RUN: pb.TasksResponse.RUN,
    Action.WAIT: pb.TasksResponse.WAIT,
    Action.QUIT: pb.TasksResponse.QUIT,
}
_ACTION_FROM_PB = {value: key for key, value in _ACTION_TO_PB.items()}


#: the largest HTTP/2 frame either end accepts (the protocol's maximum; gRPC's default is 16 KiB)
MAX_FRAME_BYTES = (1 << 24) - 1


def channel_options(chunk_bytes: int) -> list[tuple[str, Any]]:
    """Message limits (one chunk plus headroom), the largest HTTP/2 frame and keepalive settings for both ends."""
    limit = chunk_bytes + MIB
    return [
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
        ("grpc.http2.max_frame_size", MAX_FRAME_BYTES),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ]


def header(sender: str, plan_hash: str, workspace_hash: str = "") -> pb.Header:
    return pb.Header(sender=sender, plan_hash=plan_hash, workspace_hash=workspace_hash)


def info_to_pb(info: FederationInfo) -> pb.JoinResponse:
    return pb.JoinResponse(
        plan_hash=info.plan_hash,
        rounds_to_train=info.rounds_to_train,
        round_number=info.round_number,
        workspace_hash=info.workspace_hash,
    )


def info_from_pb(message: pb.JoinResponse) -> FederationInfo:
    return FederationInfo(
        plan_hash=message.plan_hash,
        rounds_to_train=message.rounds_to_train,
        round_number=message.round_number,
        workspace_hash=message.workspace_hash,
    )


def check_config(config: Mapping[str, Any]) -> dict[str, ConfigValue]:
    """A copy of a per-round config within the wire's bounds, or ValueError saying what is wrong:
    at most MAX_CONFIG_KEYS keys, each an identifier of at most MAX_CONFIG_KEY_CHARS characters;
    values bool, int (64-bit), finite float or str of at most MAX_CONFIG_STRING_CHARS characters."""
    if len(config) > MAX_CONFIG_KEYS:
        raise ValueError(f"the config has {len(config)} keys; at most {MAX_CONFIG_KEYS} are accepted")
    checked: dict[str, ConfigValue] = {}
    for key, value in config.items():
        if not isinstance(key, str) or len(key) > MAX_CONFIG_KEY_CHARS or not CONFIG_KEY.fullmatch(key):
            raise ValueError(
                f"config key {peer_text(str(key), 80)!r} is not an identifier of at most {MAX_CONFIG_KEY_CHARS} characters"
            )
        if isinstance(value, bool):
            pass
        elif isinstance(value, int):
            if not _INT64[0] <= value <= _INT64[1]:
                raise ValueError(f"config key {key!r}: the integer {value} does not fit in 64 bits")
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise ValueError(f"config key {key!r}: the float {value} is not finite")
        elif isinstance(value, str):
            if len(value) > MAX_CONFIG_STRING_CHARS:
                raise ValueError(f"config key {key!r}: the string has {len(value)} characters; at most {MAX_CONFIG_STRING_CHARS}")
        else:
            raise ValueError(f"config key {key!r}: a {type(value).__name__} is not a bool, int, float or str")
        checked[key] = value
    return checked


def config_to_pb(config: Mapping[str, ConfigValue]) -> dict[str, pb.ConfigValue]:
    """Each value as the ConfigValue of its kind (bool before int: a bool is an int in Python)."""
    entries: dict[str, pb.ConfigValue] = {}
    for key, value in check_config(config).items():
        if isinstance(value, bool):
            entries[key] = pb.ConfigValue(bool_value=value)
        elif isinstance(value, int):
            entries[key] = pb.ConfigValue(int_value=value)
        elif isinstance(value, float):
            entries[key] = pb.ConfigValue(float_value=value)
        else:
            entries[key] = pb.ConfigValue(string_value=value)
    return entries


def config_from_pb(entries: Mapping[str, pb.ConfigValue]) -> dict[str, ConfigValue]:
    """The config a TasksResponse carries, checked (check_config); a value with no kind set is refused."""
    if len(entries) > MAX_CONFIG_KEYS:  # before any value is read
        raise ValueError(f"the config has {len(entries)} keys; at most {MAX_CONFIG_KEYS} are accepted")
    values: dict[str, Any] = {}
    for key, entry in entries.items():
        kind = entry.WhichOneof("kind")
        if kind is None:
            raise ValueError(f"config key {peer_text(key, 80)!r} carries no value")
        values[key] = getattr(entry, kind)
    return check_config(values)


def phase_from_wire(text: str) -> str:
    """A phase name from a peer ("" = the default, train), or ValueError if it is not a short lower-case name."""
    if not text:
        return DEFAULT_PHASE
    if not PHASE.fullmatch(text):
        raise ValueError(f"phase {peer_text(text, 40)!r} is not a lower-case name of at most 32 characters")
    return text


def phase_payload(data: bytes, what: str) -> bytes:
    """A phase payload from a peer, or ValueError if it is larger than MAX_PHASE_PAYLOAD_BYTES."""
    if len(data) > MAX_PHASE_PAYLOAD_BYTES:
        raise ValueError(f"{what} carries a phase payload of {len(data)} bytes; at most {MAX_PHASE_PAYLOAD_BYTES}")
    return bytes(data)


#: a received chunk's name, dtype, shape, offset, data and encoding
ChunkFields = tuple[str, str, tuple[int, ...], int, bytes | memoryview, str]


def chunk_fields(chunk: Any) -> ChunkFields:
    """A received chunk's (a pb.TensorChunk or a chunk_views.ChunkView) name, dtype, shape,
    offset, data and encoding for the assembler, which refuses an encoding the plan's
    compression_pipeline does not send."""
    return chunk.name, chunk.dtype, tuple(chunk.shape), chunk.offset, chunk.data, chunk.encoding


def message_chunk_fields(message: Any) -> Iterator[ChunkFields]:
    """``chunk_fields`` of a received pb.TensorChunk and of each whole chunk it carries in
    ``more`` (small tensors travel together in one message)."""
    yield chunk_fields(message)
    for chunk in message.more:
        yield chunk_fields(chunk)


def assignment_to_pb(assignment: TaskAssignment) -> pb.TasksResponse:
    return pb.TasksResponse(
        action=_ACTION_TO_PB[Action(assignment.action)],
        round_number=assignment.round_number,
        tasks=[
            pb.TaskSpec(
                name=task.name,
                function=task.function,
                kwargs_json=json.dumps(task.kwargs),
                returns_model=task.returns_model,
            )
            for task in assignment.tasks
        ],
        config=config_to_pb(assignment.config),
        phase=assignment.phase,
        phase_payload=phase_payload(assignment.payload, "the assignment"),
    )


def assignment_from_pb(message: pb.TasksResponse) -> TaskAssignment:
    """Rebuild a TaskAssignment; kwargs are JSON (never unpickled) and must be an object; the
    config and phase are checked (check_config, phase_from_wire). ValueError if malformed."""
    tasks = []
    for spec in message.tasks:
        kwargs = json.loads(spec.kwargs_json) if spec.kwargs_json else {}
        if not isinstance(kwargs, dict):
            raise ValueError(f"task {spec.name!r}: kwargs must be a JSON object")
        tasks.append(Task(spec.name, spec.function, kwargs, spec.returns_model))
    return TaskAssignment(
        action=_ACTION_FROM_PB[message.action],
        round_number=message.round_number,
        tasks=tuple(tasks),
        config=config_from_pb(message.config),
        phase=phase_from_wire(message.phase),
        payload=phase_payload(message.phase_payload, "the assignment"),
    )


#: protobuf keys (field number << 3 | length-delimited) of TensorChunk.data, TensorChunk.more and ResultChunk.tensor
_DATA_KEY = bytes([5 << 3 | 2])
_MORE_KEY = bytes([7 << 3 | 2])
_RESULT_TENSOR_KEY = bytes([2 << 3 | 2])


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encoded_tensor_chunks(
    state: Mapping[str, np.ndarray], chunk_bytes: int, in_result: bool = False, encoded: Encoded | None = None
) -> Iterator[bytes]:
    """The state as serialized TensorChunk messages (``in_result``: ResultChunk messages holding
    one), raw or as ``encoded`` cuts it, made one at a time, each with a single copy of its
    bytes: the fields but ``data`` are serialized by protobuf, ``data`` is appended as the field
    it is (a protobuf message is the concatenation of its fields). Building and serializing the
    message instead copies each 1 MiB chunk three more times, about 20x slower
    (bench/wire_throughput.py). Pieces travel together while they fit in ``chunk_bytes``: the
    first as the message's TensorChunk, the others, in order, in its ``more``; so a model that
    fits in one chunk is one message (each message costs both ends far more than its bytes do),
    and a full chunk is a message of its own, its ``data`` at the top level."""
    group: list[tuple[int, list[bytes | memoryview]]] = []  # (serialized size, parts) of each piece
    filled = 0
    for name, dtype, shape, offset, encoding, data in tensor_pieces(state, chunk_bytes, encoded):
        meta = pb.TensorChunk(name=name, dtype=dtype, shape=shape, offset=offset, encoding=encoding).SerializeToString()
        nbytes = memoryview(data).nbytes
        size = _varint(nbytes)
        piece = (len(meta) + len(_DATA_KEY) + len(size) + nbytes, [meta, _DATA_KEY, size, data])
        if group and filled + piece[0] > chunk_bytes:
            yield _joined(group, in_result)
            group, filled = [], 0
        group.append(piece)
        filled += piece[0]
    if group:
        yield _joined(group, in_result)


def _joined(group: list[tuple[int, list[bytes | memoryview]]], in_result: bool) -> bytes:
    """One message of the pieces in ``group``: the first's fields, then each other as a ``more`` field."""
    (size, parts), rest = group[0], group[1:]
    for piece_size, piece_parts in rest:
        size += len(_MORE_KEY) + len(_varint(piece_size)) + piece_size
        parts += [_MORE_KEY, _varint(piece_size), *piece_parts]
    if in_result:
        parts = [_RESULT_TENSOR_KEY, _varint(size), *parts]
    return b"".join(parts)


def tensor_pieces(
    state: Mapping[str, np.ndarray], chunk_bytes: int, encoded: Encoded | None = None
) -> Iterable[tuple[str, str, tuple[int, ...], int, str, bytes | memoryview]]:
    """The (name, dtype, shape, offset, encoding, data) of each chunk the state travels in, raw
    or as ``encoded`` cuts it, in the order sent."""
    if encoded is None:
        return ((n, d, s, o, RAW, x) for n, d, s, o, x in iter_tensor_chunks(state, chunk_bytes))
    return encoded.chunks(chunk_bytes)


def sent_update_digest(state: Mapping[str, np.ndarray], chunk_bytes: int, encoded: Encoded | None = None) -> str:
    """The UpdateDigest of the chunks ``encoded_tensor_chunks`` sends of ``state`` (the site's
    side of the audit trail; the aggregator hashes the chunks as they arrive)."""
    digest = UpdateDigest()
    for name, dtype, shape, offset, encoding, data in tensor_pieces(state, chunk_bytes, encoded):
        digest.add(name, dtype, shape, offset, encoding, data)
    return digest.hexdigest()


def serialize(message: Message | bytes) -> bytes:
    """A message's bytes for gRPC; bytes already serialized (``encoded_tensor_chunks``) as they are."""
    return message if isinstance(message, bytes) else message.SerializeToString()


def send_result_method(channel: Any) -> Any:
    """SendResult on ``channel`` (a grpc or grpc.aio channel) for ``result_stream``'s messages,
    whose tensor chunks come serialized already (``encoded_tensor_chunks``)."""
    return channel.stream_unary(
        "/accord.v1.Aggregator/SendResult", request_serializer=serialize, response_deserializer=pb.ResultAck.FromString
    )


def result_stream(
    result: TaskResult, sender: str, plan_hash: str, chunk_bytes: int, encoded: Encoded | None = None
) -> Iterator[pb.ResultChunk | bytes]:
    """A SendResult request stream: the header, then each tensor's chunks, raw or ``encoded``'s
    (serialized: ``serialize``)."""
    tensors = result.tensors or {}
    yield pb.ResultChunk(
        header=pb.ResultHeader(
            header=header(sender, plan_hash),
            round_number=result.round_number,
            task=result.task,
            sample_count=result.sample_count,
            metrics={str(k): float(v) for k, v in result.metrics.items()},
            is_delta=result.is_delta,
            task_seconds=result.task_seconds,
            tensor_count=len(tensors),
            model_digest=result.model_digest,
            failure=result.failure,
            phase=result.phase,
            phase_payload=result.payload,
        )
    )
    yield from encoded_tensor_chunks(tensors, chunk_bytes, in_result=True, encoded=encoded)


def result_from_pb(
    collaborator: str, message: pb.ResultHeader, tensors: Mapping[str, np.ndarray]
) -> TaskResult:
    """The TaskResult a header describes, from the authenticated ``collaborator``."""
    if len(tensors) != message.tensor_count:
        raise RefusedError(
            f"the result header announces {message.tensor_count} tensors but {len(tensors)} arrived",
            kind="payload",
        )
    return TaskResult(
        collaborator=collaborator,
        round_number=message.round_number,
        task=message.task,
        sample_count=message.sample_count,
        metrics=dict(message.metrics),
        tensors=tensors or None,
        is_delta=message.is_delta,
        task_seconds=message.task_seconds,
        model_digest=message.model_digest,
        failure=peer_text(message.failure, MAX_FAILURE_CHARS),
        phase=result_phase(message.phase, message.phase_payload),
        payload=bytes(message.phase_payload),
    )


def result_phase(phase: str, payload: bytes = b"") -> str:
    """The phase a result header names, refused (RefusedError, kind payload) if malformed or if
    its phase ``payload`` is larger than MAX_PHASE_PAYLOAD_BYTES."""
    try:
        phase_payload(payload, "the result header")
    except ValueError as exc:
        raise RefusedError(str(exc), kind="payload") from None
    try:
        return phase_from_wire(phase)
    except ValueError as exc:
        raise RefusedError(f"the result header's {exc}", kind="payload") from None


def peer_text(text: str, limit: int) -> str:
    """``text`` from a peer, safe for one log line: control characters (newlines included)
    escaped, at most ``limit`` characters (cut short with a mark)."""
    safe = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text[: limit * 2])
    mark = " ... (cut short)"
    return safe if len(safe) <= limit else safe[: limit - len(mark)] + mark


def model_bytes(expected: Mapping[str, tuple[str, tuple[int, ...]]]) -> int:
    """Bytes of a model whose tensors are ``expected`` (name -> (dtype, shape))."""
    return sum(math.prod(shape) * np.dtype(dtype).itemsize for dtype, shape in expected.values())


def upload_limit(expected: Mapping[str, tuple[str, tuple[int, ...]]], max_update_bytes: int | None) -> int:
    """The most bytes one uploaded result may declare: the configured limit, or twice the model plus slack."""
    if max_update_bytes:
        return max_update_bytes
    return 2 * model_bytes(expected) + UPLOAD_SLACK_BYTES


def complete_model(
    state: Mapping[str, np.ndarray], expected: Mapping[str, tuple[str, tuple[int, ...]]] | None
) -> dict[str, np.ndarray]:
    """``state`` as received, refused if it lacks a tensor of ``expected`` (the site's own model)."""
    missing = [] if expected is None else [name for name in expected if name not in state]
    if missing:
        raise RefusedError(f"the model lacks tensors {missing[:5]} of this site's model", kind="payload")
    return dict(state)


class Undecodable:
    """Stands for a request body that is not the expected protobuf message."""

    def __init__(self, expected: str, error: str) -> None:
        self.expected = expected
        self.error = error

    def refusal(self) -> RefusedError:
        return RefusedError(f"the request is not a valid accord.v1.{self.expected}: {self.error[:200]}", kind="payload")


def lenient(message: type[Message]) -> Callable[[bytes], Any]:
    """A deserializer that returns Undecodable instead of raising.

    When a deserializer raises, grpcio's server aborts the call twice and never frees it
    (about 16 KB per bad body): a collaborator could grow the aggregator's memory at will.
    """

    def parse(data: bytes) -> Any:
        try:
            return message.FromString(data)
        except DecodeError as exc:
            return Undecodable(message.DESCRIPTOR.name, str(exc))

    return parse
