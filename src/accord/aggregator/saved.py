"""The aggregator's saved state, read: round snapshots, their journals and the files they name.

``WS/save/state/`` holds, for the open round N (and the round before it, kept whole to roll
back to):

- ``snapshot-N.json``: the round's start (round number, best score, its global model's file,
  the strategy's snapshot, the status ``fx aggregator status`` starts from), or the end of the
  federation (``finished``). Written whole to a temporary file, flushed and renamed into
  place: the rename is the round's commit point.
- ``journal-N.jsonl``: one JSON line per record, appended in order and flushed to disk
  before the result it records is acknowledged: a line ending in a newline is that result's
  commit point. Records: ``result`` (an accepted result, naming the file of its tensors),
  ``failed`` (a site's task failed; for the status only: after a restart it owes its tasks
  again) and ``resumed`` (an aggregator took the round up again after a restart).
- ``model-N.safetensors``, ``strategy-N.safetensors`` (the strategy's tensors, when it has
  any) and ``result-<id>.safetensors`` (one result's tensors, written and flushed before its
  record).

Nothing here is ever unpickled: JSON and safetensors only. This module only reads (``fx
aggregator status`` reads while an aggregator writes); aggregator/journal.py writes, and
repairs what a kill or a damaged disk left.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accord.errors import AccordError
from accord.messages import TaskResult
from accord.strategies.seam import StrategyState
from accord.tensors.state import ModelState, StateView, load_state

FORMAT = 2
FRESH_FIX = "start over with `fx aggregator start --fresh` (the rounds run so far are discarded)"
#: the file of the state saved before the journal (Accord's format 1), which is not resumed
LEGACY_FILE = "state.json"
_SNAPSHOT = re.compile(r"snapshot-(\d{5,})\.json")


def snapshot_name(round_number: int) -> str:
    return f"snapshot-{round_number:05d}.json"


def journal_name(round_number: int) -> str:
    return f"journal-{round_number:05d}.jsonl"


@dataclass(frozen=True)
class SavedRound:
    """A whole snapshot and the whole records of its journal: the open round (or, ``finished``,
    the end of the federation)."""

    directory: Path
    round_number: int
    best_score: float | None
    model_file: str
    #: the accepted results of the round, in their order (``result`` records)
    results: tuple[dict[str, Any], ...]
    finished: bool = False
    #: the strategy's state at the round's start (None: not saved)
    strategy: StrategyState | None = None
    #: the snapshot's file name
    snapshot: str = ""
    #: the files the snapshot and its records name
    names: frozenset[str] = field(default_factory=frozenset)

    def model(self) -> ModelState:
        return load_named(self.directory / self.model_file)

    def received(self) -> Iterator[TaskResult]:
        """The results of the open round in the order they were accepted, their tensors lazy,
        memory-mapped views of their files (whole: ``read_records`` checked their sizes)."""
        for entry in self.results:
            tensors = StateView(self.directory / entry["tensors"]) if entry["tensors"] else None
            yield TaskResult(
                collaborator=entry["collaborator"],
                round_number=self.round_number,
                task=entry["task"],
                sample_count=entry["sample_count"],
                metrics=dict(entry["metrics"]),
                tensors=tensors,
                is_delta=entry["is_delta"],
                task_seconds=entry["task_seconds"],
                update_digest=entry["update_digest"],
                sender_serial=entry["sender_serial"],
            )


@dataclass
class Records:
    """The records of a journal, read: its whole prefix, and what follows it, if anything."""

    entries: list[dict[str, Any]]
    #: bytes of the whole records (the journal is cut back to this on a repair)
    whole_bytes: int
    #: the bytes after the last newline: a record cut short by a kill (never acknowledged)
    torn: int = 0
    #: why the record after the whole ones cannot be used (None: every line was whole)
    damage: str | None = None


def snapshots(directory: Path) -> list[tuple[int, Path]]:
    """The snapshot files in ``directory``, newest round first."""
    found = [(int(m.group(1)), p) for p in directory.glob("snapshot-*.json") if (m := _SNAPSHOT.fullmatch(p.name))]
    return sorted(found, reverse=True)


def read_snapshot(path: Path) -> dict[str, Any]:
    """A snapshot's fields, checked; a clear error if it is unreadable or malformed."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AccordError(f"{path} cannot be read: {exc}", FRESH_FIX) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise AccordError(f"{path} is not an Accord round snapshot of format {FORMAT}", FRESH_FIX)
    try:
        strategy = data["strategy"]
        checked = {
            "round": int(data["round"]),
            "best_score": None if data["best_score"] is None else float(data["best_score"]),
            "model": file_name(data["model"]),
            "finished": bool(data["finished"]),
            "strategy": {"values": dict(strategy["values"]), "tensors": _optional_name(strategy["tensors"])},
            "status": dict(data["status"]),
            "plan_hash": str(data["plan_hash"]),
            "pid": int(data["pid"]),
            "saved_at": float(data["saved_at"]),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise AccordError(f"{path} is damaged: {exc!r}", FRESH_FIX) from None
    return {**data, **checked}


def read_records(path: Path, directory: Path | None = None) -> Records:
    """The records of the journal ``path`` (none if it is absent; a clear error if it cannot be
    read). With ``directory``, a record naming a file there that is missing or not whole ends
    the whole prefix."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Records([], 0)
    except OSError as exc:
        raise AccordError(f"{path} cannot be read: {exc}", FRESH_FIX) from None
    entries: list[dict[str, Any]] = []
    start = 0
    while (end := data.find(b"\n", start)) >= 0:
        try:
            entry = _record(json.loads(data[start:end]))
        except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
            return Records(entries, start, damage=f"{path} is damaged at record {len(entries) + 1}: {exc!r}")
        problem = None if directory is None else _file_problem(directory, entry.get("tensors"))
        if problem is not None:
            return Records(entries, start, damage=f"{path} is damaged at record {len(entries) + 1}: {problem}")
        entries.append(entry)
        start = end + 1
    return Records(entries, start, torn=len(data) - start)


def snapshot_problem(directory: Path, data: dict[str, Any]) -> str | None:
    """Why a snapshot's files cannot be used (missing, or not whole), None when they can."""
    for name in (data["model"], data["strategy"]["tensors"]):
        problem = _file_problem(directory, name)
        if problem is not None:
            return problem
    return None


def results_of(entries: list[dict[str, Any]]) -> tuple[dict[str, Any], ...]:
    return tuple(e for e in entries if e["kind"] == "result")


def names_of(data: dict[str, Any], entries: list[dict[str, Any]]) -> set[str]:
    """The files a snapshot and its records name (the snapshot and journal files included)."""
    number = data["round"]
    named = [snapshot_name(number), journal_name(number), data["model"], data["strategy"]["tensors"]]
    return {name for name in [*named, *(e.get("tensors") for e in entries)] if name}


def load_named(path: Path) -> ModelState:
    """A file the saved state names; its loss is the saved state's damage."""
    try:
        return load_state(path)
    except AccordError as exc:
        raise AccordError(f"the aggregator's saved state is damaged: {exc.message}", FRESH_FIX) from None


def file_name(value: Any) -> str:
    """A plain file name inside the state directory (never a path elsewhere)."""
    if not isinstance(value, str) or not value or Path(value).name != value or value.startswith("."):
        raise ValueError(f"{value!r} is not a file name")
    return value


def _optional_name(value: Any) -> str | None:
    return None if value is None else file_name(value)


def _file_problem(directory: Path, name: str | None) -> str | None:
    if name is None:
        return None
    path = directory / name
    if not path.is_file():
        return f"the file it names {name} is missing"
    damage = not_whole(path)
    return None if damage is None else f"the file it names {name} {damage}"


def not_whole(path: Path) -> str | None:
    """Why a safetensors file is not whole (None when its header parses and its size is the
    one the header implies): a truncated or cut-short file. Only the header is read."""
    try:
        with path.open("rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            length = os.fstat(handle.fileno()).st_size
            if not 0 < size <= length - 8:
                return f"is cut short ({length} bytes, header of {size})"
            header = json.loads(handle.read(size))
        ends = [int(entry["data_offsets"][1]) for key, entry in header.items() if key != "__metadata__"]
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        return f"has an unreadable header ({exc.__class__.__name__})"
    expected = 8 + size + max(ends, default=0)
    return None if length == expected else f"is {length} bytes, its header says {expected}"


def _record(entry: Any) -> dict[str, Any]:
    """A journal record, checked field by field."""
    if not isinstance(entry, dict):
        raise ValueError("a record is not a mapping")
    kind = entry["kind"]
    if kind == "failed":
        return {"kind": kind, "collaborator": str(entry["collaborator"]), "at": float(entry["at"])}
    if kind == "resumed":
        return {"kind": kind, "pid": int(entry["pid"]), "at": float(entry["at"])}
    if kind != "result":
        raise ValueError(f"unknown record kind {kind!r}")
    return {
        "kind": kind,
        "collaborator": str(entry["collaborator"]),
        "task": str(entry["task"]),
        "sample_count": int(entry["sample_count"]),
        "metrics": {str(k): float(v) for k, v in dict(entry["metrics"]).items()},
        "is_delta": bool(entry["is_delta"]),
        "task_seconds": float(entry["task_seconds"]),
        "tensors": _optional_name(entry["tensors"]),
        "update_digest": str(entry.get("update_digest", "")),
        "sender_serial": str(entry.get("sender_serial", "")),
        "at": float(entry["at"]),
    }
