"""logs/events.jsonl: what happened to the rounds, a line each, for ``fx dashboard`` to show.

A sink of the engine's events (aggregator/events.py) writes a round opening, a phase opening,
a failure at a site and a round's close (with its stragglers and the update bounds that bit);
the gRPC server's ``on_refusal`` hook writes refused calls, at most one line per
REFUSAL_SECONDS (the refusals in between are counted into the next refusal line, or a line of
their own before the next event), so a flooding site cannot grow the file faster than that. Accepted results are not written: the saved status
already says who reported (aggregator/status.py). Each line is O(1): a close names at most
MAX_NAMES stragglers and failed sites (and counts the rest), and text from sites is cut to
MAX_TEXT characters.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from accord.aggregator.events import EngineEvent, PhaseOpened, ResultFailed, RoundClosed, RoundOpened, Sink

#: at most one line of refusals per this many seconds
REFUSAL_SECONDS = 1.0
#: a site's text (a failure's or a refusal's reason) is cut to this many characters
MAX_TEXT = 300
#: the file's name, next to the plan's metrics_path
EVENTS_NAME = "events.jsonl"
#: a round's close names at most this many stragglers, failed sites and bounds (each list's rest counted)
MAX_NAMES = 20
#: read_events reads this many bytes from the end of the file per event asked for, at a time
TAIL_BYTES_PER_EVENT = 1024
#: read_events reads at most this many bytes back from the end, however long the lines
TAIL_BYTES_LIMIT = 8 << 20


def events_path(metrics_path: Path) -> Path:
    """Where the events of a federation whose metrics go to ``metrics_path`` are written."""
    return metrics_path.with_name(EVENTS_NAME)


_CUT = " ... (cut short)"


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - len(_CUT)] + _CUT


def _first(names: Sequence[str]) -> list[str]:
    """At most MAX_NAMES of ``names``, each cut to MAX_TEXT characters."""
    return [_cut(name) for name in names[:MAX_NAMES]]


def _more(names: Sequence[object]) -> int:
    """How many of ``names`` _first leaves out."""
    return max(len(names) - MAX_NAMES, 0)


class Throttle:
    """At most one line per ``seconds``, the rest counted (not thread-safe: callers hold a lock)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        #: how many were held back since the last line
        self.held = 0
        self._next_at = 0.0

    def take(self, now: float) -> int | None:
        """None: this one is held back (counted); else a line may be written now, and this is
        how many were held back before it."""
        if now < self._next_at:
            self.held += 1
            return None
        self._next_at = now + self.seconds
        held, self.held = self.held, 0
        return held


class EventLog:
    """Appends events to a JSON-lines file; thread-safe (the engine's sink and the gRPC server's
    refusal hook write from different threads). ``fresh`` empties the file (a new federation)."""

    def __init__(self, path: Path, fresh: bool = False, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._refusals = Throttle(REFUSAL_SECONDS)
        path.parent.mkdir(parents=True, exist_ok=True)
        if fresh:
            path.write_bytes(b"")

    def write(self, kind: str, **fields: Any) -> None:
        """Append one event of ``kind`` with ``fields`` (JSON values), stamped with the time."""
        with self._lock:
            now = self._clock()
            if self._refusals.held:  # the refusals held back since the last line are not lost when they stop
                self._append({"at": now, "kind": "refused", "reason": "", "more": self._refusals.held})
                self._refusals.held = 0
            self._append({"at": now, "kind": kind, **fields})

    def refused(self, reason: str) -> None:
        """The gRPC server's ``on_refusal`` hook: a line now, or counted into the next one."""
        with self._lock:
            now = self._clock()
            held = self._refusals.take(now)
            if held is not None:
                self._append({"at": now, "kind": "refused", "reason": _cut(reason), "more": held})

    def _append(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, allow_nan=False) + "\n"
        with self.path.open("a", encoding="utf-8") as out:
            out.write(line)


def events_sink(event_log: EventLog) -> Sink:
    """The sink that writes the engine's round, phase, failure and close events to ``event_log``."""

    def write(event: EngineEvent) -> None:
        if isinstance(event, RoundOpened):
            event_log.write("round_opened", round=event.round_number, cohort=len(event.cohort), final=event.final_validation)
        elif isinstance(event, PhaseOpened):
            event_log.write("phase_opened", round=event.round_number, phase=event.phase, members=len(event.members))
        elif isinstance(event, ResultFailed):
            event_log.write("result_failed", round=event.round_number, collaborator=event.collaborator, reason=_cut(event.reason))
        elif isinstance(event, RoundClosed):
            outcome = event.outcome
            bounds = [f"{e.collaborator}: {e.kind}" for e in outcome.bounds[:MAX_NAMES]]
            event_log.write(
                "round_closed",
                round=outcome.round_number,
                seconds=outcome.wall_seconds,
                stragglers=_first(outcome.stragglers),
                stragglers_more=_more(outcome.stragglers),
                failed=_first(outcome.failed),
                failed_more=_more(outcome.failed),
                bounds=_first(bounds),
                bounds_more=_more(outcome.bounds),
            )

    return write


def read_events(path: Path, last: int) -> list[dict[str, Any]]:
    """The last events of an events file (at most ``last``, oldest first), read from its end:
    ``last`` x TAIL_BYTES_PER_EVENT bytes, then as many more at a time while fewer than ``last``
    whole lines were read, up to TAIL_BYTES_LIMIT bytes back; lines that are not an event (the
    first, cut by the seek, or a last one cut short by a killed writer) are left out."""
    step = max(last, 1) * TAIL_BYTES_PER_EVENT
    try:
        with path.open("rb") as file:
            start = size = file.seek(0, 2)
            data = b""
            while start > 0 and data.count(b"\n") <= last and size - start < TAIL_BYTES_LIMIT:
                begin = max(start - step, 0, size - TAIL_BYTES_LIMIT)
                file.seek(begin)
                data = file.read(start - begin) + data
                start = begin
    except FileNotFoundError:
        return []
    lines = data.decode("utf-8", errors="replace").splitlines()[1 if start else 0 :]
    kept: deque[dict[str, Any]] = deque(maxlen=last)
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("kind"), str):
            kept.append(entry)
    return list(kept)
