"""The upload's writer thread (transport/chunk_writer.py): jobs run in order, off the loop, at
most ``depth`` behind it; a job's error ends the upload at the next ``put`` (a job done before
the put is read at once) or at ``drain``, and the jobs queued behind it never run."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time

import pytest

from accord.errors import RefusedError
from accord.transport.chunk_writer import ChunkWriter


async def until_done(writer: ChunkWriter) -> None:
    """Until the futures of the jobs queued are done: the thread sets one after its job returns,
    so an event the job sets says nothing of it (a loaded box may pause the thread in between)."""
    await asyncio.to_thread(concurrent.futures.wait, list(writer._pending))


def test_jobs_run_in_order_one_at_a_time_off_the_loop() -> None:
    ran: list[tuple[int, str]] = []
    running = [0, 0]  # now, most at once

    def job(i: int) -> None:
        running[0] += 1
        running[1] = max(running)
        time.sleep(0.001)
        ran.append((i, threading.current_thread().name))
        running[0] -= 1

    async def upload() -> str:
        writer = ChunkWriter()
        try:
            for i in range(50):
                await writer.put(lambda i=i: job(i))
            await writer.drain()
        finally:
            writer.close()
        return threading.current_thread().name

    loop_thread = asyncio.run(upload())
    assert [i for i, _ in ran] == list(range(50)) and running == [0, 1]
    assert all(name != loop_thread and name.startswith("accord-upload") for _, name in ran)


def test_the_pool_threads_are_kept_between_uploads() -> None:
    names: set[str] = set()

    async def upload() -> None:
        writer = ChunkWriter()
        try:
            await writer.put(lambda: names.add(threading.current_thread().name))
            await writer.drain()
        finally:
            writer.close()

    for _ in range(20):
        asyncio.run(upload())
        time.sleep(0.05)  # the thread that ran it goes back to the pool, idle
    assert len(names) <= 2  # a thread a upload would make 20 (the pool's cap is WRITER_THREADS, 16)


def test_close_drops_the_jobs_not_started_and_waits_for_the_running_one() -> None:
    gate, ran = threading.Event(), []

    async def upload() -> ChunkWriter:
        writer = ChunkWriter(depth=3)
        await writer.put(lambda: (gate.wait(10), ran.append(0)))
        await writer.put(lambda: ran.append(1))
        threading.Timer(0.2, gate.set).start()
        writer.close()  # waits for the first job; the second never runs
        return writer

    writer = asyncio.run(upload())
    assert ran == [0] and writer._pending[1].cancelled()


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


def test_a_pool_that_takes_no_job_fails_the_put_and_close_returns(monkeypatch: pytest.MonkeyPatch) -> None:
    """At interpreter shutdown the pool refuses new work: the upload fails, and its close does not wait for a run that never started."""
    from accord.transport import chunk_writer

    class ShutDown:
        def submit(self, *_: object) -> None:
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")

    monkeypatch.setattr(chunk_writer, "WRITERS", ShutDown())

    async def upload() -> None:
        writer = ChunkWriter()
        try:
            await writer.put(lambda: None)
        finally:
            closing = threading.Thread(target=writer.close)
            closing.start()
            closing.join(10)
            assert not closing.is_alive()

    with pytest.raises(RuntimeError, match="shutdown"):
        asyncio.run(upload())
