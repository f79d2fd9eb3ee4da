"""glibc's malloc told to keep the pages of freed gRPC messages, so that the next message reuses them.

gRPC Python hands each received message over as a new ``bytes`` object, joined from its
slices: one chunk (``network.settings.chunk_bytes``, 1 MiB) a message. glibc's own tuning
gives that memory back to the kernel as soon as a few such blocks are free together (its
trim threshold grows to only twice the largest block freed, and an upload frees several at
once), so every message was copied into fresh pages, each faulted in and zeroed by the
kernel: ~0.6 s of the aggregator's CPU per uploaded GB, and ~0.4 s of a site's per
downloaded GB (bench/wire_throughput.py, docs/failure-model.md).

``keep_message_pages`` sets glibc's two thresholds once per process (the first call wins).
Any explicit threshold turns glibc's own tuning off for the whole process, so the default is
where that tuning ends: blocks below ``MMAP_THRESHOLD`` (32 MiB, glibc's
DEFAULT_MMAP_THRESHOLD_MAX on 64-bit) come from the heaps, and up to ``TRIM_THRESHOLD``
(64 MiB, twice that, as its tuning sets it) of free memory stays at the top of each heap; a
site's or a notebook's NumPy/torch temporaries reuse freed memory as they would untouched
(a threshold of one message's size had mapped, faulted in and zeroed every larger one
afresh: tests/test_heap.py counts the faults). A process whose resident memory must follow
what it holds (``fx aggregator start``: aggregator/memory.py) asks for
``message_thresholds`` instead, before its server starts: blocks up to one message from
the heaps, ``TRIM_MESSAGES`` messages' worth kept free, larger ones (a model's tensors)
mapped and unmapped on their own.

An upload ending when no other is in flight, after one of more than one chunk, gives what the
heaps keep free back (``IN_FLIGHT``, ``Upload.end``, ``release_message_pages``: glibc's ``malloc_trim``, which
walks every heap under its lock), so none of it adds to the peak of a round's close, and no
upload's trim takes the pages another in flight is reusing.

Only glibc has these settings (``mallopt``); elsewhere this is a no-op.
"""

from __future__ import annotations

import ctypes
import sys
import threading
from collections.abc import Callable

from accord.transport.wire import MIB

#: glibc's malloc.h: M_TRIM_THRESHOLD, M_MMAP_THRESHOLD
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit: the largest mmap threshold its own tuning sets
MMAP_THRESHOLD = 32 * MIB
#: free memory a heap keeps at its top: twice the mmap threshold, as glibc's own tuning sets it
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD
#: messages' worth of free memory a heap keeps with ``message_thresholds`` (an upload holds about four at once)
TRIM_MESSAGES = 4
#: glibc's DEFAULT_MMAP_THRESHOLD (its start): put back if the trim threshold cannot be set
_GLIBC_MMAP_THRESHOLD = 128 * 1024

_lock = threading.Lock()
_set = False


def message_thresholds(chunk_bytes: int) -> tuple[int, int]:
    """(mmap threshold, trim threshold) for messages of up to ``chunk_bytes`` plus 1 MiB (wire.channel_options)."""
    mmap_threshold = min(MMAP_THRESHOLD, chunk_bytes + MIB)
    return mmap_threshold, TRIM_MESSAGES * mmap_threshold


def keep_message_pages(thresholds: tuple[int, int] = (MMAP_THRESHOLD, TRIM_THRESHOLD)) -> bool:
    """Set glibc's (mmap threshold, trim threshold), unless a first call did; False where the
    C library has no ``mallopt``, or refuses them (then neither is changed from glibc's defaults)."""
    global _set
    with _lock:
        if _set:
            return True
        mallopt = glibc_mallopt()
        mmap_threshold, trim_threshold = thresholds
        # a refused M_MMAP_THRESHOLD changes nothing in glibc; M_TRIM_THRESHOLD is never refused,
        # but if it were, the mmap threshold goes back to glibc's default start
        if mallopt is None or not mallopt(_M_MMAP_THRESHOLD, mmap_threshold):
            return False
        if not mallopt(_M_TRIM_THRESHOLD, trim_threshold):
            mallopt(_M_MMAP_THRESHOLD, _GLIBC_MMAP_THRESHOLD)
            return False
        _set = True
        return True


def release_message_pages() -> None:
    """Give the heaps' free memory back to the kernel (glibc's ``malloc_trim``; elsewhere nothing)."""
    if _set:
        _libc().malloc_trim(0)


class InFlight:
    """The uploads a process is receiving (``IN_FLIGHT``), so that only the last of them to end
    releases the pages the others reuse."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0
        self.due = False  # an upload of more than one chunk ended since the last release

    def begin(self) -> Upload:
        """One more upload in flight."""
        with self.lock:
            self.count += 1
        return Upload(self)


class Upload:
    """One upload in flight (``InFlight.begin``)."""

    def __init__(self, flight: InFlight) -> None:
        self._flight: InFlight | None = flight

    def end(self, multi_chunk: bool) -> bool:
        """It ended (its last chunk written); True when ``release_message_pages`` is due: no
        other upload is in flight and one of more than one chunk ended since the last release."""
        flight = self._flight
        if flight is None:
            return False
        with flight.lock:
            self._leave(flight)
            flight.due = flight.due or multi_chunk
            due = flight.due and flight.count == 0
            flight.due = flight.due and not due
            return due

    def abandon(self) -> None:
        """It ended without completing (refused, cancelled): counted out, nothing released; after ``end``, nothing."""
        flight = self._flight
        if flight is not None:
            with flight.lock:
                self._leave(flight)

    def _leave(self, flight: InFlight) -> None:
        """Count it out (the caller holds ``flight.lock``)."""
        self._flight = None
        flight.count -= 1


#: this process's uploads in flight
IN_FLIGHT = InFlight()


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None)


def glibc_mallopt() -> Callable[[int, int], int] | None:
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
