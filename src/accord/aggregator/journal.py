"""The aggregator's journal: enough to resume the open round after a crash or kill -9.

Layout and commit points: aggregator/saved.py. Per accepted result the aggregator has its
tensors in a file of their own, written while they arrived (aggregator/staging.py; flushed,
and the folder too, before the engine takes the result), and appends one record to
the round's journal (flushed to disk before the result is acknowledged): O(1) work and bytes
in the number of sites. At each round's start it writes the round's model, the strategy's
tensors and a snapshot, then removes the files of the round before the previous one. A model
too large for memory was computed into files of its ``disk_space`` (tensors/space.py): such
a file is flushed and renamed into place instead of written again.

The previous round's snapshot, journal and files stay until the next snapshot commits, so
a damaged newest snapshot (unreadable, malformed, or naming a file that is missing or not
whole) rolls back to the previous one with a warning naming both files, the damaged one
kept aside as ``<name>.damaged-<time>``; its whole journal is replayed, which closes that
round again. In a journal, a last record cut short by a kill (never acknowledged) is
ignored and cut off; a damaged record (unreadable, or naming a file that is missing or not
whole) ends the whole records: the journal is cut back to them with a warning (the cut
records kept aside) and the results after them are done again. Files no snapshot or record
names (orphans) and the temporary files of cut-short writes are removed on load.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from accord.aggregation.bounds import StreamedChecks
from accord.aggregator import saved as disk
from accord.aggregator.saved import FRESH_FIX, SavedRound
from accord.aggregator.staging import StagedFile, sync_directory
from accord.errors import AccordError
from accord.files import atomic_write, link_or_copy
from accord.messages import TaskResult
from accord.strategies.seam import StrategyState
from accord.tensors.space import DiskSpace
from accord.tensors.state import ModelState, StateView, save_state

log = logging.getLogger("accord.aggregator")

#: the files this module writes (nothing else in the folder is touched)
_OWN = ("model-*.safetensors", "result-*.safetensors", "strategy-*.safetensors", "snapshot-*.json", "journal-*.jsonl")


class Journal:
    """Reads, repairs and appends to the saved state in ``directory``."""

    def __init__(self, directory: Path, plan_hash: str) -> None:
        self.directory = directory
        self.plan_hash = plan_hash
        self._fd: int | None = None
        self._size = 0
        #: the open round's snapshot; the files it and its records name; those of the previous one
        self._snapshot: Path | None = None
        self._names: set[str] = set()
        self._previous: set[str] = set()
        #: the open round's model file (None before one is loaded or written)
        self._model_file: str | None = None
        #: where a large model's next rounds are computed (None: in memory); ``disk_space``
        self._space: DiskSpace | None = None

    def disk_space(self) -> DiskSpace:
        """The space, in this folder, where a model too large for memory is computed: the
        files it makes are renamed into place as the next model (``open_round``)."""
        if self._space is None:
            self._space = DiskSpace(self.directory)
        return self._space

    @property
    def path(self) -> Path | None:
        """The open round's snapshot, where a restart resumes (None before one is loaded or written)."""
        return self._snapshot

    # -- loading ---------------------------------------------------------------

    def load(self) -> SavedRound | None:
        """The federation saved here (unfinished, or finished), or None when there is none.

        A damaged newest snapshot rolls back to the previous one, if it is whole.
        """
        found = disk.snapshots(self.directory)
        if not found:
            legacy = self.directory / disk.LEGACY_FILE
            if legacy.is_file():
                raise AccordError(
                    f"{legacy} was saved by an earlier Accord, whose saved state this one does not resume",
                    f"finish that federation with the Accord that started it, or {FRESH_FIX}",
                )
            return None
        newest = found[0][1]
        try:
            saved, at = self._read(newest), 0
        except AccordError as damage:
            if len(found) == 1:
                raise
            saved, at = self._roll_back(newest, found[1][1], damage), 1
        self._adopt(saved)
        if at + 1 < len(found):
            self._previous = _readable_names(found[at + 1][1])
        self._remove_orphans()
        for partial in self._partial_files():
            partial.unlink(missing_ok=True)
        return saved

    def _roll_back(self, damaged: Path, previous: Path, damage: AccordError) -> SavedRound:
        try:
            saved = self._read(previous)
        except AccordError as also:
            raise AccordError(f"{damage.message}; the previous state cannot be used either: {also.message}", FRESH_FIX) from None
        aside = _set_aside(damaged)
        log.warning(
            "%s; rolled back to the previous saved state %s (round %d, %d results): the work committed "
            "after it is redone (the damaged file is kept as %s)",
            damage.message,
            previous,
            saved.round_number,
            len(saved.results),
            aside.name,
        )
        return saved

    def _read(self, path: Path) -> SavedRound:
        """The snapshot ``path`` with the whole records of its journal (repaired: see the module
        docstring), refused if damaged or of another plan."""
        data = disk.read_snapshot(path)
        if data["plan_hash"] != self.plan_hash:
            raise AccordError(
                f"{path} is the state of a federation with another plan "
                f"(hash {data['plan_hash'][:16]}..., this plan's is {self.plan_hash[:16]}...)",
                f"restore that plan to resume it, or {FRESH_FIX}",
            )
        problem = disk.snapshot_problem(self.directory, data)
        if problem is not None:
            raise AccordError(f"{path} is damaged: {problem}", FRESH_FIX)
        tensors = data["strategy"]["tensors"]
        # mapped, not read (their header and size were checked): a model too large for memory
        # has moments as large; placement.initial_model copies them into memory for a small one
        strategy = StrategyState(data["strategy"]["values"], dict(StateView(self.directory / tensors)) if tensors else {})
        records = self._repair(self.directory / disk.journal_name(data["round"]), data["round"])
        return SavedRound(
            self.directory,
            data["round"],
            data["best_score"],
            data["model"],
            disk.results_of(records),
            data["finished"],
            strategy,
            path.name,
            frozenset(disk.names_of(data, records)),
        )

    def _repair(self, path: Path, round_number: int) -> list[dict[str, Any]]:
        """The whole records of the journal ``path``, which is cut back to them."""
        records = disk.read_records(path, self.directory)
        if records.damage is not None:
            aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
            aside.write_bytes(path.read_bytes()[records.whole_bytes :])
            log.warning(
                "%s; rolled back to the previous saved state, the %d records before it (round %d): the work "
                "committed after it is redone (the cut records are kept as %s)",
                records.damage,
                len(records.entries),
                round_number,
                aside.name,
            )
        elif records.torn:
            log.info("the last record of %s was cut short (the aggregator stopped while writing it): ignored", path)
        if records.damage is not None or records.torn:
            os.truncate(path, records.whole_bytes)
        return records.entries

    def _adopt(self, saved: SavedRound) -> None:
        self.close()
        self._snapshot = self.directory / saved.snapshot
        self._model_file = saved.model_file
        self._names, self._previous = set(saved.names), set()
        if not saved.finished:
            self._open_journal(saved.round_number)

    # -- writing ---------------------------------------------------------------

    def open_round(
        self,
        round_number: int,
        model: ModelState,
        best_score: float | None,
        status: dict[str, Any],
        strategy: StrategyState,
        finished: bool = False,
        links: Mapping[Path, bool] | None = None,
    ) -> None:
        """Commit the start of ``round_number`` with its global model and the strategy's state
        (or, ``finished``, the end); the files of the round before the previous one go.

        The model's bytes are written once, here. ``links`` maps each file to publish (the
        plan's ``last`` and ``best``) to True for this model, False for the model of the round
        this one follows (the open round's, before this call): each becomes a hard link to
        the saved file (a copy where links fail), in place before the snapshot commits."""
        model_file = f"model-{round_number:05d}.safetensors"
        self._save(model_file, model)
        tensors = None
        if strategy.tensors:
            tensors = f"strategy-{round_number:05d}.safetensors"
            self._save(tensors, strategy.tensors)
        sync_directory(self.directory)  # the files are on disk before the snapshot names them
        self._publish(model_file, links or {})
        data = {
            "format": disk.FORMAT,
            "plan_hash": self.plan_hash,
            "finished": finished,
            "round": round_number,
            "best_score": best_score,
            "model": model_file,
            "strategy": {"values": strategy.values, "tensors": tensors},
            "pid": os.getpid(),
            "saved_at": time.time(),
            "status": status,
        }
        try:
            body = json.dumps(data, indent=1, allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise AccordError(
                f"the strategy's snapshot cannot be saved: its values are not plain JSON ({exc})",
                "have the strategy's snapshot() return numbers, strings, lists and dicts in `values` "
                "(arrays go in `tensors`)",
            ) from None
        self.close()
        snapshot = self.directory / disk.snapshot_name(round_number)
        atomic_write(snapshot, body)
        if not finished:
            self._open_journal(round_number, fresh=True)
        sync_directory(self.directory)
        # only what the round before the previous one named goes: a result staged meanwhile for
        # the new round (named by no record yet) stays
        dropped = self._previous | self._names
        self._previous = self._names if self._snapshot is not None and self._snapshot != snapshot else set()
        self._snapshot = snapshot
        self._names = disk.names_of(data, [])
        self._model_file = model_file
        for name in dropped - self._previous - self._names:
            (self.directory / name).unlink(missing_ok=True)
        if self._space is not None:  # what the close computed and did not become a file here
            self._space.release()

    def _save(self, name: str, tensors: Mapping[str, np.ndarray]) -> None:
        """Write ``tensors`` to ``name``, flushed: the disk space's file that holds them renamed
        into place, or their bytes written once."""
        if self._space is None or not self._space.adopt(tensors, self.directory / name):
            save_state(self.directory / name, tensors, durable=True)

    def _publish(self, model_file: str, links: Mapping[Path, bool]) -> None:
        """Point each of ``links`` at the new ``model_file`` (True) or the open round's (False),
        flushed to disk (the snapshot, committed next, must not name a best it has not saved)."""
        for target, new in links.items():
            source = model_file if new or self._model_file is None else self._model_file
            link_or_copy(self.directory / source, target)
        for folder in {target.parent for target in links}:
            sync_directory(folder)

    def receiving(
        self, specs: Mapping[str, tuple[str, tuple[int, ...]]], what: str, checks: StreamedChecks | None = None
    ) -> StagedFile:
        """The file a result's tensors ``specs`` are written to as they arrive (aggregator/staging.py),
        measured by ``checks`` if given; ``what`` names the result in a log line. A busy
        RefusedError if it cannot be created."""
        return StagedFile(self.directory, specs, what, checks)

    def stage(self, result: TaskResult) -> str | None:
        """Commit a result's tensors to a file of their own (before the result is accepted): the
        file they were received into, or one written now for tensors held in memory.

        A full disk (or a file-size limit) is a retryable refusal: nothing was accepted, the
        aggregator serves on and the site sends it again.
        """
        tensors = result.tensors
        if not tensors:
            return None
        if isinstance(tensors, StagedFile) and tensors.directory == self.directory:
            return tensors.commit()
        what = f"the {result.task} result of {result.collaborator} for round {result.round_number}"
        return StagedFile.of(self.directory, tensors, what).commit()

    def view(self, staged: str | None) -> StateView | None:
        """A lazy, memory-mapped view of tensors that ``stage`` wrote (None for none)."""
        return None if staged is None else StateView(self.directory / staged)

    def discard(self, staged: str | None) -> None:
        """Remove the tensors of a result that was not accepted."""
        if staged is not None:
            (self.directory / staged).unlink(missing_ok=True)

    def add_result(self, result: TaskResult, staged: str | None) -> None:
        """Commit one accepted result of the open round, whose tensors ``stage`` wrote."""
        self._append(
            {
                "kind": "result",
                "collaborator": result.collaborator,
                "task": result.task,
                "sample_count": result.sample_count,
                "metrics": result.metrics,
                "is_delta": result.is_delta,
                "task_seconds": result.task_seconds,
                "tensors": staged,
                "update_digest": result.update_digest,
                "sender_serial": result.sender_serial,
                "at": time.time(),
            }
        )
        if staged is not None:
            self._names.add(staged)

    def add_failure(self, collaborator: str) -> None:
        """Record that ``collaborator``'s task failed at its site (for the status: not replayed)."""
        self._append({"kind": "failed", "collaborator": collaborator, "at": time.time()})

    def mark_resumed(self) -> None:
        """Record that this process took the open round up again (the status's pid and clock)."""
        self._append({"kind": "resumed", "pid": os.getpid(), "at": time.time()})

    def clear(self) -> None:
        """Forget any saved federation (a fresh start)."""
        self.close()
        legacy = [self.directory / disk.LEGACY_FILE, self.directory / "state.prev.json"]
        for path in [*legacy, *self._own_files(), *self._partial_files()]:
            path.unlink(missing_ok=True)
        self._snapshot, self._names, self._previous, self._model_file = None, set(), set(), None

    def close(self) -> None:
        """Close the open round's journal (what it holds stays)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _open_journal(self, round_number: int, fresh: bool = False) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | (os.O_TRUNC if fresh else 0)
        self._fd = os.open(self.directory / disk.journal_name(round_number), flags, 0o644)
        self._size = os.fstat(self._fd).st_size

    def _append(self, record: dict[str, Any]) -> None:
        """Append one record and flush it to disk; a failed append is cut back off."""
        assert self._fd is not None, "no open round to record in"
        line = (json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n").encode("utf-8")
        try:
            _write_durably(self._fd, line)
        except BaseException:
            with contextlib.suppress(OSError):  # else a restart cuts the torn record off
                os.ftruncate(self._fd, self._size)
            raise
        self._size += len(line)

    def _own_files(self) -> list[Path]:
        return [path for pattern in _OWN for path in self.directory.glob(pattern)]

    def _partial_files(self) -> list[Path]:
        """Temporary files of writes cut short (by a kill) in an earlier run."""
        prefixes = (".model-", ".result-", ".strategy-", ".snapshot-")
        return [p for p in self.directory.glob(".*.tmp") if p.name.startswith(prefixes)]

    def _remove_orphans(self) -> None:
        named = self._names | self._previous
        for path in self._own_files():
            if path.name not in named:
                path.unlink(missing_ok=True)


def _readable_names(snapshot: Path) -> set[str]:
    """The files a readable snapshot and its journal's whole records name (none if unreadable)."""
    try:
        data = disk.read_snapshot(snapshot)
        return disk.names_of(data, disk.read_records(snapshot.with_name(disk.journal_name(data["round"]))).entries)
    except AccordError:
        return set()


def _set_aside(path: Path) -> Path:
    aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
    os.replace(path, aside)
    return aside


def _write_durably(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` and flush it to disk."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.fsync(fd)
