"""A swarm of collaborators: one process, one asyncio loop, many mutual-TLS gRPC channels.

Each site of the swarm has a channel of its own (its own TCP connection and TLS handshake)
presenting its OWN collaborator certificate, signed by the federation's CA, and speaks
Accord's real protocol (transport/proto): Join, then GetTasks long polls; for each round it
streams the global model (GetModel), computes its digest (tensors/digest.py) and sends a
result for every task the round assigns it (SendResult: the header with the model digest
and plan hash, then the tensors): a training task sends the global model plus a little
noise with the site's sample count, a validation task its metrics. It stops at QUIT.
Connections open at random moments over ``--connect-seconds`` (jitter against a handshake
storm), and a "busy" refusal or an unreachable aggregator is retried with backoff, like the
real client (transport/grpc_client.py).

    .venv/bin/python bench/_swarm.py WORKSPACE FIRST COUNT [--connect-seconds S] [--seed N]

runs sites ``FIRST .. FIRST+COUNT-1`` of the plan's ``collaborators`` and prints one line
``SWARM key=value ...`` (sites, rounds they completed, results sent, retries by status,
errors) when every site has heard QUIT or failed; it exits 0 when none failed.
``make_certificates`` and ``write_model`` build a federation's PKI and init model quickly
(accord.pki's own functions, the leaves signed in parallel processes).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import functools
import random
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from accord.messages import TaskResult
from accord.pki.ca import certify, create_ca
from accord.pki.layout import CertLayout
from accord.plan.loader import load_plan
from accord.tensors.codec import TensorAssembler
from accord.tensors.digest import model_digest
from accord.tensors.state import ModelState, save_state
from accord.transport import wire
from accord.transport.proto import accord_pb2 as pb
from accord.transport.proto import accord_pb2_grpc as pb_grpc

#: what a site sends: this many samples (plus its index mod 8) and noise of this scale
SAMPLES = 100
NOISE = 1e-3
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 10.0
#: how long a site keeps retrying a call that finds the aggregator busy or unreachable
GIVE_UP_SECONDS = 600.0


# -- a federation's PKI and model, fast ------------------------------------------------------


def _certify_all(cert_dir: str, names: Sequence[str]) -> None:
    for name in names:
        certify(cert_dir, "collaborator", name)


def make_certificates(cert_dir: Path, aggregator: str, names: Sequence[str], processes: int = 2) -> CertLayout:
    """The CA, the aggregator's certificate and one real certificate per name (each its own
    EC key, signed by the signing CA and recorded in its index), the leaves in ``processes``
    processes at once (the CA's index is appended to with O_APPEND, one line a write)."""
    layout = create_ca(cert_dir)
    certify(cert_dir, "aggregator", aggregator)
    parts = [list(names[i::processes]) for i in range(processes)]
    with concurrent.futures.ProcessPoolExecutor(processes) as pool:
        for done in [pool.submit(_certify_all, str(cert_dir), part) for part in parts if part]:
            done.result()
    return layout


def write_model(path: Path, hidden: int = 64, seed: int = 0) -> ModelState:
    """The digits MLP's tensors (64 -> hidden -> 10, float32), saved as the init model."""
    rng = np.random.default_rng(seed)
    state = {
        "fc1.weight": rng.standard_normal((hidden, 64), dtype=np.float32) * 0.1,
        "fc1.bias": np.zeros(hidden, dtype=np.float32),
        "fc2.weight": rng.standard_normal((10, hidden), dtype=np.float32) * 0.1,
        "fc2.bias": np.zeros(10, dtype=np.float32),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_state(path, state)
    return state


# -- the sites ------------------------------------------------------------------------------------


class Tally:
    """What the sites of this process did."""

    def __init__(self) -> None:
        self.rounds: collections.Counter[str] = collections.Counter()
        self.results = 0
        self.retries: collections.Counter[str] = collections.Counter()
        self.errors: list[str] = []
        self.quit = 0


def _retryable(error: grpc.aio.AioRpcError) -> bool:
    """As the real client (grpc_client._retryable): unreachable, slow, or refused as busy."""
    code = error.code()
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return True
    return code is grpc.StatusCode.RESOURCE_EXHAUSTED and (wire.REFUSAL_KIND_KEY, "busy") in tuple(
        error.trailing_metadata() or ()
    )


class Site:
    """One collaborator: its channel, and the loop of the real client over it."""

    def __init__(self, name: str, index: int, plan: Any, layout: CertLayout, chain: bytes, tally: Tally) -> None:
        net = plan.model.network.settings
        self.name, self.index, self.tally = name, index, tally
        self.plan_hash, self.workspace_hash = plan.hash, plan.workspace_hash()
        self.chunk_bytes, self.long_poll = net.chunk_bytes, net.long_poll_seconds
        self.target = f"{net.agg_addr}:{net.agg_port}"
        self._credentials = grpc.ssl_channel_credentials(
            root_certificates=chain,
            private_key=layout.collaborator_key(name).read_bytes(),
            certificate_chain=layout.collaborator_cert(name).read_bytes(),
        )
        self._rng = np.random.default_rng(index)

    def _header(self) -> pb.Header:
        return wire.header(self.name, self.plan_hash, self.workspace_hash)

    async def _call(self, what: str, call: Any) -> Any:
        """``await call()``, retried with jittered backoff while the aggregator is busy or unreachable."""
        pause, give_up = BACKOFF_FIRST, time.monotonic() + GIVE_UP_SECONDS
        while True:
            try:
                return await call()
            except grpc.aio.AioRpcError as exc:
                if not _retryable(exc) or time.monotonic() > give_up:
                    raise
                self.tally.retries[f"{what}:{exc.code().name}"] += 1
                await asyncio.sleep(random.uniform(pause / 2, pause))
                pause = min(2 * pause, BACKOFF_MAX)

    async def run(self, connect_seconds: float) -> None:
        await asyncio.sleep(random.uniform(0.0, connect_seconds))
        options = [*wire.channel_options(self.chunk_bytes), ("grpc.use_local_subchannel_pool", 1)]
        async with grpc.aio.secure_channel(self.target, self._credentials, options=options) as channel:
            stub = pb_grpc.AggregatorStub(channel)
            stub.SendResult = wire.send_result_method(channel)
            joined = await self._call("join", lambda: stub.Join(pb.JoinRequest(header=self._header()), timeout=60.0))
            if joined.plan_hash != self.plan_hash:
                raise RuntimeError(f"{self.name}: the aggregator serves another plan")
            await self._rounds(stub)

    async def _rounds(self, stub: pb_grpc.AggregatorStub) -> None:
        request = pb.TasksRequest(header=self._header())
        while True:
            tasks = await self._call("get_tasks", lambda: stub.GetTasks(request, timeout=self.long_poll + 30.0))
            if tasks.action == pb.TasksResponse.QUIT:
                self.tally.quit += 1
                return
            if tasks.action == pb.TasksResponse.WAIT:
                continue
            number = tasks.round_number
            model = await self._call("get_model", functools.partial(self._model, stub, number))
            digest = model_digest(model, number)
            for task in tasks.tasks:
                result = self._result(number, task, model, digest, tasks.phase)
                chunks = list(wire.result_stream(result, self.name, self.plan_hash, self.chunk_bytes))
                await self._call("send_result", functools.partial(self._send, stub, chunks))
                self.tally.results += 1
            self.tally.rounds[self.name] += 1

    def _noise(self, tensor: np.ndarray) -> np.ndarray:
        """A random change of norm NOISE x sqrt(size): every site's change of a tensor has the
        same norm, so the update bounds (norm_multiple x the median) clip none of them."""
        noise = self._rng.standard_normal(tensor.shape)
        return (noise * (NOISE * np.sqrt(noise.size) / max(np.linalg.norm(noise), 1e-12))).astype(tensor.dtype)

    def _send(self, stub: pb_grpc.AggregatorStub, chunks: list[pb.ResultChunk | bytes]) -> Any:
        return stub.SendResult(iter(chunks), timeout=600.0)

    async def _model(self, stub: pb_grpc.AggregatorStub, number: int) -> ModelState:
        assembler = TensorAssembler(None, max_total_bytes=wire.MAX_MODEL_BYTES)
        async for message in stub.GetModel(pb.ModelRequest(header=self._header(), round_number=number), timeout=600.0):
            for fields in wire.message_chunk_fields(message):
                assembler.add(*fields)
        return assembler.finish()

    def _result(self, number: int, task: pb.TaskSpec, model: ModelState, digest: str, phase: str) -> TaskResult:
        """A plausible result: the global model plus noise for training, metrics for a validation."""
        samples = SAMPLES + self.index % 8
        if task.returns_model:
            tensors = {k: v + self._noise(v) for k, v in model.items()}
            metrics = {"loss": float(1.0 / (number + 2) + self._rng.uniform(0, 0.01))}
        else:
            tensors, metrics = None, {"accuracy": float(min(0.5 + 0.1 * number + self._rng.uniform(0, 0.05), 1.0))}
        return TaskResult(
            self.name, number, task.name, samples, metrics, tensors, task_seconds=0.01, model_digest=digest,
            phase=wire.phase_from_wire(phase),
        )


async def swarm(workspace: Path, first: int, count: int, connect_seconds: float) -> Tally:
    """Run sites ``first .. first+count-1`` of the plan until each hears QUIT (or fails)."""
    plan = load_plan(workspace / "plan" / "plan.yaml", workspace=workspace)
    layout = CertLayout(plan.resolve_path(plan.model.network.settings.cert_dir))
    chain = layout.chain.read_bytes()
    names = plan.model.collaborators[first : first + count]
    tally = Tally()
    sites = [Site(name, first + i, plan, layout, chain, tally) for i, name in enumerate(names)]
    outcomes = await asyncio.gather(*(site.run(connect_seconds) for site in sites), return_exceptions=True)
    for site, outcome in zip(sites, outcomes):
        if isinstance(outcome, BaseException):
            detail = outcome.details() if isinstance(outcome, grpc.aio.AioRpcError) else repr(outcome)
            tally.errors.append(f"{site.name}: {detail}"[:300])
    return tally


def summary(tally: Tally, count: int, seconds: float) -> Iterator[str]:
    rounds = sorted(tally.rounds.values())
    yield (
        f"SWARM sites={count} quit={tally.quit} failed={len(tally.errors)} results={tally.results} "
        f"rounds_min={rounds[0] if rounds else 0} rounds_max={rounds[-1] if rounds else 0} seconds={seconds:.1f} "
        f"retries={sum(tally.retries.values())} " + " ".join(f"retry_{k}={v}" for k, v in sorted(tally.retries.items()))
    )
    for error in tally.errors[:5]:
        yield f"ERROR {error}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspace", type=Path)
    parser.add_argument("first", type=int, help="index of the first site in the plan's collaborators")
    parser.add_argument("count", type=int)
    parser.add_argument("--connect-seconds", type=float, default=5.0, help="connections open at random over this window")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    random.seed(args.seed)
    started = time.monotonic()
    tally = asyncio.run(swarm(args.workspace, args.first, args.count, args.connect_seconds))
    for line in summary(tally, args.count, time.monotonic() - started):
        print(line, flush=True)
    sys.exit(1 if tally.errors or tally.quit < args.count else 0)


if __name__ == "__main__":
    main()
