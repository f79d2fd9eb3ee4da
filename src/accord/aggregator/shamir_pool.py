"""ShamirPool: the secure round's Shamir reconstructions over a pool of worker processes.

A secure round's unmasking rebuilds one secret per cohort site (each survivor's self-mask seed,
each dropped site's mask-key seed), each with pycryptodome's pure-Python Shamir over GF(2^128):
~50 ms a secret at a share threshold of 50 (plain SecAgg at 100 sites), 94% of the unmasking.
The reconstructions are independent, so past ``MIN_POOLED`` secrets they are spread over one
worker per CPU (the aggregator's own, not the runtime's lock-holding thread's, CPU).

The workers run accord.secagg.crypto.combine, our code, on lists of (index, 16-byte share)
tuples this process built from the reveals it parsed (no network bytes are unpickled: the
workers unpickle only what this process pickled). They are started with ``spawn`` (a fork of a
process serving gRPC on threads is unsafe), on the first large batch, and kept for the
runtime's life: each round after the first pays no start-up. A pool that breaks (a worker
killed) is dropped and the batch is rebuilt in this process: slower, never wrong.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

log = logging.getLogger("accord.aggregator")

#: below this many secrets a batch is rebuilt in this process (a worker's round trip costs more)
MIN_POOLED = 16


class ShamirPool:
    """``combine_all`` (ServerSession's hook) over ``workers`` processes (None: one per CPU)."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = max(1, workers if workers is not None else _cpus())
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def combine_all(self, batch: Sequence[Sequence[tuple[int, bytes]]]) -> list[bytes]:
        """Each list of shares' secret, in order (crypto.combine_all's result)."""
        from accord.secagg import crypto  # cryptography and pycryptodome: accord[secagg]

        lists = [list(shares) for shares in batch]
        if self.workers < 2 or len(lists) < MIN_POOLED:
            return crypto.combine_all(lists)
        chunk = max(1, math.ceil(len(lists) / (4 * self.workers)))
        try:
            return list(self._pool().map(crypto.combine, lists, chunksize=chunk))
        except BrokenProcessPool as exc:
            log.warning("the Shamir worker pool broke (%s): this round's secrets are rebuilt in the aggregator's process", exc)
            self.close()
            return crypto.combine_all(lists)

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


def shamir_pool_for(strategy: object) -> ShamirPool | None:
    """A pool, set as ``strategy``'s secret rebuilder, if it runs secure rounds; else None."""
    from accord.strategies.secure import SecureAggregation

    if not isinstance(strategy, SecureAggregation):
        return None
    pool = ShamirPool()
    strategy.combine_all = pool.combine_all
    return pool
