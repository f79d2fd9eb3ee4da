"""glibc's malloc told to keep the pages of freed gRPC messages, so that the next message reuses them.

gRPC Python hands each received message over as a new ``bytes`` object, joined from its
slices: one chunk (``network.settings.chunk_bytes``, 1 MiB) a message. glibc's own tuning
gives that memory back to the kernel as soon as a few such blocks are free together (its
trim threshold grows to only twice the largest block freed, and an upload frees several at
once), so every message was copied into fresh pages, each faulted in and zeroed by the
kernel: ~0.6 s of the aggregator's CPU per uploaded GB, and ~0.4 s of a site's per
downloaded GB (bench/wire_throughput.py, docs/failure-model.md). ``keep_message_pages``
sets the two thresholds once per process: a block up to one message's size comes from the
heap (not a mapping of its own), and up to ``TRIM_MESSAGES`` messages' worth of free memory
stays at the top of each heap (4 at 1 MiB chunks: 8 MiB). Larger blocks (a model's tensors)
are mapped and unmapped as before. An upload of more than one chunk, once its last chunk is written, gives what the
heaps keep free back (``release_message_pages``), so none of it adds to the peak of a round's
close.

Only glibc has these settings (``mallopt``); elsewhere this is a no-op.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable

from accord.transport.wire import MIB

#: glibc's malloc.h: M_TRIM_THRESHOLD, M_MMAP_THRESHOLD
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit: the largest threshold its own tuning would set
MAX_MMAP_THRESHOLD = 32 * MIB
#: messages' worth of free memory a heap keeps at its top (an upload holds about four at once)
TRIM_MESSAGES = 4

_set: tuple[int, int] | None = None


def thresholds(chunk_bytes: int) -> tuple[int, int]:
    """(mmap threshold, trim threshold) for messages of up to ``chunk_bytes`` plus 1 MiB (wire.channel_options)."""
    mmap_threshold = min(MAX_MMAP_THRESHOLD, chunk_bytes + MIB)
    return mmap_threshold, TRIM_MESSAGES * mmap_threshold


def keep_message_pages(chunk_bytes: int) -> bool:
    """Set glibc's thresholds for messages of ``chunk_bytes`` (the largest asked for so far wins);
    False where the C library has no ``mallopt`` (then nothing changes)."""
    global _set
    wanted = thresholds(chunk_bytes)
    if _set is not None and _set >= wanted:
        return True
    mallopt = _mallopt()
    if mallopt is None:
        return False
    mmap_threshold, trim_threshold = wanted
    if not (mallopt(_M_MMAP_THRESHOLD, mmap_threshold) and mallopt(_M_TRIM_THRESHOLD, trim_threshold)):
        return False
    _set = wanted
    return True


def release_message_pages() -> None:
    """Give the heaps' free memory back to the kernel (glibc's ``malloc_trim``; elsewhere nothing)."""
    if _set is not None:
        _libc().malloc_trim(0)


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None)


def _mallopt() -> Callable[[int, int], int] | None:
    """glibc's ``mallopt``, else None (musl's, which has no gnu_get_libc_version, does nothing)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = _libc()
        function, _ = libc.mallopt, libc.gnu_get_libc_version
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int)
    function.restype = ctypes.c_int
    return function
