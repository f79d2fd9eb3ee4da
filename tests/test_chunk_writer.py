"""The upload's writer thread (transport/chunk_writer.py): jobs run in order, off the loop, at
most ``depth`` behind it; a job's error ends the upload at the next ``put`` (a job done before
the put is read at once) or at ``drain``, and the jobs queued behind it never run."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

import pytest

from accord.errors import RefusedError
from accord.transport.chunk_writer import ChunkWriter


async def until_done(writer: ChunkWriter) -> None:
    """Until the futures of the jobs queued are done: the thread sets one after its job returns,
    so an event the job sets says nothing of it (a loaded box may pause the thread in between)."""
    await asyncio.to_thread(concurrent.futures.wait, list(writer._pending))


def test_jobs_run_in_order_on_one_thread_off_the_loop() -> None:
    ran: list[tuple[int, str]] = []

    async def upload() -> str:
        writer = ChunkWriter()
        try:
            for i in range(50):
                await writer.put(lambda i=i: ran.append((i, threading.current_thread().name)))
            await writer.drain()
        finally:
            writer.close()
        return threading.current_thread().name

    loop_thread = asyncio.run(upload())
    assert [i for i, _ in ran] == list(range(50))
    assert len({name for _, name in ran}) == 1 and ran[0][1] != loop_thread


def test_the_loop_waits_while_depth_jobs_are_not_done() -> None:
    gate = threading.Event()
    started: list[int] = []

    async def upload() -> tuple[bool, int]:
        writer = ChunkWriter(depth=2)
        try:
            await writer.put(lambda: (started.append(0), gate.wait(10)))
            await writer.put(lambda: started.append(1))
            third = asyncio.ensure_future(writer.put(lambda: started.append(2)))
            await asyncio.sleep(0.2)
            waiting = not third.done()  # two jobs not done: the third put waits
            gate.set()
            await third
            await writer.drain()
            return waiting, len(started)
        finally:
            writer.close()

    assert asyncio.run(upload()) == (True, 3)


@pytest.mark.parametrize("done_before", [True, False], ids=["done-before-the-put", "while-the-put-waits"])
def test_a_jobs_error_ends_the_upload_and_the_jobs_behind_it_never_run(done_before: bool) -> None:
    ran: list[int] = []

    def refuse() -> None:
        raise RefusedError("tensor 'w' was sent twice", kind="payload")

    async def upload() -> None:
        writer = ChunkWriter(depth=2)
        try:
            await writer.put(refuse)
            if done_before:
                await until_done(writer)
                await writer.put(lambda: ran.append(1))  # raises here, before queueing
            else:
                gate = threading.Event()
                await writer.put(lambda: (gate.wait(10), ran.append(1)))  # queued behind the refusal: never run
                gate.set()
                await writer.drain()
        finally:
            writer.close()

    with pytest.raises(RefusedError, match="sent twice"):
        asyncio.run(upload())
    assert ran == []


def test_a_put_behind_a_job_done_already_does_not_go_through_the_loop() -> None:
    """Wrapping a done future still wakes the loop (its self-pipe) and yields to it: once per chunk.
    A put whose earlier job is done reads its outcome at once: other callbacks do not run in between."""

    async def upload() -> list[int]:
        writer = ChunkWriter()
        try:
            await writer.put(lambda: None)
            await until_done(writer)
            between: list[int] = []
            asyncio.get_running_loop().call_soon(between.append, 1)
            await writer.put(lambda: None)
            seen = list(between)
            await writer.drain()
            return seen
        finally:
            writer.close()

    assert asyncio.run(upload()) == []
