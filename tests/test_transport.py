"""The gRPC transport over real mutual TLS on 127.0.0.1, against a small fake service.

These test the transport in isolation; the end-to-end tests use the real aggregator.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from accord.aggregator.staging import StagedFile
from accord.errors import AccordError, PKIError, RefusedError
from accord.messages import Action, FederationInfo, Task, TaskAssignment, TaskResult
from accord.pki import load_pem_cert, make_federation_pki
from accord.tensors.codec import InMemory
from accord.tensors.state import safetensors_header
from accord.transport import wire
from accord.transport.grpc_client import GrpcAggregatorClient
from accord.transport.grpc_server import GrpcAggregatorServer
from accord.transport.inprocess import InProcessClient
from accord.transport.proto import accord_pb2 as pb
from accord.transport.tls import ClientTLS, ServerTLS

PLAN = "plan-hash-1"
MEMBERS = ("col1", "col2")
CHUNK = 4 * 1024 * 1024


def small_model() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "dense.weight": rng.standard_normal((64, 32)).astype(np.float32),
        "dense.bias": np.zeros(32, dtype=np.float32),
        "steps": np.array(7, dtype=np.int64),
        "empty": np.zeros((0, 3), dtype=np.float32),
    }


class FakeService:
    """A thread-safe AggregatorService that records every call and submission."""

    def __init__(self, model: dict[str, np.ndarray]) -> None:
        self.model = model
        self.calls: list[tuple[str, str]] = []
        self.submissions: list[tuple[TaskResult, str]] = []
        self.expected: list[tuple[str, str]] = []  # (model_digest, failure) of each result header
        self.cond = threading.Condition()
        self.round_open = False
        self.listeners: list = []
        self.slots_in_use = 0
        self.stage_dir: Path | None = None
        self.slot_entered = threading.Event()
        self.slot_released = threading.Event()

    def _check(self, method: str, name: str, plan_hash: str) -> None:
        with self.cond:
            self.calls.append((method, name))
        if name not in MEMBERS:
            raise RefusedError(f"collaborator {name!r} is not in the plan", kind="identity")
        if plan_hash != PLAN:
            raise RefusedError(f"plan hash {plan_hash!r} differs from the aggregator's", kind="plan")

    def check_member(self, collaborator: str) -> None:
        if collaborator not in MEMBERS:
            raise RefusedError(f"collaborator {collaborator!r} is not in the plan", kind="identity")

    def join(self, collaborator: str, plan_hash: str, workspace_hash: str | None = None) -> FederationInfo:
        self._check("join", collaborator, plan_hash)
        return FederationInfo(plan_hash=PLAN, rounds_to_train=5, round_number=2)

    def get_tasks(self, collaborator: str, plan_hash: str, timeout: float) -> TaskAssignment:
        self._check("get_tasks", collaborator, plan_hash)
        with self.cond:
            if not self.cond.wait_for(lambda: self.round_open, timeout):
                return TaskAssignment(Action.WAIT, 2)
        tasks = (
            Task("aggregated_model_validation", "validate", {"apply": "global"}),
            Task("train", "train_batches", {"epochs": 2, "lr": 0.01, "tags": ["a", None]}, True),
        )
        return TaskAssignment(Action.RUN, 2, tasks)

    def poll_tasks(self, collaborator: str, plan_hash: str, final: bool) -> TaskAssignment | None:
        with self.cond:
            if not self.round_open and not final:
                self._check("poll_tasks", collaborator, plan_hash)
                return None
        return self.get_tasks(collaborator, plan_hash, 0)

    def watch(self, listener):
        with self.cond:
            self.listeners.append(listener)
        return lambda: self.listeners.remove(listener)

    def open_round(self) -> None:
        with self.cond:
            self.round_open = True
            self.cond.notify_all()
            for listener in self.listeners:
                listener()

    def get_model(self, collaborator: str, plan_hash: str, round_number: int) -> dict[str, np.ndarray]:
        self._check("get_model", collaborator, plan_hash)
        return self.model

    def expect(
        self, collaborator: str, plan_hash: str, round_number: int, task: str, model_digest: str, failure: str = ""
    ) -> None:
        self._check("expect", collaborator, plan_hash)
        self.expected.append((model_digest, failure))
        if task == "not-owed":
            raise RefusedError(f"task {task!r} of round {round_number} is not owed", kind="state")

    def submit(self, result: TaskResult, plan_hash: str) -> None:
        self._check("submit", result.collaborator, plan_hash)
        if result.round_number != 2:
            raise RefusedError(f"round {result.round_number} is not open", kind="state")
        if isinstance(result.tensors, StagedFile):
            result.tensors.commit()
        with self.cond:
            self.submissions.append((result, plan_hash))

    @contextlib.contextmanager
    def upload_slot(self):
        with self.cond:
            self.slots_in_use += 1
        self.slot_entered.set()
        try:
            yield
        finally:
            with self.cond:
                self.slots_in_use -= 1
            self.slot_released.set()

    def receiving(self, collaborator: str, round_number: int, task: str, is_delta: bool = False) -> InMemory | StagedFile:
        """In memory; into a staged file of ``stage_dir`` once a test sets it."""
        if self.stage_dir is None:
            return InMemory()
        return StagedFile(self.stage_dir, self.expected_tensors(), f"the {task} result of {collaborator}")

    def expected_tensors(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        return {name: (value.dtype.name, value.shape) for name, value in self.model.items()}


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("pki")
    ours = make_federation_pki(root / "ca", "localhost", ["col1", "col2", "stranger"])
    theirs = make_federation_pki(root / "other", "localhost", ["col1"])
    material = {
        "server": ServerTLS(ours.aggregator_cert("localhost"), ours.aggregator_key("localhost"), ours.chain),
        "foreign_col1": ClientTLS(theirs.collaborator_cert("col1"), theirs.collaborator_key("col1"), theirs.chain),
    }
    for name in ("col1", "col2", "stranger"):
        material[name] = ClientTLS(ours.collaborator_cert(name), ours.collaborator_key(name), ours.chain)
    return material


class Federation:
    """A fake service served over gRPC on 127.0.0.1, and a factory of clients."""

    def __init__(self, pki, model, service: FakeService | None = None, **server_kwargs) -> None:
        self.pki = pki
        self.service = FakeService(model) if service is None else service
        self.refusals: list[str] = []
        self.server = GrpcAggregatorServer(
            self.service, "127.0.0.1", 0, pki["server"], on_refusal=self.refusals.append, **server_kwargs
        )
        self.port = self.server.start()
        self.clients: list[GrpcAggregatorClient] = []

    def client(self, name: str, cert: str | None = None, plan_hash: str = PLAN, **kwargs) -> GrpcAggregatorClient:
        kwargs.setdefault("connect_timeout", 10.0)
        client = GrpcAggregatorClient(name, plan_hash, "localhost", self.port, self.pki[cert or name], **kwargs)
        self.clients.append(client)
        return client

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self.service.open_round()  # release any long-poll still parked in the fake
        self.server.stop(0)


@pytest.fixture
def federation(pki):
    fed = Federation(pki, small_model(), long_poll_seconds=10.0)
    yield fed
    fed.close()


def a_result(model, **changes) -> TaskResult:
    fields = dict(
        collaborator="ignored",
        round_number=2,
        task="train",
        sample_count=640,
        metrics={"loss": 0.25, "accuracy": 0.9},
        tensors={k: v + 1 for k, v in model.items()},
        is_delta=True,
        task_seconds=1.5,
    )
    fields.update(changes)
    return TaskResult(**fields)


def assert_state_equal(a, b) -> None:
    assert list(a) == list(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape
        np.testing.assert_array_equal(a[name], b[name])


# -- round trip -----------------------------------------------------------------------------


def test_join_tasks_model_and_result_round_trip(federation):
    client = federation.client("col1")
    assert client.join() == FederationInfo(PLAN, 5, 2)
    federation.service.open_round()
    assignment = client.get_tasks()
    assert assignment.action is Action.RUN and assignment.round_number == 2
    assert assignment.tasks[1] == Task("train", "train_batches", {"epochs": 2, "lr": 0.01, "tags": ["a", None]}, True)
    model = client.get_model(2)
    assert_state_equal(model, federation.service.model)

    result = a_result(model)
    client.send_result(result)
    client.send_result(a_result(model, task="aggregated_model_validation", tensors=None, is_delta=False))
    (got, plan), (metrics_only, _) = federation.service.submissions
    assert plan == PLAN and got.collaborator == "col1"  # the authenticated name, not the claimed field
    summary = (got.round_number, got.task, got.sample_count, got.is_delta, got.task_seconds)
    assert summary == (2, "train", 640, True, 1.5)
    assert got.metrics == pytest.approx(result.metrics)
    assert_state_equal(got.tensors, result.tensors)
    assert metrics_only.tensors is None and metrics_only.task == "aggregated_model_validation"
    assert federation.service.slots_in_use == 0 and federation.refusals == []


def test_a_model_over_100_mb_round_trips_in_4_mib_chunks(pki):
    rng = np.random.default_rng(2)
    model = {
        "encoder.weight": rng.standard_normal((4096, 4096), dtype=np.float32),  # 64 MiB
        "decoder.weight": rng.standard_normal((2048, 4096), dtype=np.float32),  # 32 MiB
        "head.weight": rng.standard_normal((1000, 1818), dtype=np.float32),
        "head.bias": rng.standard_normal(1000, dtype=np.float32),
    }
    assert sum(v.size for v in model.values()) >= 26_300_000
    fed = Federation(pki, model, chunk_bytes=CHUNK)
    try:
        client = fed.client("col2", chunk_bytes=CHUNK)
        client.join()
        received = client.get_model(2)
        assert_state_equal(received, model)
        assert not any(np.shares_memory(received[k], model[k]) for k in model)
        client.send_result(a_result(received, tensors=received))
        (got, _), = fed.service.submissions
        assert_state_equal(got.tensors, model)
    finally:
        fed.close()


def test_long_poll_is_woken_when_the_round_opens(pki):
    # the poll lasts 10 minutes: an answer before the join below gives up can only come from the wake-up
    fed = Federation(pki, small_model(), long_poll_seconds=600.0)
    try:
        client = fed.client("col1", long_poll_seconds=600.0)
        client.join()
        answer: list[TaskAssignment] = []
        poller = threading.Thread(target=lambda: answer.append(client.get_tasks()), daemon=True)
        poller.start()
        time.sleep(0.3)
        assert poller.is_alive() and not answer  # parked on the server, not returned
        fed.service.open_round()
        poller.join(timeout=120)
        assert not poller.is_alive() and answer and answer[0].action is Action.RUN
    finally:
        fed.close()


def test_long_poll_times_out_with_wait(pki):
    fed = Federation(pki, small_model(), long_poll_seconds=0.3)
    try:
        assert fed.client("col1", long_poll_seconds=0.3).get_tasks().action is Action.WAIT
    finally:
        fed.close()


# -- identity -------------------------------------------------------------------------------


def test_a_claimed_name_differing_from_the_certificate_is_refused(federation, caplog):
    impostor = federation.client("col1", cert="col2")
    caplog.set_level(logging.WARNING, logger="accord.transport")
    calls = [
        impostor.join,
        impostor.get_tasks,
        lambda: impostor.get_model(2),
        lambda: impostor.send_result(a_result(federation.service.model)),
    ]
    for call in calls:
        reason = "certificate common name 'col2' does not match claimed collaborator 'col1'"
        with pytest.raises(RefusedError, match=reason) as info:
            call()
        assert info.value.kind == "identity"
    assert federation.service.calls == [] and federation.service.submissions == []
    assert len(federation.refusals) == 4
    assert "'col2'" in caplog.text and "'col1'" in caplog.text


def test_a_name_outside_the_plan_and_a_wrong_plan_hash_are_refused(federation):
    with pytest.raises(RefusedError, match="'stranger' is not in the plan") as info:
        federation.client("stranger").join()
    assert info.value.kind == "identity"
    with pytest.raises(RefusedError, match="plan hash 'other' differs") as info:
        federation.client("col1", plan_hash="other").join()
    assert info.value.kind == "plan"
    with pytest.raises(RefusedError, match="differs"):
        federation.client("col2", plan_hash="other").send_result(a_result(federation.service.model))
    assert federation.service.submissions == [] and len(federation.refusals) == 3


def test_the_refusal_kind_travels_to_the_client(federation):
    with pytest.raises(RefusedError, match="round 9 is not open") as info:
        federation.client("col1").send_result(a_result(federation.service.model, round_number=9))
    assert info.value.kind == "state"  # FAILED_PRECONDITION alone would read as "plan"
    assert federation.service.submissions == []


def test_a_certificate_from_another_ca_cannot_connect(federation):
    client = federation.client("col1", cert="foreign_col1", connect_timeout=1.5)
    with pytest.raises(AccordError, match="cannot reach the aggregator"):
        client.join()
    assert federation.service.calls == []


def test_a_revoked_certificate_is_refused_from_its_next_call(pki, caplog):
    revoked: set[int] = set()
    fed = Federation(pki, small_model(), long_poll_seconds=10.0, revoked=lambda: revoked)
    try:
        col1, col2 = fed.client("col1"), fed.client("col2")
        col1.get_model(2)
        serial = load_pem_cert(pki["col1"].cert_path).serial_number
        revoked.add(serial)
        with caplog.at_level(logging.WARNING, logger="accord.transport"):
            with pytest.raises(RefusedError, match="revoked") as info:
                col1.get_model(2)  # the same channel: refused from the moment of revocation
        assert info.value.kind == "identity"
        assert f"refused col1: the certificate of 'col1' (serial {serial:x}) has been revoked" in caplog.text
        col2.get_model(2)  # other certificates are not affected
        assert fed.service.calls == [("get_model", "col1"), ("get_model", "col2")]
    finally:
        fed.close()


def test_missing_tls_files_name_the_file_and_the_fix(pki, tmp_path):
    good: ClientTLS = pki["col1"]
    with pytest.raises(PKIError, match=r"collaborator certificate .*nope\.crt does not exist.*generate-cert-request"):
        ClientTLS(tmp_path / "nope.crt", good.key_path, good.chain_path).load()
    server: ServerTLS = pki["server"]
    with pytest.raises(PKIError, match=r"CA certificate chain .*chain\.pem does not exist.*fx workspace certify"):
        ServerTLS(server.cert_path, server.key_path, tmp_path / "chain.pem").credentials()
    with pytest.raises(PKIError, match=r"aggregator private key .* does not exist.*fx aggregator certify"):
        no_key = ServerTLS(server.cert_path, tmp_path / "k", server.chain_path)
        GrpcAggregatorServer(FakeService({}), "127.0.0.1", 0, no_key).start()


# -- payload --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tensors, match",
    [
        (
            {"dense.weight": np.zeros((64, 32)), "dense.bias": np.zeros(32, np.float32)},
            r"float64\[64, 32\], expected float32\[64, 32\]",
        ),
        ({"dense.weight": np.zeros((32, 64), np.float32)}, r"float32\[32, 64\], expected float32\[64, 32\]"),
        ({"surprise": np.zeros(3, np.float32)}, "'surprise' is not part of the model"),
    ],
)
def test_a_bad_payload_is_refused_and_not_submitted(federation, tensors, match):
    client = federation.client("col1")
    with pytest.raises(RefusedError, match=match) as info:
        client.send_result(a_result(federation.service.model, tensors=tensors))
    assert info.value.kind == "payload"
    assert federation.service.submissions == [] and federation.service.slots_in_use == 0


def _raw_send(client: GrpcAggregatorClient, messages):
    return client._stub.SendResult(iter(messages))


def _header(tensor_count: int, sender: str = "col1") -> pb.ResultChunk:
    head = pb.ResultHeader(header=wire.header(sender, PLAN), task="train", tensor_count=tensor_count)
    return pb.ResultChunk(header=head)


def _chunk(name, dtype, shape, offset, data) -> pb.ResultChunk:
    return pb.ResultChunk(tensor=pb.TensorChunk(name=name, dtype=dtype, shape=shape, offset=offset, data=data))


def test_malformed_streams_are_refused(federation):
    client = federation.client("col1")
    bias = np.zeros(32, np.float32).tobytes()
    cases = {
        "must start with its header": [_chunk("dense.bias", "float32", (32,), 0, bias)],
        "announces 2 tensors but 1 arrived": [_header(2), _chunk("dense.bias", "float32", (32,), 0, bias)],
        "a tensor arrived in a result whose header announces none": [_header(0), _chunk("dense.bias", "float32", (32,), 0, bias)],
        "truncated: 64 of 128": [_header(1), _chunk("dense.bias", "float32", (32,), 0, bias[:64])],
        "only tensor chunks": [_header(1), _header(1)],
        "dtype 'object'": [_header(1), _chunk("dense.bias", "object", (32,), 0, bias)],
        "chunk at byte 9223372036854775808, expected byte 0": [_header(1), _chunk("dense.bias", "float32", (32,), 2**63, bias)],
        "chunk at byte 18446744073709551615, expected byte 0": [_header(1), _chunk("dense.bias", "float32", (32,), 2**64 - 1, bias)],
    }
    for match, messages in cases.items():
        with pytest.raises(grpc.RpcError) as info:
            _raw_send(client, messages)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, match
        assert match in info.value.details()
    assert federation.service.submissions == []


# -- broken streams ---------------------------------------------------------------------------


def test_a_client_stream_that_fails_mid_way_leaves_nothing(federation):
    client = federation.client("col1")
    weight = federation.service.model["dense.weight"].tobytes()

    def failing():
        yield _header(2)
        yield _chunk("dense.weight", "float32", (64, 32), 0, weight[:1000])
        federation.service.slot_entered.wait(5)  # the server is receiving this result
        raise OSError("disk went away")

    with pytest.raises(grpc.RpcError):
        _raw_send(client, failing())
    assert federation.service.slot_released.wait(5)
    assert federation.service.submissions == [] and federation.service.slots_in_use == 0


def stalling_upload(federation, sent: threading.Event, release: threading.Event, sender: str = "col1"):
    """An upload that sends its header and a first chunk, then waits for ``release``."""
    weight = federation.service.model["dense.weight"].tobytes()
    yield _header(1, sender)
    yield _chunk("dense.weight", "float32", (64, 32), 0, weight[:1000])
    sent.set()
    release.wait(30)
    yield _chunk("dense.weight", "float32", (64, 32), 1000, weight[1000:])


def test_a_cancelled_upload_leaves_nothing(federation):
    client = federation.client("col1")
    sent, release = threading.Event(), threading.Event()
    future = client._stub.SendResult.future(stalling_upload(federation, sent, release))
    assert sent.wait(5) and federation.service.slot_entered.wait(5)
    future.cancel()
    release.set()
    assert federation.service.slot_released.wait(5)
    assert federation.service.submissions == [] and federation.service.slots_in_use == 0


def test_an_upload_is_written_to_its_staged_file_as_it_arrives(federation, tmp_path):
    """The first chunk is in the file (at its tensor's offset) while the rest has not been sent;
    the committed file holds exactly what was sent."""
    service = federation.service
    service.stage_dir = tmp_path
    weight = service.model["dense.weight"].tobytes()
    _, starts = safetensors_header(service.expected_tensors())
    sent, release = threading.Event(), threading.Event()

    def upload():
        head = _header(len(service.model))
        head.header.round_number = 2
        yield head
        yield _chunk("dense.weight", "float32", (64, 32), 0, weight[:1000])
        sent.set()
        release.wait(30)
        yield _chunk("dense.weight", "float32", (64, 32), 1000, weight[1000:])
        rest = {name: value for name, value in service.model.items() if name != "dense.weight"}
        yield from wire.encoded_tensor_chunks(rest, CHUNK, in_result=True)

    def first_chunk_in_file() -> bool:
        partial = list(tmp_path.glob(".result-*.tmp"))
        at = starts["dense.weight"]
        return len(partial) == 1 and partial[0].read_bytes()[at : at + 1000] == weight[:1000]

    future = federation.client("col1")._stub.SendResult.future(upload())
    assert sent.wait(5)
    wait_until(first_chunk_in_file)
    release.set()
    assert future.result(10).accepted
    ((result, _),) = service.submissions
    assert isinstance(result.tensors, StagedFile) and list(result.tensors) == list(service.model)
    assert all(np.array_equal(result.tensors[name], value) for name, value in service.model.items())
    assert [p.name for p in tmp_path.iterdir()] == [result.tensors.name]  # committed, no partial file left


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_cancelled_or_refused_upload_removes_its_partial_file(federation, tmp_path):
    federation.service.stage_dir = tmp_path
    sent, release = threading.Event(), threading.Event()
    future = federation.client("col1")._stub.SendResult.future(stalling_upload(federation, sent, release))
    assert sent.wait(5)
    wait_until(lambda: len(list(tmp_path.glob(".result-*.tmp"))) == 1)
    future.cancel()
    release.set()
    assert federation.service.slot_released.wait(5)
    wait_until(lambda: not list(tmp_path.iterdir()))

    def out_of_order():
        yield _header(1)
        yield _chunk("dense.weight", "float32", (64, 32), 4, b"\0" * 8)

    with pytest.raises(grpc.RpcError) as refused:
        federation.client("col1")._stub.SendResult(out_of_order(), timeout=10)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "expected byte 0" in refused.value.details()
    assert any("expected byte 0" in reason for reason in federation.refusals)
    assert not list(tmp_path.iterdir()) and federation.service.submissions == []


def test_a_stalled_upload_holds_one_slot_and_blocks_only_its_own_sender(federation, monkeypatch):
    from accord.transport import uploads

    monkeypatch.setattr(uploads, "UPLOAD_WAIT_SECONDS", 1.0)
    sent, release = threading.Event(), threading.Event()
    stalled = federation.client("col1")._stub.SendResult.future(stalling_upload(federation, sent, release))
    try:
        assert sent.wait(5) and federation.service.slot_entered.wait(5)
        with pytest.raises(RefusedError, match="earlier upload from col1 is still in progress") as refused:
            federation.client("col1").send_result(a_result(federation.service.model))
        assert refused.value.kind == "state"
        federation.client("col2").send_result(a_result(federation.service.model))  # the other slot
        assert [r.collaborator for r, _ in federation.service.submissions] == ["col2"]
    finally:
        stalled.cancel()
        release.set()


def test_an_upload_without_a_bounded_deadline_is_refused(pki):
    fed = Federation(pki, small_model(), max_upload_seconds=60.0)
    try:
        with pytest.raises(grpc.RpcError) as unbounded:
            fed.client("col1")._stub.SendResult(iter([_header(1)]))
        assert unbounded.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "must carry a deadline of at most 60 s" in unbounded.value.details()
        with pytest.raises(RefusedError, match=r"this one has 3\d{3} s"):
            fed.client("col1").send_result(a_result(fed.service.model))  # the client's default 3600 s
        fed.client("col2", transfer_timeout=60.0).send_result(a_result(fed.service.model))
        assert [r.collaborator for r, _ in fed.service.submissions] == ["col2"]
    finally:
        fed.close()


def test_a_refused_stream_keeps_the_client_error_message(federation):
    client = federation.client("col1")
    with pytest.raises(AccordError, match="complex64"):
        client.send_result(a_result(federation.service.model, tensors={"x": np.zeros(2, np.complex64)}))
    assert federation.service.calls == []


# -- in-process transport -------------------------------------------------------------------


def test_in_process_client_copies_and_checks_like_the_wire():
    service = FakeService(small_model())
    client = InProcessClient(service, "col1", PLAN, long_poll_seconds=0.1)
    assert client.join().rounds_to_train == 5
    assert client.get_tasks().action is Action.WAIT
    model = client.get_model(2)
    assert_state_equal(model, service.model)
    assert not any(np.shares_memory(model[k], service.model[k]) for k in model)
    result = a_result(model, model_digest="cd" * 32)
    client.send_result(result)
    (got, _), = service.submissions
    assert got.collaborator == "col1" and got.model_digest == "cd" * 32
    assert service.expected == [("cd" * 32, "")]  # the header was checked first, as over gRPC
    with pytest.raises(RefusedError, match="is not owed"):
        client.send_result(a_result(model, task="not-owed"))
    own = {name: (value.dtype.name, value.shape) for name, value in service.model.items()}
    assert_state_equal(client.get_model(2, expected=own), service.model)
    with pytest.raises(RefusedError, match=r"lacks tensors \['extra'\] of this site's model"):
        client.get_model(2, expected={**own, "extra": ("float32", (1,))})
    with pytest.raises(RefusedError, match=r"'dense.weight' is float32\[64, 32\], expected float32\[8, 8\]"):
        client.get_model(2, expected={**own, "dense.weight": ("float32", (8, 8))})
    assert not any(np.shares_memory(got.tensors[k], result.tensors[k]) for k in model)
    with pytest.raises(RefusedError, match="expected float32"):
        client.send_result(a_result(model, tensors={"dense.bias": np.zeros(32)}))
    with pytest.raises(RefusedError, match="differs"):
        InProcessClient(service, "col1", "other").join()
    assert len(service.submissions) == 1


def test_the_result_header_carries_the_model_digest_and_a_failure_escaped(federation) -> None:
    client = federation.client("col1")
    client.send_result(a_result(federation.service.model, model_digest="ab" * 32))
    failure = "data file /x does not exist\n[12:00] INFO forged line\x1b[2J" + "y" * 2000
    client.send_result(a_result(federation.service.model, tensors=None, metrics={}, failure=failure))
    assert federation.service.expected == [("ab" * 32, ""), ("", failure)]  # expect() sees the header's fields
    (first, _), (second, _) = federation.service.submissions
    assert first.model_digest == "ab" * 32 and first.failure == ""
    assert second.failure.startswith("data file /x does not exist\\n[12:00] INFO forged line\\x1b[2J")
    assert "\n" not in second.failure and len(second.failure) <= wire.MAX_FAILURE_CHARS
    assert second.failure.endswith("(cut short)")


def test_a_result_not_owed_is_refused_before_an_upload_slot_is_taken(pki) -> None:
    federation = Federation(pki, small_model())
    try:
        client = federation.client("col1")
        result = TaskResult("col1", 2, "not-owed", 10, {"loss": 1.0}, small_model())
        with pytest.raises(RefusedError, match="is not owed"):
            client.send_result(result)
        assert federation.service.slots_in_use == 0 and not federation.service.slot_entered.is_set()
        assert federation.service.submissions == []
    finally:
        federation.close()


def test_an_aggregator_certificate_cannot_act_as_a_collaborator(pki, tmp_path) -> None:
    from accord.pki import certify, create_ca

    layout = create_ca(tmp_path / "ca")
    certify(tmp_path / "ca", "aggregator", "col1")  # a server certificate whose name is a collaborator's
    server_cert, server_key = certify(tmp_path / "ca", "aggregator", "localhost")
    federation = Federation({**pki, "server": ServerTLS(server_cert, server_key, layout.chain)}, small_model())
    try:
        client = GrpcAggregatorClient(
            "col1", PLAN, "localhost", federation.port,
            ClientTLS(layout.aggregator_cert("col1"), layout.aggregator_key("col1"), layout.chain),
            connect_timeout=10,
        )
        with pytest.raises(RefusedError, match="server \\(aggregator\\) certificate"):
            client.join()
        client.close()
        assert federation.service.calls == []  # refused before the service was called
    finally:
        federation.close()


class _GatedService(FakeService):
    """One upload slot, and a submit that waits for ``gate``."""

    def __init__(self, model) -> None:
        super().__init__(model)
        self.gate = threading.Event()
        self.submitting = threading.Event()
        self._one = threading.BoundedSemaphore(1)

    def submit(self, result: TaskResult, plan_hash: str) -> None:
        self.submitting.set()
        self.gate.wait(30)
        super().submit(result, plan_hash)

    @contextlib.contextmanager
    def upload_slot(self):
        with self._one, super().upload_slot():
            yield


def test_stop_returns_while_a_cancelled_submit_holds_the_slot_and_another_upload_waits_for_it(pki) -> None:
    """The slot of a cancelled call's running submit is released even once the event loop is closed."""
    service = _GatedService(small_model())
    fed = Federation(pki, service.model, service)
    closing = fed.client("col1")._stub.SendResult.future(wire.result_stream(a_result(service.model), "col1", PLAN, CHUNK))
    assert service.submitting.wait(10)
    closing.cancel()  # the submit runs on, holding the one slot
    service.slot_entered.clear()
    sent, release = threading.Event(), threading.Event()
    waiting = fed.client("col2")._stub.SendResult.future(stalling_upload(fed, sent, release, "col2"))
    time.sleep(0.5)  # col2's upload is now inside the slot thread's acquire
    loop = fed.server._loop
    stopping = threading.Thread(target=fed.server.stop, args=(0,), daemon=True)
    stopping.start()
    while not loop.is_closed() and stopping.is_alive():
        time.sleep(0.05)
    service.gate.set()  # the submit ends after the loop closed
    stopping.join(20)
    release.set()
    waiting.cancel()
    assert not stopping.is_alive(), "stop() hung on the upload slot"
    assert service.slots_in_use == 0


def test_an_aggregator_failure_reaches_the_site_as_an_incident_id_and_its_detail_stays_in_the_log(pki, caplog) -> None:
    class Failing(FakeService):
        def join(self, collaborator: str, plan_hash: str, workspace_hash: str | None = None) -> FederationInfo:
            raise AccordError("cannot read /srv/secret/aggregator/state.json", "fix the disk")

    fed = Federation(pki, small_model(), Failing(small_model()))
    try:
        with caplog.at_level(logging.ERROR, "accord.transport"), pytest.raises(AccordError) as failed:
            fed.client("col1").join()
    finally:
        fed.close()
    told = str(failed.value)
    assert "/srv/secret" not in told and "aggregator failed during join (incident " in told
    incident = told.split("(incident ")[1][:8]
    assert any(incident in r.getMessage() and "/srv/secret" in r.getMessage() for r in caplog.records)


def test_a_trickling_upload_is_cut_at_its_length_bound_while_an_honest_one_completes(pki, caplog) -> None:
    """Four bytes every 0.1 s never lets chunk_idle_seconds pass; the minimum rate cuts it."""
    from accord.transport.admission import CallLimits

    limits = CallLimits(first_message_seconds=1.0, chunk_idle_seconds=30.0, min_upload_bytes_per_second=1024 * 1024)
    fed = Federation(pki, small_model(), limits=limits)
    weight = fed.service.model["dense.weight"].tobytes()
    done = threading.Event()

    def trickle():
        yield _header(1)
        for offset in range(0, len(weight), 4):
            if done.wait(0.1):
                return
            yield _chunk("dense.weight", "float32", (64, 32), offset, weight[offset : offset + 4])

    try:
        with caplog.at_level(logging.WARNING, "accord.transport"):
            trickling = fed.client("col1")._stub.SendResult.future(trickle(), timeout=600)
            fed.client("col2").send_result(a_result(fed.service.model))  # an honest upload beside it
            with pytest.raises(grpc.RpcError) as cut:
                trickling.result(timeout=60)
    finally:
        done.set()
        fed.close()
    assert cut.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert "network.settings.min_upload_bytes_per_second" in cut.value.details()
    assert any("refused col1: send_result cut: the upload did not end within 1.0 s" in r.getMessage() for r in caplog.records)
    assert [r.collaborator for r, _ in fed.service.submissions] == ["col2"]


def test_a_result_without_tensors_takes_no_upload_slot(federation):
    """Validation results and failures buffer nothing: they never wait behind the model uploads."""
    client = federation.client("col1")
    client.send_result(a_result(federation.service.model, task="validate", tensors=None, is_delta=False))
    assert len(federation.service.submissions) == 1
    assert not federation.service.slot_entered.is_set()
    client.send_result(a_result(federation.service.model))
    assert federation.service.slot_entered.is_set()


def test_the_grpc_client_counts_every_chunk_each_way(pki) -> None:
    counted: list[tuple[str, int]] = []
    fed = Federation(pki, small_model(), chunk_bytes=4096)
    try:
        client = fed.client("col1", chunk_bytes=4096, counted=lambda way, size: counted.append((way, size)))
        client.join()
        model = client.get_model(2)
        down = [size for way, size in counted if way == "download"]
        raw = sum(value.nbytes for value in model.values())
        assert sum(down) == raw and len(down) > 1  # the model's bytes, one count a chunk
        client.send_result(a_result(model))
        up = [size for way, size in counted if way == "upload"]
        assert 1 < len(up) < len(down) and sum(up) > raw  # one count a message (small tensors share one), with their framing
    finally:
        fed.close()


def test_without_the_blake3_package_the_aggregator_does_not_start(pki, monkeypatch) -> None:
    """Every upload needs the update digest: a missing blake3 is one message at start, not an
    incident at each upload of a round already open."""
    monkeypatch.setitem(sys.modules, "blake3", None)  # as if it were not installed
    server = GrpcAggregatorServer(FakeService(small_model()), "127.0.0.1", 0, pki["server"])
    try:
        with pytest.raises(AccordError, match="needs the blake3 package"):
            server.start()
    finally:
        server.stop(0)
