"""transport/heap.py: with glibc's thresholds set, received messages reuse freed pages
instead of faulting in fresh ones, and so do larger NumPy temporaries (counted by the kernel:
minor page faults); only the last upload in flight gives the kept pages back."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

from accord.transport import heap
from accord.transport.wire import MIB

SRC = Path(__file__).resolve().parents[1] / "src"
#: decided without calling mallopt: the thresholds are set in subprocesses only, never in this pytest run
GLIBC_ONLY = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the C library has no mallopt (not glibc)")

# a process receiving 100 x 4 messages of 1 MiB (joined from slices, as gRPC Python makes them),
# four held at once, then freed; it prints the minor page faults of the second 400 MiB
_RECEIVER = """
import resource, sys
sys.path.insert(0, {src!r})
from accord.transport.heap import keep_message_pages, message_thresholds
if {keep!r} == "default":
    assert keep_message_pages()
elif {keep!r} == "aggregator":
    assert keep_message_pages(message_thresholds(1 << 20))
part = b"x" * 65536
for _ in range(2):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(100):
        held = [b"".join([part] * 16 + [b"abc"]) for _ in range(4)]
        del held
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(keep: str) -> int:
    return int(_run(_RECEIVER.format(src=str(SRC), keep=keep)))


@GLIBC_ONLY
@pytest.mark.parametrize("thresholds", ["default", "aggregator"])
def test_received_messages_reuse_freed_pages(thresholds: str):
    pages = 400 * MIB // 4096
    plain, kept = _faults("glibc's"), _faults(thresholds)
    assert plain > pages // 2  # glibc's own tuning gives the pages back: each message faults its own in
    assert kept < pages // 50, (plain, kept)


def test_the_thresholds_are_where_glibcs_own_tuning_ends():
    assert heap.MMAP_THRESHOLD == 32 * MIB  # DEFAULT_MMAP_THRESHOLD_MAX on 64-bit: a 1 MiB message is below it
    assert heap.TRIM_THRESHOLD == 2 * heap.MMAP_THRESHOLD


def test_the_aggregators_thresholds_cover_a_message_and_stay_within_glibcs_range():
    mmap_threshold, trim = heap.message_thresholds(MIB)
    assert mmap_threshold == 2 * MIB and trim == heap.TRIM_MESSAGES * mmap_threshold
    assert heap.message_thresholds(64 * MIB)[0] == heap.MMAP_THRESHOLD  # the plan's largest chunk


# a NumPy loop making 8 MiB temporaries, as a site's training does; it prints the minor page faults
# of its second half (glibc's own tuning keeps such blocks in the heap once one is freed)
_TEMPORARIES = """
import resource, sys
import numpy as np
sys.path.insert(0, {src!r})
from accord.transport.heap import keep_message_pages, message_thresholds
if {keep!r} == "aggregator":
    assert keep_message_pages(message_thresholds(1 << 20))
if {keep!r} != "glibc's":
    assert keep_message_pages()
a = np.ones(1 << 20)
for _ in range(2):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(200):
        b = a * 1.0001 + 1.0
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@GLIBC_ONLY
def test_larger_temporaries_still_reuse_freed_memory_unless_the_aggregator_asked_otherwise():
    pages = 200 * 2 * 8 * MIB // 4096  # two 8 MiB temporaries an iteration
    faults = {keep: int(_run(_TEMPORARIES.format(src=str(SRC), keep=keep))) for keep in ("glibc's", "default", "aggregator")}
    assert faults["glibc's"] < pages // 50, faults  # the baseline: glibc's own tuning
    assert faults["default"] < pages // 50, faults  # a 2 MiB threshold faulted in every page of them afresh
    assert faults["aggregator"] > pages // 10, faults  # its first call wins: tensors mapped and unmapped


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout


_RELEASER = """
import sys
sys.path.insert(0, {src!r})
from accord.transport.heap import keep_message_pages, release_message_pages
def anon():
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("RssAnon:"))
assert keep_message_pages()
part = b"x" * 65536
held = [b"".join([part] * 16 + [b"abc"]) for _ in range(4)]
del held
kept = anon()
release_message_pages()
print(kept - anon())
"""


@GLIBC_ONLY
def test_an_upload_gives_the_kept_pages_back():
    freed_kib = int(_run(_RELEASER.format(src=str(SRC))))
    assert freed_kib >= 3 * 1024  # of the four messages' 4 MiB kept free


def test_only_the_last_upload_in_flight_releases_after_one_of_several_chunks():
    uploads = heap.InFlight()
    first, second = uploads.begin(), uploads.begin()
    assert not first.end(multi_chunk=True)  # the second still reuses the pages
    assert second.end(multi_chunk=False)  # the last: the first's pages go back
    assert not second.end(multi_chunk=True)  # ended once only
    alone = uploads.begin()
    assert not alone.end(multi_chunk=False)  # one chunk: nothing kept to release
    refused, last = uploads.begin(), uploads.begin()
    assert not last.end(multi_chunk=True)
    refused.abandon()  # counted out; the release waits for the next upload's end
    assert uploads.begin().end(multi_chunk=False)
    cancelled = uploads.begin()
    cancelled.abandon()
    cancelled.abandon()  # counted out once
    assert uploads.count == 0 and not uploads.begin().end(multi_chunk=False)
