"""The aggregator's saved state: enough to resume the open round after a crash or kill -9.

``WS/save/state/`` holds ``state.json`` (round, best score, the results received in the
open round, in order) beside the round's global model and the tensors of each result,
as safetensors. Every file is written whole and flushed before ``state.json`` is
atomically replaced to name it, so ``state.json`` is the commit point: what it names is
complete, what it does not name is an orphan removed on the next start. Nothing here is
ever unpickled: JSON and safetensors only.

The previous committed state stays beside it as ``state.prev.json`` (a commit writes the
new state to a temporary file, renames the old ``state.json`` to ``state.prev.json``, then
renames the new one into place: no copy), with every file it names, until the next commit
succeeds. If ``state.json`` is damaged (unreadable, malformed, or naming a missing file or
one that is not whole: a safetensors file whose size is not the one its header implies),
``load`` rolls back to ``state.prev.json`` with a warning naming both files, keeping every
earlier round; the damaged file is kept aside as ``state.json.damaged-<time>``. If it is
missing beside a ``state.prev.json`` (a commit cut short between its renames), the previous
state is the committed one and is resumed.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accord.errors import AccordError
from accord.files import atomic_path, atomic_write
from accord.messages import TaskResult
from accord.strategies.seam import StrategyState
from accord.tensors.state import ModelState, StateView, load_state, save_state

STATE_FILE = "state.json"
PREVIOUS_FILE = "state.prev.json"
FORMAT = 1
FRESH_FIX = "start over with `fx aggregator start --fresh` (the rounds run so far are discarded)"

log = logging.getLogger("accord.aggregator")


@dataclass(frozen=True)
class SavedRound:
    """What state.json says: the open round, or (``finished``) the end of the federation."""

    directory: Path
    round_number: int
    best_score: float | None
    model_file: str
    results: tuple[dict[str, Any], ...]
    finished: bool = False
    #: the strategy's state at the round's start (None: not saved)
    strategy: StrategyState | None = None

    def model(self) -> ModelState:
        return _load(self.directory / self.model_file)

    def received(self) -> Iterator[TaskResult]:
        """The results of the open round in the order they were accepted, tensors loaded one by one."""
        for entry in self.results:
            tensors = _load(self.directory / entry["tensors"]) if entry["tensors"] else None
            yield TaskResult(
                collaborator=entry["collaborator"],
                round_number=self.round_number,
                task=entry["task"],
                sample_count=entry["sample_count"],
                metrics=dict(entry["metrics"]),
                tensors=tensors,
                is_delta=entry["is_delta"],
                task_seconds=entry["task_seconds"],
            )


class Checkpoint:
    """Reads and commits ``state.json`` and the files it names, in ``directory``."""

    def __init__(self, directory: Path, plan_hash: str) -> None:
        self.directory = directory
        self.plan_hash = plan_hash
        self._round = -1
        self._best: float | None = None
        self._model_file = ""
        self._results: list[dict[str, Any]] = []
        #: files named by state.json, and by the previous committed state (state.prev.json),
        #: which are kept until the next commit
        self._committed: set[str] = set()
        self._previous: set[str] = set()

    @property
    def path(self) -> Path:
        return self.directory / STATE_FILE

    @property
    def previous_path(self) -> Path:
        return self.directory / PREVIOUS_FILE

    def load(self) -> SavedRound | None:
        """The federation saved here (unfinished, or finished), or None when there is none.

        A damaged state.json rolls back to the previous committed state, if it is whole.
        """
        try:
            saved = self._read(self.path)
        except AccordError as damage:
            saved = self._restore_previous(damage)
        if saved is None and self.previous_path.is_file():
            saved = self._restore_previous(None)
        if saved is None:
            return None
        self._round, self._best, self._model_file = saved.round_number, saved.best_score, saved.model_file
        self._results = list(saved.results)
        self._committed = _names(saved.model_file, saved.results)
        self._previous = self._named_by(self.previous_path)
        self._remove_orphans()
        for partial in self._partial_files():
            partial.unlink(missing_ok=True)
        return saved

    def _restore_previous(self, damage: AccordError | None) -> SavedRound:
        """The previous committed state, made current again (a copy: the two never share a
        file); ``damage`` says why state.json cannot be used (None: it is missing)."""
        try:
            saved = self._read(self.previous_path)
        except AccordError as also:
            if damage is None:
                raise
            raise AccordError(f"{damage.message}; the previous state cannot be used either: {also.message}", FRESH_FIX) from None
        if saved is None:
            assert damage is not None
            raise damage
        if damage is None:
            log.info("%s is missing (a save was cut short): resuming from %s", self.path, self.previous_path)
        else:
            aside = self.directory / f"{STATE_FILE}.damaged-{time.strftime('%Y%m%dT%H%M%S')}"
            os.replace(self.path, aside)
            log.warning(
                "%s; rolled back to the previous saved state %s (round %d, %d results): the work committed "
                "after it is redone (the damaged file is kept as %s)",
                damage.message,
                self.previous_path,
                saved.round_number,
                len(saved.results),
                aside.name,
            )
        atomic_write(self.path, self.previous_path.read_bytes())
        return saved

    def _read(self, path: Path) -> SavedRound | None:
        """The state saved in ``path`` (None if absent), refused if damaged or of another plan."""
        data = read_state(path)
        if data is None:
            return None
        if data.get("plan_hash") != self.plan_hash:
            raise AccordError(
                f"{self.path} is the state of a federation with another plan "
                f"(hash {str(data.get('plan_hash'))[:16]}..., this plan's is {self.plan_hash[:16]}...)",
                f"restore that plan to resume it, or {FRESH_FIX}",
            )
        try:
            saved = SavedRound(
                self.directory,
                int(data["round"]),
                None if data["best_score"] is None else float(data["best_score"]),
                _file_name(data["model"]),
                tuple(_result_entry(entry) for entry in data["results"]),
                bool(data["finished"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise AccordError(f"{path} is damaged: {exc!r}", FRESH_FIX) from None
        missing = [name for name in _names(saved.model_file, saved.results) if not (self.directory / name).is_file()]
        if missing:
            raise AccordError(f"{path} is damaged: it names {missing[:3]}, which are missing", FRESH_FIX)
        for name in sorted(_names(saved.model_file, saved.results)):
            damage = _not_whole(self.directory / name)
            if damage is not None:
                raise AccordError(f"{path} is damaged: the file it names {name} {damage}", FRESH_FIX)
        return saved

    def _named_by(self, path: Path) -> set[str]:
        """The files a readable state file names (none if it is absent or unreadable)."""
        try:
            saved = self._read(path)
        except AccordError:
            return set()
        return set() if saved is None else _names(saved.model_file, saved.results)

    def open_round(
        self, round_number: int, model: ModelState, best_score: float | None, status: dict[str, Any], finished: bool = False
    ) -> None:
        """Commit the start of ``round_number`` with its global model (or, ``finished``, the end)."""
        model_file = f"model-{round_number:05d}.safetensors"
        save_state(self.directory / model_file, model, durable=True)
        self._round, self._best, self._model_file, self._results = round_number, best_score, model_file, []
        self._commit(status, finished=finished)

    def stage(self, result: TaskResult) -> str | None:
        """Write a result's tensors to a file of their own (before the result is accepted)."""
        if not result.tensors:
            return None
        name = f"result-{uuid.uuid4().hex}.safetensors"
        save_state(self.directory / name, result.tensors, durable=True)
        return name

    def view(self, staged: str | None) -> StateView | None:
        """A lazy, memory-mapped view of tensors that ``stage`` wrote (None for none)."""
        return None if staged is None else StateView(self.directory / staged)

    def discard(self, staged: str | None) -> None:
        """Remove the tensors of a result that was not accepted."""
        if staged is not None:
            (self.directory / staged).unlink(missing_ok=True)

    def add_result(self, result: TaskResult, staged: str | None, status: dict[str, Any]) -> None:
        """Commit one accepted result of the open round, whose tensors ``stage`` wrote."""
        entry = {
            "collaborator": result.collaborator,
            "task": result.task,
            "sample_count": result.sample_count,
            "metrics": result.metrics,
            "is_delta": result.is_delta,
            "task_seconds": result.task_seconds,
            "tensors": staged,
        }
        self._commit(status, finished=False, results=[*self._results, entry])

    def clear(self) -> None:
        """Forget any saved federation (a fresh start)."""
        for path in [self.path, self.previous_path, *self._own_files(), *self._partial_files()]:
            path.unlink(missing_ok=True)
        self._committed, self._previous = set(), set()

    def _commit(self, status: dict[str, Any], finished: bool, results: list[dict[str, Any]] | None = None) -> None:
        """Replace state.json; the new results list is kept only once it is on disk."""
        results = self._results if results is None else results
        data = {
            "format": FORMAT,
            "plan_hash": self.plan_hash,
            "finished": finished,
            "round": self._round,
            "best_score": self._best,
            "model": self._model_file,
            "results": results,
            "pid": os.getpid(),
            "updated_at": time.time(),
            "status": status,
        }
        with atomic_path(self.path) as partial:
            with partial.open("wb") as handle:
                handle.write(json.dumps(data, indent=1).encode("utf-8"))
                handle.flush()
                os.fsync(handle.fileno())
            if self._committed:  # the committed state becomes the previous one (a rename: no copy)
                os.replace(self.path, self.previous_path)
        self._results = results
        if self._committed:
            self._previous = self._committed
        self._committed = _names(self._model_file, results)
        if not self._results:  # a round opened or the federation finished: older files are done with
            self._remove_orphans()

    def _own_files(self) -> list[Path]:
        """The model and result files this class writes (nothing else in the folder is touched)."""
        return [*self.directory.glob("model-*.safetensors"), *self.directory.glob("result-*.safetensors")]

    def _partial_files(self) -> list[Path]:
        """Temporary files of writes cut short (by a kill) in an earlier run."""
        prefixes = (".model-", ".result-", f".{STATE_FILE}.", f".{PREVIOUS_FILE}.")
        return [p for p in self.directory.glob(".*.tmp") if p.name.startswith(prefixes)]

    def _remove_orphans(self) -> None:
        named = _names(self._model_file, self._results) | self._previous
        for path in self._own_files():
            if path.name not in named:
                path.unlink(missing_ok=True)


