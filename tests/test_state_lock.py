"""aggregator/lock.py: one aggregator per workspace, and readers (fx aggregator status, the
dashboard's polls) that never stand in a start's way."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from accord.aggregator.lock import LOCK_FILE, RECORD_BYTES, StateLock, holder_pid
from accord.errors import AccordError


def test_polls_in_a_loop_never_make_a_start_fail(tmp_path: Path) -> None:
    with StateLock(tmp_path):  # the file exists, as after a first run
        pass
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            holder_pid(tmp_path)

    pollers = [threading.Thread(target=poll) for _ in range(8)]
    for thread in pollers:
        thread.start()
    try:
        for _ in range(20):
            with StateLock(tmp_path):
                assert holder_pid(tmp_path) is not None
    finally:
        stop.set()
        for thread in pollers:
            thread.join()


def test_a_reader_stopped_in_the_middle_of_its_check_does_not_make_a_start_fail(tmp_path: Path, monkeypatch) -> None:
    """A poll descheduled mid-check (here: for longer than a start keeps trying) must not hold
    anything a start needs: the readers never lock the file."""
    import fcntl
    import types

    from accord.aggregator import lock

    with StateLock(tmp_path):
        pass
    checking, done = threading.Event(), threading.Event()

    def flock(fd: int, operation: int) -> None:
        fcntl.flock(fd, operation)
        if operation & fcntl.LOCK_SH:  # a reader's lock, then the reader stalls
            checking.set()
            done.wait(lock.ACQUIRE_SECONDS + 5)

    monkeypatch.setattr(lock, "fcntl", types.SimpleNamespace(**{**vars(fcntl), "flock": flock}))
    reader = threading.Thread(target=holder_pid, args=(tmp_path,))
    reader.start()
    while reader.is_alive() and not checking.is_set():
        checking.wait(0.01)
    try:
        with StateLock(tmp_path):
            pass
    finally:
        done.set()
        reader.join()


def test_the_holder_is_named_while_it_serves_and_not_after(tmp_path: Path) -> None:
    assert holder_pid(tmp_path) is None  # no lock file yet
    with StateLock(tmp_path):
        assert holder_pid(tmp_path) == os.getpid()
        with pytest.raises(AccordError, match=rf"another aggregator \(pid {os.getpid()}\) is already serving"):
            StateLock(tmp_path).__enter__()
    assert holder_pid(tmp_path) is None  # released, though this process lives on
    assert (tmp_path / LOCK_FILE).stat().st_size == RECORD_BYTES


def test_a_killed_holders_record_and_a_reused_pid_are_not_taken_for_a_serving_aggregator(tmp_path: Path) -> None:
    code = f"import os; from pathlib import Path; from accord.aggregator.lock import StateLock; StateLock(Path({str(tmp_path)!r})).__enter__(); os._exit(0)"
    subprocess.run([sys.executable, "-c", code], check=True)  # exits holding it: the kernel releases the lock, the record stays
    assert (tmp_path / LOCK_FILE).read_text().split()[0].isdigit()
    assert holder_pid(tmp_path) is None
    with StateLock(tmp_path):  # and a restart takes it at once
        pass
    record = f"{os.getpid()} 1".ljust(RECORD_BYTES - 1) + "\n"  # a live pid, not started then: another process
    (tmp_path / LOCK_FILE).write_text(record)
    assert holder_pid(tmp_path) is None
    (tmp_path / LOCK_FILE).write_text("garbage\n")
    assert holder_pid(tmp_path) is None


def test_a_holder_whose_process_is_not_seen_here_is_told_by_the_lock(tmp_path: Path) -> None:
    """An aggregator in another pid namespace (a container): its record names a pid /proc does
    not show as its writer, but it holds the lock, so it serves."""
    with StateLock(tmp_path):
        path = tmp_path / LOCK_FILE
        with path.open("r+b") as file:
            file.write(b"999999999 1".ljust(RECORD_BYTES - 1) + b"\n")
        assert holder_pid(tmp_path) == 999999999
