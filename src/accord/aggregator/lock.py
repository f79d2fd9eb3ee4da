"""One aggregator per workspace: an exclusive lock on a file in the state directory.

The lock (``fcntl.flock``) is held while the aggregator serves and is released by the
kernel when the process ends, however it ends (kill -9 included), so a stale lock file
never blocks a restart. The file holds the holder's pid, which ``fx aggregator status``
reads: a held lock means a live aggregator, whatever the saved snapshot's pid says.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from types import TracebackType

from accord.errors import AccordError

LOCK_FILE = "aggregator.lock"
#: how long a start keeps trying a lock that is held (``fx aggregator status`` holds it for an instant)
ACQUIRE_SECONDS = 1.0


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
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock
            self._fd = None


def holder_pid(state_dir: Path) -> int | None:
    """The pid of the aggregator holding ``state_dir``'s lock now, or None when none does."""
    path = state_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:  # held: read who holds it
            text = os.read(fd, 32).decode("ascii", "replace").strip()
            return int(text) if text.isdigit() else 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
