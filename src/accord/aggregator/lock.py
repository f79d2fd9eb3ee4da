"""One aggregator per workspace: an exclusive lock on a file in the state directory.

The lock (``fcntl.flock``) is held while the aggregator serves and is released by the
kernel when the process ends, however it ends (kill -9 included), so a stale lock file
never blocks a restart. The holder writes a record of itself into the file (its pid and its
start time, RECORD_BYTES in one write) and blanks it on release. ``fx aggregator status`` and
``fx dashboard`` read that record and check the process is alive and is the one that wrote it
(its start time, so a reused pid is not taken for it); they do not lock the file, so no number
of readers can make a start fail. Only a record whose process this host's /proc does not show
as its writer (killed with the lock, or serving from another pid namespace) is settled by an
instant's non-blocking try of the lock, which a start, writing its record at once, soon ends.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from types import TracebackType

from accord.errors import AccordError

LOCK_FILE = "aggregator.lock"
#: how long a start keeps trying a lock that is held (an aggregator that is stopping releases it)
ACQUIRE_SECONDS = 1.0
#: the holder's record: "PID START" padded with spaces to this many bytes, written at once
RECORD_BYTES = 64


class StateLock:
    """Held (``with StateLock(state_dir):``) for as long as an aggregator serves from ``state_dir``."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> StateLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        give_up = time.monotonic() + ACQUIRE_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= give_up:
                    os.close(fd)
                    holder = holder_pid(self.path.parent)
                    raise AccordError(
                        f"another aggregator (pid {holder or 'unknown'}) is already serving this workspace: "
                        f"it holds {self.path}",
                        "stop that aggregator first, or check on it with `fx aggregator status`",
                    ) from None
                time.sleep(0.05)
        pid = os.getpid()
        os.pwrite(fd, _record(f"{pid} {_started(pid)}"), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self._fd is not None:
            os.pwrite(self._fd, _record(""), 0)  # this process may live on: its record must not
            os.close(self._fd)  # releases the lock
            self._fd = None


def holder_pid(state_dir: Path) -> int | None:
    """The pid of the aggregator holding ``state_dir``'s lock now, or None when none does: the
    lock file's record, if the process it names is alive and started when the record says."""
    try:
        with (state_dir / LOCK_FILE).open("rb") as file:
            fields = file.read(RECORD_BYTES).decode("ascii", "replace").split()
            if len(fields) != 2 or not all(field.isdigit() for field in fields):
                return None  # blank: released
            pid, started = int(fields[0]), int(fields[1])
            if pid > 0 and _started(pid) == started:
                return pid
            try:  # not this host's process as recorded: is the lock still held?
                fcntl.flock(file.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return pid
            fcntl.flock(file.fileno(), fcntl.LOCK_UN)
            return None
    except FileNotFoundError:
        return None


def _record(text: str) -> bytes:
    return text.ljust(RECORD_BYTES - 1).encode("ascii") + b"\n"


def _started(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, from /proc), or None if there is none.
    Where there is no /proc, 0 for a live process (the pid alone is checked)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass  # alive, another user's
        return 0
    except OSError:
        return None
    fields = text.rsplit(")", 1)[-1].split()  # after the command's name, which may hold spaces
    return int(fields[19]) if len(fields) > 19 and fields[19].isdigit() else None
