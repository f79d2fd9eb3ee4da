"""The wire's per-round config, phase and tensor encoding: typed, bounded, refused when malformed,
over real mutual TLS on 127.0.0.1 (the fake service of test_transport) and in process."""

from __future__ import annotations

import dataclasses

import pytest
from test_transport import PLAN, FakeService, Federation, a_result, pki, small_model  # noqa: F401  (pki is a fixture)

from accord.errors import AccordError, RefusedError
from accord.messages import Action, TaskAssignment
from accord.transport import wire
from accord.transport.inprocess import InProcessClient
from accord.transport.proto import accord_pb2 as pb

CONFIG = {"proximal_mu": 0.01, "local_epochs": 3, "warm": True, "schedule": "cosine", "zero": 0}


class ConfigService(FakeService):
    """The fake service, its assignments carrying a config and a phase."""

    def __init__(self, config: dict, phase: str = "train") -> None:
        super().__init__(small_model())
        self.config = config
        self.phase = phase
        self.payload = b""
        self.round_open = True

    def get_tasks(self, collaborator: str, plan_hash: str, timeout: float) -> TaskAssignment:
        assignment = super().get_tasks(collaborator, plan_hash, timeout)
        return dataclasses.replace(assignment, config=dict(self.config), phase=self.phase, payload=self.payload)


@pytest.fixture
def serve(pki):  # noqa: F811
    federations: list[Federation] = []

    def start(service: FakeService) -> Federation:
        federations.append(Federation(pki, service.model, service=service, long_poll_seconds=5.0))
        return federations[-1]

    yield start
    for federation in federations:
        federation.close()


# -- the config's types and bounds ----------------------------------------------------------


