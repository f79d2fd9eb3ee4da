"""SIGINT and SIGTERM as a clean stop: the process says what it saved and how to resume, then
exits with 128 + the signal's number (130 for SIGINT, 143 for SIGTERM), as shells report a
process a signal ended."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(BaseException):
    """A stop signal arrived. A BaseException, as KeyboardInterrupt is: no ``except Exception``
    of task code or of a library swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def signal_name(self) -> str:
        """``SIGINT`` or ``SIGTERM``."""
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """128 + the signal's number: 130 (SIGINT), 143 (SIGTERM)."""
        return 128 + self.signum


@contextmanager
def stop_signals(on_signal: Callable[[int], None] | None = None) -> Iterator[None]:
    """While inside, SIGINT and SIGTERM call ``on_signal(signum)``, or without one raise Stopped
    where the main thread is; the previous handlers come back after. Outside the main thread
    (which alone may set handlers) it changes nothing."""

    def handle(signum: int, _frame: object) -> None:
        if on_signal is None:
            raise Stopped(signum)
        on_signal(signum)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.signal(number, handle) for number in STOP_SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


class StopRequest:
    """The first stop signal asks the serving loop to stop (``event`` set, the signal kept in
    ``signum``); a second one stops at once (Stopped raised where the main thread is)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum: int | None = None

    def __call__(self, signum: int) -> None:
        if self.event.is_set():
            raise Stopped(signum)
        self.signum = signum
        self.event.set()
