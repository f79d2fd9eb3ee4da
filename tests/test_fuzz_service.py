"""Fuzzing the real aggregator service (issue 5): 10,200 malformed requests (about 25,000
messages), over mutual TLS from a real collaborator's certificate, harm nothing.

The real AggregatorRuntime of a two-collaborator workspace serves behind a real
GrpcAggregatorServer on 127.0.0.1, in a process of its own set up as ``fx aggregator start``
sets up its own (tests/fuzz_aggregator.py), so that its resident memory is the aggregator's:
not the fuzzing client's, nor what earlier tests left in this process. Every request carries
at least one defect and travels as raw bytes (identity serializers), so bodies that do not
decode reach the server too. Afterwards no result was counted, no upload slot stayed taken,
the aggregator's resident memory grew by less than 64 MiB, and an honest round completes.
Two more tests pin faults found by fuzzing: undecodable bodies must not leak, and a refusal
must reach its caller however long the name it quotes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from conftest import make_workspace
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from accord.messages import Action, FederationInfo, TaskResult
from accord.pki import make_federation_pki
from accord.tensors.digest import model_digest
from accord.tensors.state import ALLOWED_DTYPES, load_state
from accord.transport import wire
from accord.transport.grpc_client import GrpcAggregatorClient
from accord.transport.proto import accord_pb2 as pb
from accord.transport.tls import ClientTLS
from accord.workspace.initialize import initialize_model

ME, OTHER = "alpha", "beta"  # the fuzzing client holds alpha's certificate
TRAIN = "train"
TASKS = ("aggregated_model_validation", TRAIN, "locally_tuned_model_validation")
MIB = 1024 * 1024
#: six small float32 tensors (no optimizer state): a whole training result is a few messages
SMALL = {
    "task_runner.settings.model_kwargs": {"in_features": 64, "hidden": 8, "num_classes": 10},
    "collaborator.settings.opt_treatment": "RESET",
}
Code = grpc.StatusCode
REFUSALS = frozenset({Code.INVALID_ARGUMENT, Code.PERMISSION_DENIED, Code.FAILED_PRECONDITION})
#: gRPC's own answer, known by a phrase of its details: a message over the 2 MiB limit
GRPC_ANSWERS = {"larger than max": (Code.RESOURCE_EXHAUSTED, "over 2 MiB")}
#: the aggregator's own "busy": a call that arrives while this collaborator's earlier ones
#: (just cancelled, not yet wound down on the server) still fill its call limit
BUSY = ("calls in progress", (Code.RESOURCE_EXHAUSTED, "busy"))
GRPC_ANSWERS.update([BUSY])
SERVED = {code.name for code in REFUSALS}  # answers from the service's refusals
MIX = {"raw": 2_400, "request": 1_500, "upload": 5_700, "cancel": 600}  # requests of each kind (multiples of 10 x BATCH)
BATCH = 30  # requests per hypothesis example, which costs a few milliseconds of its own
HEAD, EMPTY = "header", "empty part"  # placeholders in an upload's layout
SERVING = Path(__file__).with_name("fuzz_aggregator.py")
SRC = Path(__file__).resolve().parent.parent / "src"


@dataclass
class Attack:
    rpc: str  # Join, GetTasks, GetModel or SendResult
    messages: list[bytes]
    kind: str  # raw, request, upload or cancel
    answers: frozenset[Code] = REFUSALS | {Code.RESOURCE_EXHAUSTED}

    def __repr__(self) -> str:
        shown = [m[:100] for m in self.messages[:3]]
        return f"Attack({self.rpc}, {self.kind}, {len(self.messages)} messages: {shown})"


def tensor_chunks(state: dict[str, np.ndarray], chunk_bytes: int) -> list[pb.TensorChunk]:
    """The state's chunks as the wire carries them, as messages."""
    return [pb.TensorChunk.FromString(data) for data in wire.encoded_tensor_chunks(state, chunk_bytes)]