def test_config_values_keep_their_types_through_protobuf() -> None:
    message = pb.TasksResponse.FromString(
        wire.assignment_to_pb(TaskAssignment(Action.RUN, 3, (), CONFIG, "train")).SerializeToString()
    )
    back = wire.assignment_from_pb(message)
    assert back.config == CONFIG and back.phase == "train"
    assert [type(back.config[k]) for k in CONFIG] == [float, int, bool, str, int]  # a bool stays a bool
    assert wire.assignment_from_pb(pb.TasksResponse()).phase == "train"  # an empty phase reads as train


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({f"k{i}": 1 for i in range(wire.MAX_CONFIG_KEYS + 1)}, "65 keys; at most 64"),
        ({"k" * 65: 1}, "is not an identifier of at most 64 characters"),
        ({"os.system": 1}, "is not an identifier"),
        ({"note": "x" * (wire.MAX_CONFIG_STRING_CHARS + 1)}, "1025 characters; at most 1024"),
        ({"mu": float("nan")}, "'mu': the float nan is not finite"),
        ({"mu": float("inf")}, "'mu': the float inf is not finite"),
        ({"big": 2**63}, "does not fit in 64 bits"),
        ({"list": [1]}, "a list is not a bool, int, float or str"),
    ],
)
def test_a_config_outside_the_bounds_is_refused(config: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        wire.check_config(config)


def test_a_config_value_without_a_kind_and_a_malformed_phase_are_refused_on_receipt() -> None:
    empty = pb.TasksResponse(config={"mu": pb.ConfigValue()})
    with pytest.raises(ValueError, match="'mu' carries no value"):
        wire.assignment_from_pb(empty)
    nan = pb.TasksResponse(config={"mu": pb.ConfigValue(float_value=float("nan"))})
    with pytest.raises(ValueError, match="not finite"):
        wire.assignment_from_pb(nan)
    for phase in ("Train", "x" * 33, "mask\n", "../x"):
        with pytest.raises(ValueError, match="is not a lower-case name"):
            wire.assignment_from_pb(pb.TasksResponse(phase=phase))
    with pytest.raises(RefusedError, match="phase 'BAD' is not") as refused:
        wire.result_phase("BAD")
    assert refused.value.kind == "payload"


# -- over gRPC ------------------------------------------------------------------------------


def test_the_config_and_phase_travel_typed_to_the_site(serve) -> None:
    federation = serve(ConfigService(CONFIG, phase="train"))
    assignment = federation.client("col1").get_tasks()
    assert assignment.config == CONFIG and type(assignment.config["warm"]) is bool
    assert assignment.phase == "train"


def test_a_hostile_aggregators_config_is_refused_at_the_site_in_one_line(serve, monkeypatch) -> None:
    federation = serve(ConfigService({}))

    def hostile(assignment: TaskAssignment) -> pb.TasksResponse:  # what a modified aggregator could send
        return pb.TasksResponse(
            action=pb.TasksResponse.RUN, round_number=2, config={"mu": pb.ConfigValue(float_value=float("inf"))}
        )

    monkeypatch.setattr(wire, "assignment_to_pb", hostile)  # the server's side only: the client decodes
    with pytest.raises(AccordError, match=r"sent malformed tasks: config key 'mu': the float inf is not finite") as exc:
        federation.client("col1").get_tasks()
    assert "same plan" in exc.value.fix or "same version" in exc.value.fix


def test_a_model_chunk_in_an_unknown_encoding_is_refused_at_the_site(serve, monkeypatch) -> None:
    federation = serve(ConfigService({}))
    plain = wire.encoded_tensor_chunks

    def encoded(state, chunk_bytes, in_result=False, encoded=None):
        for data in plain(state, chunk_bytes, in_result, encoded):
            chunk = pb.TensorChunk.FromString(data)
            chunk.encoding = "zstd"
            yield chunk.SerializeToString()

    monkeypatch.setattr(wire, "encoded_tensor_chunks", encoded)
    with pytest.raises(AccordError, match=r"arrived in encoding 'zstd'; the plan's compression_pipeline.download sends a \w+ tensor as 'raw'"):
        federation.client("col1").get_model(2)


def test_an_upload_in_an_unknown_encoding_is_refused_and_nothing_submitted(serve, monkeypatch) -> None:
    federation = serve(ConfigService({}))
    plain = wire.result_stream

    def encoded(*args, **kwargs):
        for message in plain(*args, **kwargs):
            if isinstance(message, bytes):  # a tensor chunk, serialized
                message = pb.ResultChunk.FromString(message)
                message.tensor.encoding = "fp16"
            yield message

    monkeypatch.setattr(wire, "result_stream", encoded)
    with pytest.raises(RefusedError, match="arrived in encoding 'fp16'") as refused:
        federation.client("col1").send_result(a_result(federation.service.model))
    assert refused.value.kind == "payload"
    assert federation.service.submissions == []
    assert any("encoding 'fp16'" in line for line in federation.refusals)  # the aggregator says why too


def test_the_result_phase_travels_and_a_malformed_one_is_refused_from_the_header(serve) -> None:
    federation = serve(ConfigService({}))
    client = federation.client("col1")
    client.send_result(a_result(federation.service.model, phase="train"))
    ((got, _),) = federation.service.submissions
    assert got.phase == "train"
    with pytest.raises(RefusedError, match="phase 'Mask!' is not a lower-case name") as refused:
        client.send_result(a_result(federation.service.model, phase="Mask!"))
    assert refused.value.kind == "payload"
    assert len(federation.service.expected) == 1  # refused before expect() and any tensor
    assert any("phase 'Mask!'" in line for line in federation.refusals)


def test_phase_payloads_travel_both_ways_and_an_oversized_one_is_refused(serve) -> None:
    federation = serve(ConfigService({}, phase="share"))
    service = federation.service
    client = federation.client("col1")
    service.payload = b"roster\x00" * 100
    assert client.get_tasks().payload == service.payload
    client.send_result(dataclasses.replace(a_result(service.model, phase="share"), tensors=None, payload=b"shares"))
    assert service.submissions[-1][0].payload == b"shares"
    huge = b"x" * (wire.MAX_PHASE_PAYLOAD_BYTES + 1)
    with pytest.raises(RefusedError, match=r"phase payload of \d+ bytes; at most") as refused:
        client.send_result(dataclasses.replace(a_result(service.model, phase="share"), tensors=None, payload=huge))
    assert refused.value.kind == "payload"
    with pytest.raises(ValueError, match="the assignment carries a phase payload"):
        wire.assignment_from_pb(pb.TasksResponse(phase="share", phase_payload=huge))
    in_process = InProcessClient(service, "col1", PLAN, long_poll_seconds=0.1)
    service.payload = huge
    with pytest.raises(ValueError, match="phase payload"):
        in_process.get_tasks()
    with pytest.raises(RefusedError, match="phase payload"):
        in_process.send_result(dataclasses.replace(a_result(service.model, phase="share"), tensors=None, payload=huge))


# -- in process -----------------------------------------------------------------------------


def test_the_in_process_client_checks_and_copies_the_config_and_phase_like_the_wire() -> None:
    service = ConfigService(CONFIG)
    client = InProcessClient(service, "col1", PLAN, long_poll_seconds=0.1)
    assignment = client.get_tasks()
    assert assignment.config == CONFIG and assignment.config is not service.config
    client.send_result(a_result(client.get_model(2), phase=""))
    assert service.submissions[0][0].phase == "train"
    with pytest.raises(RefusedError, match="phase 'X' is not"):
        client.send_result(a_result(service.model, phase="X"))
    service.config = {"mu": float("nan")}
    with pytest.raises(ValueError, match="not finite"):
        client.get_tasks()
