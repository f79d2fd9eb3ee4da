"""transport/heap.py: with glibc's thresholds set, received messages reuse freed pages
instead of faulting in fresh ones (counted by the kernel: minor page faults)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from accord.transport import heap
from accord.transport.wire import MIB

SRC = Path(__file__).resolve().parents[1] / "src"

# a process receiving 100 x 4 messages of 1 MiB (joined from slices, as gRPC Python makes them),
# four held at once, then freed; it prints the minor page faults of the second 400 MiB
_RECEIVER = """
import resource, sys
sys.path.insert(0, {src!r})
if {keep}:
    from accord.transport.heap import keep_message_pages
    assert keep_message_pages(1 << 20)
part = b"x" * 65536
for _ in range(2):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(100):
        held = [b"".join([part] * 16 + [b"abc"]) for _ in range(4)]
        del held
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(keep: bool) -> int:
    code = _RECEIVER.format(src=str(SRC), keep=keep)
    return int(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout)


@pytest.mark.skipif(not heap.keep_message_pages(MIB), reason="the C library has no mallopt (not glibc)")
def test_received_messages_reuse_freed_pages():
    pages = 400 * MIB // 4096
    plain, kept = _faults(False), _faults(True)
    assert plain > pages // 2  # glibc's own tuning gives the pages back: each message faults its own in
    assert kept < pages // 50, (plain, kept)


def test_the_thresholds_cover_a_message_and_stay_within_glibcs_range():
    mmap_threshold, trim = heap.thresholds(MIB)
    assert mmap_threshold == 2 * MIB and trim == heap.TRIM_MESSAGES * mmap_threshold
    assert heap.thresholds(64 * MIB)[0] == heap.MAX_MMAP_THRESHOLD  # the plan's largest chunk
    for chunk in (1024, MIB, 64 * MIB):
        assert heap.thresholds(chunk)[0] >= min(heap.MAX_MMAP_THRESHOLD, chunk + MIB)


_RELEASER = """
import sys
sys.path.insert(0, {src!r})
from accord.transport.heap import keep_message_pages, release_message_pages
def anon():
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("RssAnon:"))
assert keep_message_pages(1 << 20)
part = b"x" * 65536
held = [b"".join([part] * 16 + [b"abc"]) for _ in range(4)]
del held
kept = anon()
release_message_pages()
print(kept - anon())
"""


@pytest.mark.skipif(not heap.keep_message_pages(MIB), reason="the C library has no mallopt (not glibc)")
def test_an_upload_gives_the_kept_pages_back():
    code = _RELEASER.format(src=str(SRC))
    freed_kib = int(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout)
    assert freed_kib >= 3 * 1024  # of the four messages' 4 MiB kept free
