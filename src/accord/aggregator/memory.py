"""Keep the aggregator's resident memory close to what it really holds."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_ARENA_MAX = -8


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas (call before server threads start).

    glibc gives each gRPC worker thread a heap of its own, and freed message buffers stay
    resident there; with many threads that alone added ~1.5x the model size to the
    aggregator's peak RSS (bench/fedavg_memory.py). Returns whether the cap was set
    (False where the C library is not glibc).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False