class Aggregator:
    """The real runtime behind the real server in its own process (tests/fuzz_aggregator.py), and
    identity-serializer stubs holding alpha's certificate."""

    def __init__(self, root: Path) -> None:
        self.plan = make_workspace(root / "ws", [ME, OTHER], rounds=2, overrides=SMALL)
        self.model = load_state(initialize_model(self.plan))
        assert {value.dtype for value in self.model.values()} == {np.dtype(np.float32)}
        self.pki = make_federation_pki(root / "cert", "localhost", [ME, OTHER])
        self.log = root / "aggregator.log"  # its errors
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(SERVING), str(self.plan.workspace), str(self.pki.cert_dir), ME, OTHER],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, env={**os.environ, "PYTHONPATH": str(SRC)},
            )
        started = self.ask()
        self.port, self.workspace_hash = started["port"], started["workspace_hash"]
        self.channel = grpc.secure_channel(f"localhost:{self.port}", self.tls(ME).credentials())  # no size limit
        arity = dict(Join="unary_unary", GetTasks="unary_unary", GetModel="unary_stream", SendResult="stream_unary")
        self.stubs = {rpc: getattr(self.channel, how)(f"/accord.v1.Aggregator/{rpc}") for rpc, how in arity.items()}
        self.calls: Counter[tuple[str, str]] = Counter()  # (kind, answer) -> requests
        self.messages = 0

    def ask(self, command: str | None = None) -> Any:
        """The aggregator's answer to ``command`` (None: its first line)."""
        assert self.process.stdin is not None and self.process.stdout is not None
        if command is not None:
            self.process.stdin.write(command + "\n")
            self.process.stdin.flush()
        line = self.process.stdout.readline()
        assert line, f"the aggregator ended (exit status {self.process.wait()}):\n{self.errors()}"
        return json.loads(line)

    def errors(self) -> str:
        """The end of the aggregator's log (its errors, with their tracebacks)."""
        return self.log.read_text()[-4000:]

    def tls(self, name: str) -> ClientTLS:
        return ClientTLS(self.pki.collaborator_cert(name), self.pki.collaborator_key(name), self.pki.chain)

    def _counted(self, messages: list[bytes]) -> Iterator[bytes]:
        for message in messages:
            self.messages += 1  # handed to gRPC to send
            yield message

    def throw(self, attack: Attack) -> None:
        code, details = self.cancel(attack) if attack.kind == "cancel" else self.call(attack)
        known = [label for phrase, (c, label) in GRPC_ANSWERS.items() if c == code and phrase in details]
        assert code in attack.answers, (code, details[:500], self.errors())
        assert known or code in REFUSALS | {Code.CANCELLED}, (code, details[:500], self.errors())  # not the service's failure
        self.calls[attack.kind, known[0] if known else code.name] += 1

    def call(self, attack: Attack) -> tuple[Code, str]:
        stub, sent = self.stubs[attack.rpc], self._counted(attack.messages)
        try:
            if attack.rpc == "SendResult":
                stub(sent, timeout=60)
            elif attack.rpc == "GetModel":
                list(stub(next(sent), timeout=60))
            else:
                stub(next(sent), timeout=60)
        except grpc.RpcError as exc:
            return exc.code(), exc.details()
        return Code.OK, ""

    def cancel(self, attack: Attack) -> tuple[Code, str]:
        """Send the start of an upload, then cancel the call mid-stream."""
        sent, release = threading.Event(), threading.Event()

        def stalling() -> Iterator[bytes]:
            yield from self._counted(attack.messages)
            sent.set()
            release.wait()

        future = self.stubs["SendResult"].future(stalling())
        future.add_done_callback(lambda _: sent.set())
        try:
            sent.wait()
            future.cancel()
        finally:
            release.set()
        return future.code(), future.details() or ""

    def close(self) -> None:
        self.channel.close()
        assert self.process.stdin is not None
        try:
            self.process.stdin.write("stop\n")
            self.process.stdin.close()
            self.process.wait(timeout=60)
        finally:
            if self.process.poll() is None:
                self.process.kill()


# -- what is thrown --------------------------------------------------------------------------

texts = st.text(max_size=40)
huge_texts = st.sampled_from([1_000, 20_000, MIB]).map("x".__mul__)  # 1 MiB fits in a 2 MiB message
not_me = st.one_of(texts, huge_texts, st.just(OTHER)).filter(lambda s: s != ME)
wrong_hashes = st.one_of(texts, huge_texts)  # never a plan hash: 96 hexadecimal digits
wrong_tasks = st.one_of(texts, huge_texts).filter(lambda s: s not in TASKS)
not_finite = st.sampled_from([math.nan, math.inf, -math.inf])
absurd_counts = st.one_of(st.just(0), st.integers(10**12 + 1, 2**64 - 1))  # the engine takes 1..10**12
bad_headers = st.one_of(
    st.none(),  # header missing
    st.builds(wire.header, not_me, st.just("")),  # a wrong plan hash too: the name is checked first
    st.builds(wire.header, st.just(ME), wrong_hashes),
)
wrong_values = {  # for a tensor chunk's fields (every tensor is float32; no name starts with ~)
    "name": st.one_of(st.just(""), texts.map("~{}".format), st.integers(1025, 4096).map("~".__mul__)),
    "dtype": st.one_of(st.sampled_from(sorted(ALLOWED_DTYPES - {"float32"})), texts.map("~{}".format), huge_texts),
    "shape": st.one_of(
        st.lists(st.integers(-(2**63), 2**63 - 1), max_size=40), st.integers(33, 100_000).map(lambda n: [1] * n)
    ),
    "offset": st.integers(0, 2**64 - 1),
    "encoding": st.one_of(st.sampled_from(["zstd", "fp16", "raw"]), texts.map("~{}".format), huge_texts),
}


