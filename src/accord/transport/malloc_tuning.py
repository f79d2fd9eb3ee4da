"""glibc's allocator told to reuse a transfer's message buffers instead of mapping fresh pages for each.

A model travels as messages of about ``chunk_bytes`` (1 MiB) each, allocated and freed by gRPC
and by Python in several threads. Past glibc's mmap threshold (128 KiB until a freed chunk
raises it) each one is mapped on its own and unmapped when freed, and a freed chunk at the
top of a heap is given back once the heap's free top passes the trim threshold: either way
the next message lands in fresh pages the kernel must zero and fault in, a pass over every
byte (the aggregator spent 0.3-0.9 s of CPU per GB uploaded on it: bench/wire_throughput.py).
``keep_message_buffers`` sets, through glibc's documented ``mallopt``, the mmap threshold
above a message's size and the trim threshold well above it, so freed message buffers are
reused. The cost: each of the process's malloc arenas may keep up to ``TRIM_FACTOR`` messages'
worth of freed memory. Process-wide, set once by the gRPC server and client; a no-op where
the C library has no ``mallopt`` (not glibc).
"""

from __future__ import annotations

import ctypes
import threading

#: mallopt's parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: glibc refuses an mmap threshold above this (HEAP_MAX_SIZE / 2 on 64-bit)
MAX_MMAP_THRESHOLD = 32 << 20
#: free memory an arena's heap may keep at its top, in message sizes
TRIM_FACTOR = 16

_lock = threading.Lock()
_set_for = 0  # the largest message size set so far


def keep_message_buffers(message_bytes: int) -> bool:
    """Let buffers of up to ``message_bytes`` be reused once freed (see the module); whether glibc took it."""
    global _set_for
    threshold = min(MAX_MMAP_THRESHOLD, 2 * message_bytes)
    with _lock:
        if threshold <= _set_for:
            return True
        try:
            mallopt = ctypes.CDLL(None).mallopt
        except (OSError, AttributeError):
            return False
        mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
        if mallopt(_M_MMAP_THRESHOLD, threshold) != 1 or mallopt(_M_TRIM_THRESHOLD, TRIM_FACTOR * threshold) != 1:
            return False
        _set_for = threshold
        return True
