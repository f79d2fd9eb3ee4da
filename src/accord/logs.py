"""Logging set-up: rich output on a terminal, plain timestamped lines otherwise.

Every message is one line: control characters (newlines, carriage returns, ANSI escapes,
other non-printables) are shown escaped, so a string a peer sent (a metric name, a claimed
name, a refusal reason) can never start a line of its own or repaint the terminal.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def configure_logging(level: str = "INFO") -> None:
    """Send ``accord.*`` logs to stdout, rich-formatted when stdout is a terminal."""
    root = logging.getLogger("accord")
    root.handlers.clear()
    root.setLevel(level.upper())
    root.propagate = False
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(console=Console(), show_path=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s", datefmt="%H:%M:%S"))
    else:
        handler = _StdoutHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))
    handler.addFilter(EscapeControl())
    root.addHandler(handler)


@contextmanager
def log_file(path: Path) -> Iterator[None]:
    """While inside, ``accord.*`` logs also go to ``path`` (appended; dated plain lines, control
    characters escaped), at the level the console has."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"))
    handler.addFilter(EscapeControl())
    root = logging.getLogger("accord")
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()


def escape_control(text: str) -> str:
    """``text`` with every non-printable character written as its Python escape (``\\n``, ``\\x1b``)."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


class EscapeControl(logging.Filter):
    """Escapes control characters in a record's formatted message (tracebacks keep their lines)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.isprintable():
            record.msg, record.args = escape_control(message), None
        return True


def ensure_logging(level: str = "INFO") -> None:
    """Configure Accord's logging as ``configure_logging`` does, unless it already has a handler."""
    if not logging.getLogger("accord").handlers:
        configure_logging(level)


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is at the time of each record (it may be replaced)."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, _value) -> None:
        pass
