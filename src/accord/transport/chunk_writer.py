"""An upload's per-chunk work (its audit digest, its checks, the write to its file) off the event loop.

The event loop that drives every transfer only reads each chunk and hands it on: hashing,
decoding, writing and measuring it (~2 ms per MiB together) run on a thread, one job at a
time and in arrival order for each upload, and mostly in parallel with the loop (BLAKE3,
``os.pwrite`` and NumPy release the GIL on large buffers). The threads are the process's
``WRITERS`` pool, kept between uploads: starting a thread for each upload cost ~1 ms of a
small result's path on a loaded box. At most ``depth`` jobs of an upload wait, so an upload
holds two chunks beyond what it has written, whatever the sender's speed. A job's error (a
refusal, a full disk) ends the upload at the loop's next ``put`` or at ``drain``; the jobs
queued behind it do not run.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import threading
from collections.abc import Callable

#: chunks handed on and not yet done, at most (each holds its received message)
DEPTH = 2
#: threads of the pool, at most (created only when needed: an upload uses one at a time, and
#: ``aggregator.settings.max_concurrent_uploads``, 2 by default, bound the uploads received at once)
WRITER_THREADS = 64

#: the threads that run every upload's jobs
WRITERS = concurrent.futures.ThreadPoolExecutor(WRITER_THREADS, thread_name_prefix="accord-upload")


class ChunkWriter:
    """Runs jobs in the order ``put`` gives them, one at a time, on the pool; ``close`` ends it (always call it)."""

    def __init__(self, depth: int = DEPTH) -> None:
        self._depth = depth
        self._pending: collections.deque[concurrent.futures.Future[None]] = collections.deque()  # not yet seen done
        self._queued: collections.deque[tuple[concurrent.futures.Future[None], Callable[[], None]]] = collections.deque()
        self._lock = threading.Condition()
        self._running = False  # a pool thread is running this writer's jobs
        self._stopped = False

    async def put(self, job: Callable[[], None]) -> None:
        """Queue ``job``, first waiting while ``depth`` jobs are; raises an earlier job's error."""
        while self._pending and (self._pending[0].done() or len(self._pending) >= self._depth):
            await _outcome(self._pending.popleft())
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._pending.append(future)
        with self._lock:
            self._queued.append((future, job))
            start, self._running = not self._running, True
        if start:
            try:
                WRITERS.submit(self._run)
            except BaseException:  # the pool is shut down (the interpreter ends): close() must not wait
                with self._lock:
                    self._idle()
                raise

    async def drain(self) -> None:
        """Wait for every queued job; raises the first one's error."""
        while self._pending:
            await _outcome(self._pending.popleft())

    def close(self) -> None:
        """Drop the jobs not started and wait for the running one (then nothing touches what they wrote to)."""
        with self._lock:
            self._stopped = True
            for future, _ in self._queued:
                future.cancel()
            self._queued.clear()
            self._lock.wait_for(lambda: not self._running)

    def _run(self) -> None:
        """This writer's queued jobs, in order (on a pool thread), until none is left."""
        try:
            while (item := self._next()) is not None:
                future, job, stopped = item
                if not future.set_running_or_notify_cancel():
                    continue
                if stopped:
                    future.set_result(None)
                    continue
                try:
                    job()
                except BaseException as exc:
                    with self._lock:
                        self._stopped = True
                    future.set_exception(exc)
                else:
                    future.set_result(None)
        except BaseException:  # not a job's error (those are the futures'): this run ends, close() must not wait
            with self._lock:
                self._idle()
            raise

    def _next(self) -> tuple[concurrent.futures.Future[None], Callable[[], None], bool] | None:
        """The next queued job and whether the writer stopped; None when none is queued (then
        ``_run`` ends, and the next ``put`` starts it again)."""
        with self._lock:
            if not self._queued:
                self._idle()  # in the same hold as the check: a put after it starts a new run
                return None
            future, job = self._queued.popleft()
            return future, job, self._stopped

    def _idle(self) -> None:
        """No run of this writer's jobs is under way (the caller holds the lock); wake ``close``."""
        self._running = False
        self._lock.notify_all()


async def _outcome(job: concurrent.futures.Future[None]) -> None:
    """Wait for ``job`` and raise its error; one already done is read at once, with no round
    trip through the loop (wrapping a future wakes the loop from its self-pipe even then: one
    wake-up per chunk saved)."""
    if job.done():
        job.result()
    else:
        await asyncio.wrap_future(job)