def raw_attacks() -> st.SearchStrategy[Attack]:
    """Random bytes as the body of every RPC (a few messages for the client stream)."""
    answers = REFUSALS  # a body that does not decode is refused as INVALID_ARGUMENT
    bodies = st.binary(max_size=256)
    unary = st.tuples(st.sampled_from(["Join", "GetTasks", "GetModel"]), bodies.map(lambda body: [body]))
    stream = st.tuples(st.just("SendResult"), st.lists(bodies, min_size=1, max_size=4))
    return st.one_of(unary, stream).map(lambda r: Attack(r[0], r[1], "raw", answers))


def request_attacks(plan_hash: str) -> st.SearchStrategy[Attack]:
    """Join, GetTasks and GetModel with a hostile header or round number."""
    requests = st.one_of(
        st.builds(lambda h: ("Join", pb.JoinRequest(header=h)), bad_headers),
        st.builds(lambda h: ("GetTasks", pb.TasksRequest(header=h)), bad_headers),
        st.builds(
            lambda h, r: ("GetModel", pb.ModelRequest(header=h, round_number=r)),
            st.one_of(bad_headers, st.just(wire.header(ME, plan_hash))),
            st.integers(1, 2**32 - 1),  # the open round is 0
        ),
    )
    return requests.map(lambda r: Attack(r[0], [r[1].SerializeToString()], "request"))


def _spoiled(draw, chunks: list, spoil) -> list:
    """``chunks`` with one of them replaced by a copy that ``spoil(draw, copy)`` changed."""
    i = draw(st.integers(0, len(chunks) - 1))
    twin = pb.TensorChunk()
    twin.CopyFrom(chunks[i])
    spoil(draw, twin)
    return [*chunks[:i], twin, *chunks[i + 1:]]


def _wrong(field: str):
    def spoil(draw, chunk: pb.TensorChunk) -> None:
        value = draw(wrong_values[field])
        assume(value != (list(chunk.shape) if field == "shape" else getattr(chunk, field)))
        if field == "shape":
            chunk.ClearField("shape")
            chunk.shape.extend(value)
        else:
            setattr(chunk, field, value)

    return spoil


def _not_finite(draw, chunk: pb.TensorChunk) -> None:
    values = np.frombuffer(chunk.data, np.float32).copy()
    values[draw(st.integers(0, values.size - 1))] = draw(not_finite)
    chunk.data = values.tobytes()


def _without_one(draw, chunks: list) -> list:
    i = draw(st.integers(0, len(chunks) - 1))
    return chunks[:i] + chunks[i + 1 :]


def _tensor(draw, chunks: list) -> tuple[list, list]:
    """The chunks of one tensor, and all the others."""
    name = chunks[draw(st.integers(0, len(chunks) - 1))].name
    return [c for c in chunks if c.name == name], [c for c in chunks if c.name != name]


def _insert(draw, layout: list, part) -> list:
    i = draw(st.integers(1, len(layout)))
    return [*layout[:i], part, *layout[i:]]


