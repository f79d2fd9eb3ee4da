"""A hash chain of JSON lines, sealed by signatures (docs/audit.md).

Each line is one entry, its canonical JSON (sorted keys, no spaces, ASCII): ``seq`` (0, 1,
...), ``kind``, the kind's fields, ``at`` (Unix time) and ``prev``, the SHA-256 (hex) of the
previous entry's canonical bytes (64 zeros for the first). A ``seal`` entry adds
``signature``: the signer's signature (base64) of the seal's canonical bytes without it.
The seal's ``prev`` chains every entry before it, so one signature covers the whole chain up
to the seal: entries are appended at O(1) cost each and a seal is signed at each round's
close and at stop, not per entry (bench/audit_signing.py measured why).

Appending is one ``write`` to a file opened with O_APPEND (in the kernel's page cache once it
returns, so a kill -9 loses nothing written); a seal is flushed to disk (fsync), by the caller
or, for a site's record of a sent result, on a thread while the site goes on. When a chain
is opened again, a last line cut short by a kill is cut off (it was never acknowledged) and the
chain goes on from the last whole entry. A writer holds an exclusive flock on its file while
it runs (a second one is refused, ChainInUse) and ends at a clean shutdown with a ``stop``
entry, sealed. A line is an entry only if it is exactly its entry's canonical bytes.
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from accord.errors import AccordError

log = logging.getLogger("accord.audit")

GENESIS = "0" * 64
SEAL = "seal"
#: the entry a writer appends (then seals) at a clean shutdown
STOP = "stop"
#: the thread that flushes the seals a writer does not wait for (``seal(wait=False)``)
_FLUSHER = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="accord-audit-flush")


class ChainInUse(AccordError):
    """Another process holds the chain open for writing (its file is locked)."""


def canonical(entry: dict[str, Any]) -> bytes:
    """The entry's canonical bytes: what is hashed, signed and written (without the newline)."""
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")


def entry_hash(entry: dict[str, Any]) -> str:
    """SHA-256 (hex) of the entry's canonical bytes: the next entry's ``prev``."""
    return hashlib.sha256(canonical(entry)).hexdigest()


def signed_bytes(seal: dict[str, Any]) -> bytes:
    """What a seal's signature signs: its canonical bytes without ``signature``."""
    return canonical({k: v for k, v in seal.items() if k != "signature"})


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data = dict(pairs)
    if len(data) != len(pairs):
        raise ValueError("a key appears twice")
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_line(line: bytes) -> dict[str, Any]:
    """The entry a line holds; ValueError unless it is a JSON object (no duplicate key, no NaN
    or Infinity) written exactly as its canonical bytes, so that the bytes hashed are the ones read."""
    try:
        data = json.loads(line, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("nested too deep") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    if canonical(data) != line:
        raise ValueError("not written as its canonical JSON (sorted keys, no spaces, ASCII)")
    return data


def read_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number from 1, bytes without the newline) of each line of ``path``."""
    with path.open("rb") as file:
        for number, line in enumerate(file, 1):
            yield number, line.rstrip(b"\n")


class ChainWriter:
    """Appends entries to the chain at ``path`` and seals it with ``sign`` (see the module).

    Not thread-safe: its owner calls it under its own lock.
    """

    def __init__(self, path: Path, sign: Callable[[bytes], bytes]) -> None:
        import fcntl

        self.path, self._sign = path, sign
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:  # held while this writer runs: a second writer would fork the chain
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise ChainInUse(
                f"audit log {path} is open in another process", "stop the other process that writes it, then start again"
            ) from None
        try:
            entries = self._cut_torn_tail()
        except BaseException:
            os.close(self._fd)
            raise
        #: the whole entries the file held when opened (a resumed chain's), until taken
        self._before: list[dict[str, Any]] | None = entries
        self.resumed = bool(entries)
        self._last: dict[str, Any] | None = entries[-1] if entries else None
        self.unsealed = False
        self._flushing: concurrent.futures.Future[None] | None = None

    def take_entries_before(self) -> list[dict[str, Any]]:
        """The entries the file held when opened, handed over once (then dropped: O(1) memory)."""
        entries, self._before = self._before or [], None
        return entries

    def _cut_torn_tail(self) -> list[dict[str, Any]]:
        """The whole entries already in the file (a last line cut short by a kill cut off)."""
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        whole = data.rfind(b"\n") + 1
        if whole < len(data):
            log.warning("%s: its last line was cut short (a kill mid-write) and is dropped; the chain goes on from the entry before", self.path)
            with self.path.open("r+b") as file:
                file.truncate(whole)
                os.fsync(file.fileno())
        entries = []
        for number, line in enumerate(data[:whole].splitlines(), 1):
            try:
                entry = parse_line(line)
                if not isinstance(entry.get("seq"), int) or isinstance(entry.get("seq"), bool):
                    raise ValueError("not an entry")
            except ValueError:
                raise AccordError(
                    f"audit log {self.path} line {number} is not an audit entry: the chain cannot go on from it",
                    f"run `fx audit verify` to see what is wrong, then move {self.path.name} aside to start a new chain",
                ) from None
            entries.append(entry)
        return entries

    def append(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Append one entry of ``kind`` with ``fields``; returns it."""
        last = self._last
        seq, prev = (0, GENESIS) if last is None else (last["seq"] + 1, entry_hash(last))
        entry = {**fields, "seq": seq, "kind": kind, "at": round(time.time(), 3), "prev": prev}
        if kind == SEAL:
            entry["signature"] = base64.b64encode(self._sign(signed_bytes(entry))).decode("ascii")
        line = canonical(entry) + b"\n"
        if os.write(self._fd, line) != len(line):
            raise OSError(f"short write to {self.path}")
        self._last = entry
        self.unsealed = kind != SEAL
        return entry

    def seal(self, wait: bool = True) -> None:
        """Sign the chain's head (a ``seal`` entry) and flush the file to disk; nothing if already sealed.

        ``wait=False`` flushes on a thread instead, so the caller goes on at once: the next seal,
        ``stop`` or ``close`` waits for that flush first (and raises its error)."""
        if not self.unsealed:
            return
        self._flushed()
        self.append(SEAL)
        if wait:
            os.fsync(self._fd)
        else:
            self._flushing = _FLUSHER.submit(os.fsync, self._fd)

    def _flushed(self) -> None:
        """Wait for a flush started by ``seal(wait=False)``; raises its error."""
        flushing, self._flushing = self._flushing, None
        if flushing is not None:
            flushing.result()

    def stop(self, **fields: Any) -> None:
        """A ``stop`` entry (a clean shutdown) with ``fields``, sealed."""
        self.append(STOP, **fields)
        self.seal()

    def close(self) -> None:
        """Close the file (and release its lock), once any flush under way ended."""
        try:
            self._flushed()
        finally:
            os.close(self._fd)
