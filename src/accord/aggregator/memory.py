"""Keep the aggregator's resident memory close to what it really holds."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_ARENA_MAX = -8
_M_MMAP_THRESHOLD = -3
#: blocks from this size on are mapped and unmapped on their own (256 KiB: a wire chunk is 1 MiB)
MMAP_THRESHOLD = 256 * 1024


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas (call before server threads start).

    glibc gives each gRPC worker thread a heap of its own, and freed message buffers stay
    resident there; with many threads that alone added ~1.5x the model size to the
    aggregator's peak RSS (bench/fedavg_memory.py). Returns whether the cap was set
    (False where the C library is not glibc).

    It also fixes glibc's mmap threshold at MMAP_THRESHOLD: left dynamic, it rises to the
    size of the first large block freed (a 1 MiB message), and every later message buffer
    then comes from, and stays resident in, the heap; fixed, each is unmapped when freed.
    With 32 sites uploading a 32 MB model, that took the aggregator's peak from 3.5x the
    model above its baseline to 2.6x (bench/fedavg_memory.py --light).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_ARENA_MAX, arenas)) and bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):
        return False
