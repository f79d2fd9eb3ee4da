"""MaskPool: a secure round's mask expansions over a pool of worker processes.

Once its seeds are rebuilt (a few ms: secagg/shamir.py), a secure round's unmasking expands one
AES-256-CTR mask per survivor (its self mask) and one per dropped site and surviving neighbour
(their pairwise mask, after an X25519 exchange): 2,170 masks of 100,001 ring elements at 100
sites with 30 dropped, ~0.4 s of CPU on this machine's cores. ``cryptography`` holds the GIL
while it encrypts (measured: two threads take as long as one), so threads do not help; worker
processes do. A batch is spread over as many workers as its work justifies (``work_per_worker``
mask elements each), at most one per CPU this process may use, in two steps:

1. the pairwise masks' keys (X25519 + HKDF, ~20% of the work): the dropped pairs split over the
   workers (crypto.pair_keys), each returning its pairs' 32-byte keys and signs;
2. the masks' sum by coordinates: the ring is cut into slices (one a worker at least, SLICE
   elements at most) and a worker sums ALL the masks over a slice (crypto.sum_masks: AES-CTR
   starts at the slice's block), its keystream made in fixed chunks into reused buffers; this
   process copies each slice into the total as it comes and drops it.

So a worker holds a slice and a chunk (O(SLICE + CHUNK), whatever the ring), and this process
the total and the slices in transit (not a ring vector per worker).

What the workers receive, all built by this process: the dropped sites' rebuilt mask-key seeds
(which the aggregator holds anyway), the survivors' names and public keys, every survivor's
self-mask key (HKDF of its rebuilt b) and the pairwise masks' keys; they return uint64 arrays
and keys. No network bytes are unpickled. The workers are this process's own children,
started with ``spawn`` (a fork of a process serving gRPC on threads is unsafe) on the first
batch that needs them and kept for the runtime's life. ``spawn`` re-imports ``__main__`` in each
worker, so only the serving CLI (``fx aggregator start``, whose ``__main__`` is Accord's) attaches
a pool; in-process APIs unmask in their process. A worker ignores SIGINT (a Ctrl-C to the
process group stops the aggregator, whose close() ends them) and exits when this process dies
(even by kill -9). A pool that breaks, is closed under a batch, or does not answer within
``timeout`` is dropped (its workers killed) and the batch is expanded in this process: slower,
never wrong.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, TypeVar

import numpy as np

if TYPE_CHECKING:
    from accord.secagg.crypto import DroppedPair

log = logging.getLogger("accord.aggregator")

T = TypeVar("T")

#: the work (masks x ring elements) that justifies one more worker: 2M mask elements, 16 MiB of
#: keystream, ~4 ms of one core (AES-CTR and the adds, on the 2-core box of bench/secagg.py);
#: below it a worker's round trip (~1 ms) costs more than its share saves
WORK_PER_WORKER = 1 << 21

#: the most ring elements one task sums (8 MiB of uint64): what a worker holds and returns at a time
SLICE = 1 << 20

#: seconds a batch may take in the workers before it is expanded in this process instead: a
#: minute, plus a second per 10M mask elements (~25x what this 2-core box takes)
TIMEOUT = 60.0
SECONDS_PER_WORK = 1e-7


class MaskPool:
    """``mask_total`` (ServerSession's hook) over up to ``workers`` processes (None: one per CPU)."""

    def __init__(self, workers: int | None = None, work_per_worker: int = WORK_PER_WORKER, timeout: float | None = None) -> None:
        self.workers = max(1, workers if workers is not None else _cpus())
        self.work_per_worker = work_per_worker
        self.timeout = timeout
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def workers_for(self, masks: int, length: int) -> int:
        """Workers a batch of ``masks`` masks of ``length`` ring elements is spread over (1: none)."""
        return max(1, min(self.workers, masks * length // max(self.work_per_worker, 1), (length + 1) // 2))

    def mask_total(self, round_seed: bytes, length: int, self_keys: Sequence[bytes], pairs: Sequence[DroppedPair]) -> np.ndarray:
        """crypto.mask_total's result, the masks expanded over the workers."""
        from accord.secagg import crypto  # cryptography: accord[secagg]

        masks = len(self_keys) + len(pairs)
        count = self.workers_for(masks, length)
        if count < 2:
            return crypto.mask_total(round_seed, length, self_keys, pairs)
        timeout = self.timeout if self.timeout is not None else TIMEOUT + SECONDS_PER_WORK * masks * length
        deadline = time.monotonic() + timeout
        try:
            pool = self._pool()
            keyed = [_submit(pool, crypto.pair_keys, round_seed, list(pairs[at::count])) for at in range(count) if pairs[at::count]]
            keys: list[crypto.MaskKey] = [(key, 1) for key in self_keys]
            for keying in keyed:
                signed: list[crypto.MaskKey] = _result(keying, deadline)
                keys += signed
            total = np.empty(length, dtype=np.uint64)
            slices = {_submit(pool, crypto.sum_masks, keys, start, stop): (start, stop) for start, stop in ring_slices(length, count)}
            for summing in as_completed(slices, timeout=max(0.0, deadline - time.monotonic())):  # each result freed once copied
                start, stop = slices.pop(summing)
                total[start:stop] = summing.result()
            return total
        except (BrokenProcessPool, CancelledError, RuntimeError, TimeoutError) as exc:  # RuntimeError: submit after close()
            reason = f"no answer in {timeout:.0f} s" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
            log.warning("the mask worker pool broke (%s): this round's masks are expanded in the aggregator's process", reason)
            self._drop()
            return crypto.mask_total(round_seed, length, self_keys, pairs)

    def start(self) -> None:
        """Start every worker now (else the first batch that needs them does)."""
        pool = self._pool()
        for part in [_submit(pool, os.getpid) for _ in range(self.workers)]:
            part.result()

    def _pool(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_start)
            return self._executor

    def _drop(self) -> None:
        """Kill the workers (one may hang) and forget the pool; a later batch starts a new one."""
        self._forget(kill=True)

    def close(self) -> None:
        """Stop the workers (a later batch starts them again)."""
        self._forget(kill=False)

    def _forget(self, kill: bool) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            if kill:
                for process in list((executor._processes or {}).values()):  # its own table (None once shut down): no public kill before 3.14
                    process.kill()
            executor.shutdown(wait=True, cancel_futures=True)


def ring_slices(length: int, workers: int) -> list[tuple[int, int]]:
    """The slices of a ring of ``length`` elements the workers sum: one a worker at least, each
    at most SLICE elements, each starting at a 16-byte AES block (an even element)."""
    blocks = (length + 1) // 2
    count = min(max(workers, -(-length // SLICE)), blocks)
    return list(itertools.pairwise(min(length, 2 * (blocks * at // count)) for at in range(count + 1)))


def _submit(pool: ProcessPoolExecutor, call: Callable[..., T], *args: object) -> Future[T]:
    """``pool.submit``, SIGINT blocked in this thread meanwhile: a worker it spawns inherits the
    mask, so a Ctrl-C while the worker imports stays pending until its initializer ignores it
    (here it is only delayed: it is delivered at the unblock)."""
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        return pool.submit(call, *args)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def _result(part: Future[T], deadline: float) -> T:
    return part.result(timeout=max(0.0, deadline - time.monotonic()))


def _worker_start() -> None:
    """A worker's set-up: SIGINT ignored (the parent's close() ends it) and a daemon thread that
    exits the worker when its parent dies (its sentinel becomes ready), so none is orphaned."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # blocked by _submit: one pending is dropped
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent.sentinel,), name="accord-mask-parent", daemon=True).start()


def _exit_with(sentinel: int) -> None:
    multiprocessing.connection.wait([sentinel])
    os._exit(0)


def _cpus() -> int:
    """The CPUs this process may run on (all of the machine's where the OS cannot say)."""
    counted = getattr(os, "process_cpu_count", None)  # Python 3.13+: the affinity's, or -X cpu_count
    if counted is not None:
        return int(counted() or 1)
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


def mask_pool_for(strategy: object) -> MaskPool | None:
    """A pool, set as ``strategy``'s mask expander, if it runs secure rounds; else None."""
    from accord.strategies.secure import SecureAggregation

    if not isinstance(strategy, SecureAggregation):
        return None
    pool = MaskPool()
    strategy.mask_total = pool.mask_total
    return pool
