from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Header(_message.Message):
    __slots__ = ("sender", "plan_hash", "workspace_hash")
    SENDER_FIELD_NUMBER: _ClassVar[int]
    PLAN_HASH_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_HASH_FIELD_NUMBER: _ClassVar[int]
    sender: str
    plan_hash: str
    workspace_hash: str
    def __init__(self, sender: _Optional[str] = ..., plan_hash: _Optional[str] = ..., workspace_hash: _Optional[str] = ...) -> None: ...

class JoinRequest(_message.Message):
    __slots__ = ("header",)
    HEADER_FIELD_NUMBER: _ClassVar[int]
    header: Header
    def __init__(self, header: _Optional[_Union[Header, _Mapping]] = ...) -> None: ...

class JoinResponse(_message.Message):
    __slots__ = ("plan_hash", "rounds_to_train", "round_number", "workspace_hash")
    PLAN_HASH_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_TO_TRAIN_FIELD_NUMBER: _ClassVar[int]
    ROUND_NUMBER_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_HASH_FIELD_NUMBER: _ClassVar[int]
    plan_hash: str
    rounds_to_train: int
    round_number: int
    workspace_hash: str
    def __init__(self, plan_hash: _Optional[str] = ..., rounds_to_train: _Optional[int] = ..., round_number: _Optional[int] = ..., workspace_hash: _Optional[str] = ...) -> None: ...

class TasksRequest(_message.Message):
    __slots__ = ("header",)
    HEADER_FIELD_NUMBER: _ClassVar[int]
    header: Header
    def __init__(self, header: _Optional[_Union[Header, _Mapping]] = ...) -> None: ...

class TaskSpec(_message.Message):
    __slots__ = ("name", "function", "kwargs_json", "returns_model")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    KWARGS_JSON_FIELD_NUMBER: _ClassVar[int]
    RETURNS_MODEL_FIELD_NUMBER: _ClassVar[int]
    name: str
    function: str
    kwargs_json: str
    returns_model: bool
    def __init__(self, name: _Optional[str] = ..., function: _Optional[str] = ..., kwargs_json: _Optional[str] = ..., returns_model: _Optional[bool] = ...) -> None: ...

class ConfigValue(_message.Message):
    __slots__ = ("bool_value", "int_value", "float_value", "string_value")
    BOOL_VALUE_FIELD_NUMBER: _ClassVar[int]
    INT_VALUE_FIELD_NUMBER: _ClassVar[int]
    FLOAT_VALUE_FIELD_NUMBER: _ClassVar[int]
    STRING_VALUE_FIELD_NUMBER: _ClassVar[int]
    bool_value: bool
    int_value: int
    float_value: float
    string_value: str
    def __init__(self, bool_value: _Optional[bool] = ..., int_value: _Optional[int] = ..., float_value: _Optional[float] = ..., string_value: _Optional[str] = ...) -> None: ...

class TasksResponse(_message.Message):
    __slots__ = ("action", "round_number", "tasks", "config", "phase", "phase_payload")
    class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        RUN: _ClassVar[TasksResponse.Action]
        WAIT: _ClassVar[TasksResponse.Action]
        QUIT: _ClassVar[TasksResponse.Action]
    RUN: TasksResponse.Action
    WAIT: TasksResponse.Action
    QUIT: TasksResponse.Action
    class ConfigEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ConfigValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ConfigValue, _Mapping]] = ...) -> None: ...
    ACTION_FIELD_NUMBER: _ClassVar[int]
    ROUND_NUMBER_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    PHASE_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    action: TasksResponse.Action
    round_number: int
    tasks: _containers.RepeatedCompositeFieldContainer[TaskSpec]
    config: _containers.MessageMap[str, ConfigValue]
    phase: str
    phase_payload: bytes
    def __init__(self, action: _Optional[_Union[TasksResponse.Action, str]] = ..., round_number: _Optional[int] = ..., tasks: _Optional[_Iterable[_Union[TaskSpec, _Mapping]]] = ..., config: _Optional[_Mapping[str, ConfigValue]] = ..., phase: _Optional[str] = ..., phase_payload: _Optional[bytes] = ...) -> None: ...

class ModelRequest(_message.Message):
    __slots__ = ("header", "round_number")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    ROUND_NUMBER_FIELD_NUMBER: _ClassVar[int]
    header: Header
    round_number: int
    def __init__(self, header: _Optional[_Union[Header, _Mapping]] = ..., round_number: _Optional[int] = ...) -> None: ...

class TensorChunk(_message.Message):
    __slots__ = ("name", "dtype", "shape", "offset", "data", "encoding", "more")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    offset: int
    data: bytes
    encoding: str
    more: _containers.RepeatedCompositeFieldContainer[TensorChunk]
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., encoding: _Optional[str] = ..., more: _Optional[_Iterable[_Union[TensorChunk, _Mapping]]] = ...) -> None: ...

class ResultHeader(_message.Message):
    __slots__ = ("header", "round_number", "task", "sample_count", "metrics", "is_delta", "task_seconds", "tensor_count", "model_digest", "failure", "phase", "phase_payload")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    HEADER_FIELD_NUMBER: _ClassVar[int]
    ROUND_NUMBER_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    IS_DELTA_FIELD_NUMBER: _ClassVar[int]
    TASK_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TENSOR_COUNT_FIELD_NUMBER: _ClassVar[int]
    MODEL_DIGEST_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    PHASE_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    header: Header
    round_number: int
    task: str
    sample_count: int
    metrics: _containers.ScalarMap[str, float]
    is_delta: bool
    task_seconds: float
    tensor_count: int
    model_digest: str
    failure: str
    phase: str
    phase_payload: bytes
    def __init__(self, header: _Optional[_Union[Header, _Mapping]] = ..., round_number: _Optional[int] = ..., task: _Optional[str] = ..., sample_count: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ..., is_delta: _Optional[bool] = ..., task_seconds: _Optional[float] = ..., tensor_count: _Optional[int] = ..., model_digest: _Optional[str] = ..., failure: _Optional[str] = ..., phase: _Optional[str] = ..., phase_payload: _Optional[bytes] = ...) -> None: ...

class ResultChunk(_message.Message):
    __slots__ = ("header", "tensor")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    header: ResultHeader
    tensor: TensorChunk
    def __init__(self, header: _Optional[_Union[ResultHeader, _Mapping]] = ..., tensor: _Optional[_Union[TensorChunk, _Mapping]] = ...) -> None: ...

class ResultAck(_message.Message):
    __slots__ = ("accepted", "reason")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    reason: str
    def __init__(self, accepted: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...
