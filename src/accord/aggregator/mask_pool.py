"""MaskPool: a secure round's mask expansions over a pool of worker processes.

Once its seeds are rebuilt (a few ms: secagg/shamir.py), a secure round's unmasking expands one
AES-256-CTR mask per survivor (its self mask) and one per dropped site and surviving neighbour
(their pairwise mask, after an X25519 exchange): 2,170 masks of 100,001 ring elements at 100
sites with 30 dropped, ~0.3 s of CPU on this machine's cores. ``cryptography`` holds the GIL
while it encrypts (measured: two threads take as long as one), so threads do not help; past
``MIN_POOLED`` masks they are spread over one worker process per CPU, each summing its share
(crypto.mask_total), and this process adds the workers' sums.

The workers run accord.secagg.crypto.mask_total, our code, on tuples of bytes, names and ints
this process built (the rebuilt seeds of dropped sites, which the aggregator holds anyway, and
the survivors' public keys); they return uint64 arrays. No network bytes are unpickled. They are
started with ``spawn`` (a fork of a process serving gRPC on threads is unsafe), on the first
large batch, and kept for the runtime's life: each round after the first pays no start-up. A
pool that breaks (a worker killed) is dropped and the batch is expanded in this process: slower,
never wrong.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from accord.secagg.crypto import DroppedPair

log = logging.getLogger("accord.aggregator")

#: below this many masks a batch is expanded in this process (a worker's round trip costs more)
MIN_POOLED = 64


class MaskPool:
    """``mask_total`` (ServerSession's hook) over ``workers`` processes (None: one per CPU)."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = max(1, workers if workers is not None else _cpus())
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def mask_total(self, round_seed: bytes, length: int, self_keys: Sequence[bytes], pairs: Sequence[DroppedPair]) -> np.ndarray:
        """crypto.mask_total's result, the masks expanded over the workers."""
        from accord.secagg import crypto  # cryptography: accord[secagg]

        if self.workers < 2 or len(self_keys) + len(pairs) < MIN_POOLED:
            return crypto.mask_total(round_seed, length, self_keys, pairs)
        count = self.workers
        try:
            pool = self._pool()
            parts = [pool.submit(crypto.mask_total, round_seed, length, list(self_keys[at::count]), list(pairs[at::count])) for at in range(count)]
            total = np.zeros(length, dtype=np.uint64)
            for part in parts:
                total += part.result()
            return total
        except BrokenProcessPool as exc:
            log.warning("the mask worker pool broke (%s): this round's masks are expanded in the aggregator's process", exc)
            self.close()
            return crypto.mask_total(round_seed, length, self_keys, pairs)

    def _pool(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
            return self._executor

    def close(self) -> None:
        """Stop the workers (a later batch starts them again)."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)


def _cpus() -> int:
    """The CPUs this process may run on (all of the machine's where the OS cannot say)."""
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
