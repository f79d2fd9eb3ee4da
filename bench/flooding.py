"""Hostile call floods against an aggregator, and readings of its process; used by bench/floods.py
and tests/test_e2e_floods.py.

Every flood keeps ``count`` calls in flight for ``seconds`` from one certificate, opening
a new call as soon as one ends (after ``reopen`` seconds), on one asyncio loop: a bounded
loop that stops by itself. It returns how the calls ended, by status code.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from accord.tensors.codec import TensorAssembler
from accord.tensors.digest import model_digest
from accord.transport import wire
from accord.transport.proto import accord_pb2 as pb
from accord.transport.tls import ClientTLS

SERVICE = "/accord.v1.Aggregator/"
#: the outcome of an unread GetModel call still open when its flood ended
HELD = "held to the end"
#: a flood opens one connection per this many calls (the server takes 100 streams per connection)
CALLS_PER_CONNECTION = 50
#: no flood call may last longer than this (the server should end each far sooner)
CALL_TIMEOUT = 120.0


@dataclass(frozen=True)
class Flood:
    """``count`` concurrent calls of one ``kind`` from the holder of ``tls``."""

    kind: str  # one of KINDS
    count: int
    tls: ClientTLS
    sender: str
    plan_hash: str
    #: the workspace hash a Join must carry (plan.workspace_hash()); without it the flood cannot follow the rounds
    workspace_hash: str = ""

    @property
    def label(self) -> str:
        return f"{self.count} {KINDS[self.kind]} ({self.sender})"


KINDS = {
    "stalled_results": "header-less or stalled SendResult streams (a valid header, then nothing)",
    "unread_models": "unread GetModel streams",
    "long_polls": "long polls",
}


def run_flood(address: str, flood: Flood, seconds: float, reopen: float = 0.05) -> Counter[str]:
    """Flood ``address`` (host:port) for ``seconds``; the count of each status code the calls ended with."""
    return asyncio.run(_flood(address, flood, seconds, reopen))


def run_flood_in_background(address: str, flood: Flood, seconds: float, reopen: float = 0.05) -> Callable[[], Counter[str]]:
    """Start ``run_flood`` in a thread; returns the function that waits for it and gives its codes."""
    out: list[Counter[str]] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            out.append(run_flood(address, flood, seconds, reopen))
        except BaseException as exc:  # handed to join
            failed.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def join() -> Counter[str]:
        thread.join(seconds + CALL_TIMEOUT + 30)
        if failed:
            raise failed[0]
        assert out, "the flood did not end"
        return out[0]

    return join


async def _flood(address: str, flood: Flood, seconds: float, reopen: float) -> Counter[str]:
    codes: Counter[str] = Counter()
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    done = asyncio.Event()
    loop.call_later(seconds, done.set)
    credentials = flood.tls.credentials()
    channels = [grpc.aio.secure_channel(address, credentials) for _ in range(-(-flood.count // CALLS_PER_CONNECTION))]
    header = wire.header(flood.sender, flood.plan_hash, flood.workspace_hash)
    now = _Round()
    await now.refresh(channels[0], header)  # before the flood takes the site's calls
    calls = [_CALLS[flood.kind](channel, header, done, now) for channel in channels]
    follow = asyncio.ensure_future(now.follow(channels[0], header, done))

    async def keep_one(index: int) -> None:
        call = calls[index % len(calls)]
        while loop.time() < end:
            try:
                outcome = await call(index)
                codes[outcome if isinstance(outcome, str) else "OK"] += 1
            except grpc.aio.AioRpcError as exc:
                codes[exc.code().name] += 1
            await asyncio.sleep(reopen)

    try:
        await asyncio.gather(*(keep_one(i) for i in range(flood.count)))
    finally:
        follow.cancel()
        for channel in channels:
            await channel.close()
    return codes


class _Round:
    """The aggregator's current round, as a Join answers it, and its model's digest, refreshed while the flood runs.

    The flooder is an enrolled site: it may fetch each round's model once, so its stalled
    results carry the digest the aggregator checks first, and really stall after a valid header.
    """

    def __init__(self) -> None:
        self.number = 0
        self.digest = ""
        self._digest_round: int | None = None

    async def follow(self, channel: grpc.aio.Channel, header: pb.Header, done: asyncio.Event) -> None:
        while not done.is_set():
            await self.refresh(channel, header)
            await asyncio.sleep(0.1)

    async def refresh(self, channel: grpc.aio.Channel, header: pb.Header) -> None:
        """Ask the round (and, once per round, its model); a refused call (revoked, busy) leaves both as they were."""
        join = channel.unary_unary(SERVICE + "Join", pb.JoinRequest.SerializeToString, pb.JoinResponse.FromString)
        get = channel.unary_stream(SERVICE + "GetModel", pb.ModelRequest.SerializeToString, pb.TensorChunk.FromString)
        with contextlib.suppress(grpc.aio.AioRpcError):
            self.number = (await join(pb.JoinRequest(header=header), timeout=10)).round_number
            if self._digest_round != self.number:
                number = self.number
                assembler = TensorAssembler(None, max_total_bytes=wire.MAX_MODEL_BYTES)
                async for message in get(pb.ModelRequest(header=header, round_number=number), timeout=CALL_TIMEOUT):
                    for fields in wire.message_chunk_fields(message):
                        assembler.add(*fields)
                self.digest, self._digest_round = model_digest(assembler.finish(), number), number


def _stalled_results(
    channel: grpc.aio.Channel, header: pb.Header, done: asyncio.Event, now: _Round
) -> Callable[[int], Awaitable[Any]]:
    """Even calls send nothing at all; odd ones send the header of a training result owed now, then nothing."""
    send = channel.stream_unary(SERVICE + "SendResult", pb.ResultChunk.SerializeToString, pb.ResultAck.FromString)

    def call(index: int) -> Awaitable[Any]:
        head = pb.ResultHeader(
            header=header, round_number=now.number, task="train", sample_count=1, tensor_count=1, model_digest=now.digest
        )

        async def stream():  # type: ignore[no-untyped-def]
            if index % 2:
                yield pb.ResultChunk(header=head)
            await done.wait()

        return send(stream(), timeout=CALL_TIMEOUT)

    return call


def _unread_models(
    channel: grpc.aio.Channel, header: pb.Header, done: asyncio.Event, now: _Round
) -> Callable[[int], Awaitable[Any]]:
    """Ask for the current round's model and never read a chunk; hold the call until the server ends it or the flood ends.

    (A client sees the status only after reading every message, so "held to the end" counts
    the calls whose end it cannot see; the server may have ended them long before.)
    """
    get = channel.unary_stream(SERVICE + "GetModel", pb.ModelRequest.SerializeToString, pb.TensorChunk.FromString)

    async def call(_: int) -> str | None:
        stream = get(pb.ModelRequest(header=header, round_number=now.number), timeout=CALL_TIMEOUT)
        ending = asyncio.ensure_future(stream.code())
        await asyncio.wait([ending, asyncio.ensure_future(done.wait())], return_when=asyncio.FIRST_COMPLETED)
        if not ending.done():
            stream.cancel()
            return HELD
        return ending.result().name

    return call


def _long_polls(
    channel: grpc.aio.Channel, header: pb.Header, done: asyncio.Event, now: _Round
) -> Callable[[int], Awaitable[Any]]:
    poll = channel.unary_unary(SERVICE + "GetTasks", pb.TasksRequest.SerializeToString, pb.TasksResponse.FromString)
    return lambda _: poll(pb.TasksRequest(header=header), timeout=CALL_TIMEOUT)


_CALLS = {"stalled_results": _stalled_results, "unread_models": _unread_models, "long_polls": _long_polls}


def process_reading(pid: int) -> tuple[int, int]:
    """(resident bytes, threads) of process ``pid``, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["Threads"])