CHUNK_DEFECTS = {  # a training result's tensor chunks, spoiled
    **{f"wrong {field}": lambda d, c, field=field: _spoiled(d, c, _wrong(field)) for field in wrong_values},
    "data too long": lambda d, c: _spoiled(d, c, lambda d, t: setattr(t, "data", t.data + d(st.binary(min_size=1)))),
    "data too short": lambda d, c: _spoiled(d, c, lambda d, t: setattr(t, "data", t.data[: len(t.data) // 2])),
    "NaN or Inf": lambda d, c: _spoiled(d, c, _not_finite),
    "chunk missing": lambda d, c: _without_one(d, c),
    "tensor missing": lambda d, c: _tensor(d, c)[1],
    "no tensors": lambda d, c: [],
    "chunk repeated": lambda d, c: _insert(d, c, c[d(st.integers(0, len(c) - 1))]),
    "tensor sent twice": lambda d, c: c + _tensor(d, c)[0],
}
LAYOUT_DEFECTS = {  # where the header goes, and what else travels
    "header missing": lambda d, layout, spare: layout[1:],
    "header twice": lambda d, layout, spare: _insert(d, layout, HEAD),
    "chunk before the header": lambda d, layout, spare: [spare[d(st.integers(0, len(spare) - 1))], *layout],
    "empty part": lambda d, layout, spare: _insert(d, layout, EMPTY),
    "extra tensors": lambda d, layout, spare: layout + spare,  # on a validation; or the model twice
}
HEADER_DEFECTS = {
    "sender": lambda d, h: setattr(h.header, "sender", d(not_me)),
    "header missing": lambda d, h: h.ClearField("header"),
    "plan hash": lambda d, h: setattr(h.header, "plan_hash", d(wrong_hashes)),
    "round": lambda d, h: setattr(h, "round_number", d(st.integers(1, 2**32 - 1))),
    "task": lambda d, h: setattr(h, "task", d(wrong_tasks)),
    "sample count": lambda d, h: setattr(h, "sample_count", d(absurd_counts)),
    "metric value": lambda d, h: h.metrics.update({d(texts): d(not_finite)}),
    "many metrics": lambda d, h: h.metrics.update({f"m{i}": 0.5 for i in range(d(st.integers(65, 10_000)))}),
    "metric name": lambda d, h: h.metrics.update({d(st.sampled_from([0, 129, MIB]).map("m".__mul__)): 0.5}),
    "task time": lambda d, h: setattr(h, "task_seconds", d(not_finite)),
    "phase": lambda d, h: setattr(h, "phase", d(st.one_of(texts.map("~{}".format), huge_texts, st.just("Train")))),
    "tensor count": lambda d, h: setattr(h, "tensor_count", (h.tensor_count + d(st.integers(1, 2**32 - 1))) % 2**32),
}
header_defects = {  # keyed by "the stream is otherwise well-formed": then one to three, else one at most
    clean: st.lists(st.sampled_from(sorted(HEADER_DEFECTS)), min_size=int(clean), max_size=1 + 2 * clean, unique=True)
    for clean in (False, True)
}
stream_defects = {  # None: only the header is spoiled
    TRAIN: st.one_of(st.none(), st.sampled_from(sorted(LAYOUT_DEFECTS)), st.sampled_from(sorted(CHUNK_DEFECTS))),
    "validation": st.one_of(st.none(), st.sampled_from(sorted(LAYOUT_DEFECTS))),
}


@st.composite
def uploads(draw, plan_hash: str, digest: str, chunkings: st.SearchStrategy[list], spare: list) -> list[bytes]:
    """A SendResult stream (header, then tensor chunks) with one to three defects, serialized."""
    task = draw(st.sampled_from(TASKS))
    chunks = draw(chunkings) if task == TRAIN else []
    layout = [HEAD, *chunks]
    defect = draw(stream_defects[TRAIN if chunks else "validation"])
    if defect in CHUNK_DEFECTS:
        layout = [HEAD, *CHUNK_DEFECTS[defect](draw, chunks)]
    elif defect is not None:
        layout = LAYOUT_DEFECTS[defect](draw, layout, spare)
    head = pb.ResultHeader(
        header=wire.header(ME, plan_hash), round_number=0, task=task, sample_count=draw(st.integers(1, 10**6)),
        metrics={"accuracy": 0.5}, task_seconds=1.0, model_digest=digest,
        tensor_count=len({c.name for c in layout if isinstance(c, pb.TensorChunk)}),
    )
    for name in draw(header_defects[defect is None]):
        HEADER_DEFECTS[name](draw, head)
    parts = {HEAD: pb.ResultChunk(header=head), EMPTY: pb.ResultChunk()}
    return [(parts[c] if isinstance(c, str) else pb.ResultChunk(tensor=c)).SerializeToString() for c in layout]


def attacks(agg: Aggregator) -> dict[str, st.SearchStrategy[Attack]]:
    """A strategy for each kind of request in MIX."""
    chunkings = st.sampled_from([tensor_chunks(agg.model, n) for n in (512, 4096)])
    spare = tensor_chunks(agg.model, 512)
    digest = model_digest(agg.model, 0)
    upload = uploads(agg.plan.hash, digest, chunkings, spare).map(lambda messages: Attack("SendResult", messages, "upload"))
    header = wire.header(ME, agg.plan.hash)
    start = pb.ResultHeader(header=header, task=TRAIN, sample_count=1, tensor_count=len(agg.model), model_digest=digest)
    parts = [pb.ResultChunk(header=start)] + [pb.ResultChunk(tensor=c) for c in spare]
    well_formed = [part.SerializeToString() for part in parts]
    cancel = st.integers(1, len(well_formed) - 1).map(  # never the whole model
        lambda n: Attack("SendResult", well_formed[:n], "cancel", frozenset({Code.CANCELLED, Code.RESOURCE_EXHAUSTED}))
    )
    return {"raw": raw_attacks(), "request": request_attacks(agg.plan.hash), "upload": upload, "cancel": cancel}


def fuzz(agg: Aggregator, share: float) -> None:
    """Throw ``share`` of MIX, BATCH requests per example."""
    for kind, strategy in attacks(agg).items():

        @settings(
            max_examples=round(MIX[kind] * share / BATCH), deadline=None, database=None,
            phases=[Phase.generate, Phase.shrink], suppress_health_check=list(HealthCheck),
        )
        @given(st.lists(strategy, min_size=BATCH, max_size=BATCH))
        def throw(batch: list[Attack]) -> None:
            for attack in batch:
                agg.throw(attack)

        throw()


# -- the tests -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def aggregator(tmp_path_factory) -> Iterator[Aggregator]:
    agg = Aggregator(tmp_path_factory.mktemp("fuzz"))
    yield agg
    agg.close()


@pytest.fixture(autouse=True)
def quiet(caplog) -> None:
    caplog.set_level(logging.ERROR, logger="accord")  # a warning per refusal (the client's)


def test_malformed_messages_harm_nothing(aggregator: Aggregator) -> None:
    agg = aggregator
    owed = agg.ask("state")["owed"]
    fuzz(agg, 0.1)  # warm-up: channels, thread pool, allocator pools
    warm = agg.ask("rss")
    fuzz(agg, 0.9)
    grown = agg.ask("rss") - warm
    print(f"\n{agg.messages} messages, aggregator RSS {grown / MIB:+.1f} MiB: {sorted(agg.calls.items())}")
    assert sum(agg.calls.values()) == sum(MIX.values()) >= 10_000  # each request has a defect
    assert grown < 64 * MIB
    served = sum(n for (_, answer), n in agg.calls.items() if answer in SERVED)
    state = agg.ask("state")
    assert state["refusals"] >= served  # each refusal was reported (and logged) by the server

    assert agg.ask("slots") is True  # none stayed taken
    assert state["round"] == 0
    assert state["owed"] == owed  # no result counted

    for name in (ME, OTHER):  # an honest round still completes, and no malformed update was averaged in
        identity = agg.workspace_hash
        with GrpcAggregatorClient(
            name, agg.plan.hash, "localhost", agg.port, agg.tls(name), workspace_hash=identity
        ) as client:
            assert client.join() == FederationInfo(agg.plan.hash, 2, 0, identity)
            assignment = client.get_tasks()
            assert assignment.action is Action.RUN and [t.name for t in assignment.tasks] == list(TASKS)
            model = client.get_model(0)
            digest = model_digest(model, 0)
            for task in assignment.tasks:
                tensors = model if task.returns_model else None
                client.send_result(TaskResult(name, 0, task.name, 10, {"accuracy": 0.5}, tensors, model_digest=digest))
    assert agg.ask("state")["round"] == 1
    assert agg.ask("moved") == []


def test_undecodable_bodies_leak_nothing(aggregator: Aggregator) -> None:
    undecodable = Attack("Join", [b"\xff"], "raw", frozenset({Code.INVALID_ARGUMENT}))
    for _ in range(200):
        aggregator.throw(undecodable)
    warm = aggregator.ask("rss")
    for _ in range(2_000):
        aggregator.throw(undecodable)
    assert aggregator.ask("rss") - warm < 4 * MIB  # 2,000 refused bodies that do decode add about 0.2 MiB


@pytest.mark.parametrize("field", ["sender", "task"])
def test_a_refusal_reaches_its_caller_whatever_it_sent(aggregator: Aggregator, field: str) -> None:
    head = pb.ResultHeader(header=wire.header(ME, aggregator.plan.hash), task=TRAIN)
    setattr(head.header if field == "sender" else head, field, "x" * 20_000)
    upload = Attack("SendResult", [pb.ResultChunk(header=head).SerializeToString()], "upload")
    code, details = aggregator.call(upload)
    assert code in REFUSALS and len(details) <= 1024, details
