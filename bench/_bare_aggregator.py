"""The floor under the aggregator: a bare grpc.aio server speaking Accord's protocol, no framework.

It serves the same accord.v1.Aggregator service over the same mutual TLS (the aggregator's
certificate; client certificates required and verified against the federation's CA), with
the same chunk size and keepalive options, and does only what the protocol needs for a
swarm (bench/_swarm.py) to complete rounds: a site joins, its long poll gets the round's
three tasks (and parks until the next round once its results are in), it streams the model
and sends its results, each read to the end and acknowledged. No identity or plan checks,
no limits, no aggregation, nothing on disk: a round closes when every result is in, with the
model unchanged. Each closed round appends the aggregator's own ``round_seconds`` record to
the plan's metrics file, so bench/connections.py times both servers alike.

    .venv/bin/python bench/_bare_aggregator.py WORKSPACE
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import grpc

from accord.pki.layout import CertLayout
from accord.plan.loader import load_plan
from accord.tensors.codec import iter_tensor_chunks
from accord.tensors.state import load_state
from accord.transport import wire
from accord.transport.proto import accord_pb2 as pb
from accord.transport.proto import accord_pb2_grpc as pb_grpc


class Bare(pb_grpc.AggregatorServicer):
    """Rounds of ``rounds`` over ``names``: every site owes the plan's tasks each round."""

    def __init__(self, plan: Any) -> None:
        settings = plan.model.aggregator.settings
        self.names = set(plan.model.collaborators)
        self.rounds = settings.rounds_to_train
        self.plan_hash, self.workspace_hash = plan.hash, plan.workspace_hash()
        self.model = load_state(plan.resolve_path(settings.init_state_path))
        self.chunk_bytes = plan.model.network.settings.chunk_bytes
        self.long_poll = plan.model.network.settings.long_poll_seconds
        group = plan.model.assigner.settings.task_groups[0]
        self.tasks = [pb.TaskSpec(name=n, function=plan.model.tasks.settings[n].function,
                                  returns_model=plan.model.tasks.settings[n].returns_model) for n in group.tasks]
        self.metrics = plan.resolve_path(settings.metrics_path)
        self.metrics.parent.mkdir(parents=True, exist_ok=True)
        self.round, self.opened = 0, time.monotonic()
        self.owed = {name: len(self.tasks) for name in self.names}
        self.changed = asyncio.Event()
        self.quit: set[str] = set()
        self.done = asyncio.Event()

    async def Join(self, request: pb.JoinRequest, context: Any) -> pb.JoinResponse:
        return pb.JoinResponse(plan_hash=self.plan_hash, rounds_to_train=self.rounds, round_number=self.round,
                               workspace_hash=self.workspace_hash)

    async def GetTasks(self, request: pb.TasksRequest, context: Any) -> pb.TasksResponse:
        name = request.header.sender
        deadline = time.monotonic() + self.long_poll
        while True:
            if self.round >= self.rounds:
                self.quit.add(name)
                if self.quit >= self.names:
                    self.done.set()
                return pb.TasksResponse(action=pb.TasksResponse.QUIT, round_number=self.round)
            if self.owed.get(name):
                return pb.TasksResponse(action=pb.TasksResponse.RUN, round_number=self.round, tasks=self.tasks)
            changed = self.changed
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    await changed.wait()
            except TimeoutError:
                return pb.TasksResponse(action=pb.TasksResponse.WAIT, round_number=self.round)

    async def GetModel(self, request: pb.ModelRequest, context: Any) -> Any:
        for name, dtype, shape, offset, data in iter_tensor_chunks(self.model, self.chunk_bytes):
            yield pb.TensorChunk(name=name, dtype=dtype, shape=shape, offset=offset, data=bytes(data))

    async def SendResult(self, request_iterator: Any, context: Any) -> pb.ResultAck:
        header = None
        async for message in request_iterator:
            if header is None:
                header = message.header
        name = header.header.sender
        if header.round_number == self.round and self.owed.get(name):
            self.owed[name] -= 1
            if not any(self.owed.values()):
                self._close()
        return pb.ResultAck(accepted=True)

    def _close(self) -> None:
        record = {"round": self.round, "origin": "aggregator", "task": "round", "metric": "round_seconds",
                  "value": time.monotonic() - self.opened}
        with self.metrics.open("a") as out:
            out.write(json.dumps(record) + "\n")
        self.round += 1
        self.opened = time.monotonic()
        self.owed = {name: len(self.tasks) for name in self.names}
        self.changed.set()
        self.changed = asyncio.Event()


async def serve(workspace: Path) -> None:
    plan = load_plan(workspace / "plan" / "plan.yaml", workspace=workspace)
    net = plan.model.network.settings
    layout = CertLayout(plan.resolve_path(net.cert_dir))
    credentials = grpc.ssl_server_credentials(
        [(layout.aggregator_key(net.agg_addr).read_bytes(), layout.aggregator_cert(net.agg_addr).read_bytes())],
        root_certificates=layout.chain.read_bytes(),
        require_client_auth=True,
    )
    server = grpc.aio.server(options=[*wire.channel_options(net.chunk_bytes), ("grpc.server.max_pending_requests", 4096)])
    bare = Bare(plan)
    pb_grpc.add_AggregatorServicer_to_server(bare, server)
    server.add_secure_port(f"localhost:{net.agg_port}", credentials)
    await server.start()
    await bare.done.wait()
    await server.stop(2.0)


if __name__ == "__main__":
    asyncio.run(serve(Path(sys.argv[1])))