def _names(model_file: str, results: Any) -> set[str]:
    """The files a state names: its round's model and the tensors of its results."""
    return {model_file, *(r["tensors"] for r in results if r["tensors"])} - {""}


def _load(path: Path) -> ModelState:
    """A file the saved state names; its loss is the saved state's damage."""
    try:
        return load_state(path)
    except AccordError as exc:
        raise AccordError(f"the aggregator's saved state is damaged: {exc.message}", FRESH_FIX) from None


def _not_whole(path: Path) -> str | None:
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


def read_state(path: Path) -> dict[str, Any] | None:
    """state.json as a mapping, None if absent; a clear error if unreadable."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AccordError(f"{path} cannot be read: {exc}", FRESH_FIX) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise AccordError(f"{path} is not an Accord state file of format {FORMAT}", FRESH_FIX)
    return data


def _file_name(value: Any) -> str:
    """A plain file name inside the state directory (never a path elsewhere)."""
    if not isinstance(value, str) or not value or Path(value).name != value or value.startswith("."):
        raise ValueError(f"{value!r} is not a file name")
    return value


def _result_entry(entry: Any) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise ValueError("a result entry is not a mapping")
    tensors = entry["tensors"]
    return {
        "collaborator": str(entry["collaborator"]),
        "task": str(entry["task"]),
        "sample_count": int(entry["sample_count"]),
        "metrics": {str(k): float(v) for k, v in dict(entry["metrics"]).items()},
        "is_delta": bool(entry["is_delta"]),
        "task_seconds": float(entry["task_seconds"]),
        "tensors": None if tensors is None else _file_name(tensors),
    }
