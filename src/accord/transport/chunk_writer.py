"""An upload's per-chunk work (its audit digest, its checks, the write to its file) on a thread of its own.

The event loop that drives every transfer only reads each chunk and hands it on: hashing,
decoding, writing and measuring it (~2 ms per MiB together) run here, in arrival order, on
one thread per upload, and mostly in parallel with the loop (BLAKE3, ``os.pwrite`` and
NumPy release the GIL on large buffers). At most ``depth`` chunks wait for the thread, so
an upload holds two chunks beyond what it has written, whatever the sender's speed. A
job's error (a refusal, a full disk) ends the upload at the loop's next ``put`` or at
``drain``; the jobs queued behind it do not run.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
from collections.abc import Callable

#: chunks handed on and not yet done, at most (each holds its received message)
DEPTH = 2


class ChunkWriter:
    """Runs jobs in the order ``put`` gives them, on one thread; ``close`` ends it (call it once, always)."""

    def __init__(self, depth: int = DEPTH) -> None:
        self._depth = depth
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="accord-upload")
        self._pending: collections.deque[concurrent.futures.Future[None]] = collections.deque()
        self._stopped = False

    async def put(self, job: Callable[[], None]) -> None:
        """Queue ``job``, first waiting while ``depth`` jobs are; raises an earlier job's error."""
        while self._pending and (self._pending[0].done() or len(self._pending) >= self._depth):
            await _outcome(self._pending.popleft())
        self._pending.append(self._thread.submit(self._run, job))

    async def drain(self) -> None:
        """Wait for every queued job; raises the first one's error."""
        while self._pending:
            await _outcome(self._pending.popleft())

    def close(self) -> None:
        """Drop the jobs not started and wait for the running one (then nothing touches what they wrote to)."""
        self._stopped = True
        self._thread.shutdown(wait=True, cancel_futures=True)

    def _run(self, job: Callable[[], None]) -> None:
        if self._stopped:
            return
        try:
            job()
        except BaseException:
            self._stopped = True
            raise


async def _outcome(job: concurrent.futures.Future[None]) -> None:
    """Wait for ``job`` and raise its error; one already done is read at once, with no round
    trip through the loop (wrapping a future wakes the loop from its self-pipe even then: one
    wake-up per chunk saved)."""
    if job.done():
        job.result()
    else:
        await asyncio.wrap_future(job)
