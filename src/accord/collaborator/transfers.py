"""What a site's client moves: bytes down (models) and up (results), counted per chunk, and a
progress bar for a long transfer, drawn only where it helps (a terminal, or a large transfer)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger("accord.collaborator")

#: on a terminal, a transfer of at least this many bytes gets a progress bar
BAR_BYTES = 8 << 20
#: elsewhere (a log file, CI), a transfer of at least this many bytes gets a line at its start and end
LARGE_BYTES = 256 << 20


class Transfers:
    """The client's ``counted`` callback (``("download" | "upload", bytes)`` for each chunk, as
    transport/grpc_client.py and transport/inprocess.py call it): it sums the bytes each way
    and advances the bar of the transfer ``shown`` announces, if it has one.

    ``tty`` (default: whether stdout is a terminal) decides how a transfer is shown: a rich
    progress bar (transient, updated per chunk) from ``bar_bytes`` on a terminal; otherwise, from
    ``large_bytes``, a line as it starts and one as it ends, so logs and CI output never fill
    with bars. Calls may come from gRPC's thread that consumes an upload's stream.
    """

    def __init__(self, tty: bool | None = None, bar_bytes: int = BAR_BYTES, large_bytes: int = LARGE_BYTES) -> None:
        self.down = 0
        self.up = 0
        self._tty = sys.stdout.isatty() if tty is None else tty
        self._bar_bytes = bar_bytes
        self._large_bytes = large_bytes
        self._advance: Callable[[int], None] | None = None

    def __call__(self, direction: str, size: int) -> None:
        if direction == "download":
            self.down += size
        else:
            self.up += size
        advance = self._advance
        if advance is not None:
            advance(size)

    @contextmanager
    def shown(self, what: str, total: int) -> Iterator[None]:
        """Show the transfer of ``what`` (at most ``total`` bytes: its raw size) while inside."""
        if self._tty and total >= self._bar_bytes:
            with self._bar(what, total):
                yield
        elif total >= self._large_bytes:
            moved = self.down + self.up
            started = time.monotonic()
            log.info("%s: up to %s ...", what, shown_bytes(total))
            yield
            seconds = time.monotonic() - started
            done = self.down + self.up - moved
            log.info("%s: %s in %.1f s (%s/s)", what, shown_bytes(done), seconds, shown_bytes(done / max(seconds, 1e-9)))
        else:
            yield

    @contextmanager
    def _bar(self, what: str, total: int) -> Iterator[None]:
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

        # ``what`` names the plan's task: shown as it is, never read as markup ("[/x]") or a format ("{x}")
        label = TextColumn("{task.description}", markup=False)
        with Progress(label, BarColumn(), DownloadColumn(), TransferSpeedColumn(), transient=True) as progress:
            task = progress.add_task(what, total=total)
            self._advance = lambda size: progress.advance(task, size)
            try:
                yield
            finally:
                self._advance = None


def shown_bytes(count: float) -> str:
    """``count`` bytes for a person: ``812 B``, ``25.9 KB``, ``1.2 GB`` (powers of 1000)."""
    if count < 1000:
        return f"{count:.0f} B"
    for unit in ("KB", "MB"):
        count /= 1000
        if count < 1000:
            return f"{count:.1f} {unit}"
    return f"{count / 1000:.1f} GB"
