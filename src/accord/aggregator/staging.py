"""A result's tensors written to their file in the journal's folder while they arrive.

The file's safetensors header is known before the first chunk (the global model's names,
dtypes and shapes, in its order), so the file is created with it and its whole size
reserved (``posix_fallocate``: a full disk is refused before any tensor is read, and a
write can never fail half-way for want of space on a file system that reserves), and each
chunk is written at its offset (``os.pwrite``: page cache, not the aggregator's memory),
and its writing to disk is started once a MiB has gathered (Linux's ``sync_file_range``, which
does not wait for it), so that the flush before the acknowledgement finds little left to write: a 100 MB
result's fsync took 0.05 s after the upload, 0.004 s with the writeback started as it arrived.
The file has a temporary name, ``.result-<uuid>.safetensors.<random>.tmp``, which the
journal's clean-up of cut-short writes removes; ``commit`` flushes it and its folder to
disk and renames it to ``result-<uuid>.safetensors``, which a journal record may then
name. A refused, cut or cancelled upload ``discard``s it.

Any OSError (no space, a file-size limit, an I/O error) is a retryable ``busy`` refusal:
nothing was accepted, the aggregator serves on and the site sends the result again.
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import sys
import tempfile
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from accord.aggregation.bounds import StreamedChecks
from accord.errors import RefusedError
from accord.messages import Measured
from accord.tensors.state import StateView, little_endian, safetensors_header, tensor_specs

log = logging.getLogger("accord.aggregator")

#: sync_file_range's flag: start writing the range's dirty pages, do not wait for them
_SYNC_FILE_RANGE_WRITE = 2
#: the writeback of written bytes is started once this many have gathered (a small result's go
#: with ``commit``'s fsync: one call per small tensor cost more than the flush it saved)
WRITEBACK_BYTES = 1 << 20
#: no bytes written since the last start
_NOTHING = (sys.maxsize, 0)


def _writeback_starter() -> Callable[[int, int, int, int], object] | None:
    """libc's ``sync_file_range(fd, offset, nbytes, flags)`` on Linux, else None (then the
    flush at ``commit`` writes everything, as it would anyway)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    function.restype = ctypes.c_int
    return function


_sync_file_range = _writeback_starter()


class _FileBuffer:
    def __init__(self, staged: StagedFile, name: str, dtype: np.dtype, start: int) -> None:
        self._staged = staged
        self._name, self._dtype, self._start = name, dtype, start

    def write(self, offset: int, data: bytes | memoryview) -> None:
        self._staged.write(self._start + offset, data)
        if self._staged.checks is not None:
            self._staged.checks.add(self._name, self._dtype, offset, data)


class StagedFile(StateView):
    """The file one result's tensors are received into (a tensor Destination); see the module docstring.

    ``what`` names the result in a log line ("the train result of site1 for round 3").
    ``checks``, when given, measures the tensors' change norms and finiteness beside each write
    (aggregation/bounds.py StreamedChecks: the checks then need not read the file again).
    Once committed it reads as a StateView of the saved file.
    """

    def __init__(
        self, directory: Path, specs: Mapping[str, tuple[str, tuple[int, ...]]], what: str, checks: StreamedChecks | None = None
    ) -> None:
        self.directory = directory
        self.checks = checks
        self.name = f"result-{uuid.uuid4().hex}.safetensors"
        self._what = what
        self._committed = False
        header, self._starts = safetensors_header(specs)
        self._specs = {name: (np.dtype(dtype), tuple(shape)) for name, (dtype, shape) in specs.items()}
        size = len(header) + sum(math.prod(shape) * dtype.itemsize for dtype, shape in self._specs.values())
        self._fd: int | None = None
        self._unstarted = _NOTHING  # the bytes written whose writeback has not been started: [low, high)
        try:
            fd, partial = tempfile.mkstemp(dir=directory, prefix=f".{self.name}.", suffix=".tmp")
        except OSError as exc:
            raise self._refusal(exc) from None
        self._fd, self.path = fd, Path(partial)
        try:
            try:
                os.posix_fallocate(fd, 0, size)
            except OSError as exc:
                raise self._refusal(exc) from None
            self.write(0, header)
            super().__init__(self.path)
        except BaseException:
            self.discard()
            raise

    @classmethod
    def of(cls, directory: Path, state: Mapping[str, np.ndarray], what: str) -> StagedFile:
        """A file holding ``state`` (tensors already in memory), not yet committed."""
        arrays = {name: little_endian(np.asarray(value)) for name, value in state.items()}
        staged = cls(directory, tensor_specs(arrays), what)
        try:
            for name, array in arrays.items():
                staged.write(staged._starts[name], array.reshape(-1).view(np.uint8).data)
        except BaseException:
            staged.discard()
            raise
        return staged

    # -- Destination ----------------------------------------------------------------------

    def allocate(self, name: str, dtype: np.dtype, shape: tuple[int, ...]) -> _FileBuffer:
        if self._specs.get(name) != (dtype, shape):
            # the assembler checked it against the same specs; a receiver without them cannot stage
            raise RefusedError(f"tensor {name!r} is not part of the model", kind="payload")
        return _FileBuffer(self, name, dtype, self._starts[name])

    def finish(self, names: list[str]) -> Mapping[str, np.ndarray]:
        """This file when every tensor arrived; else only those that did (the result is then refused)."""
        if len(names) == len(self._specs):
            return self
        return {name: self[name] for name in names}

    def measured(self) -> Measured | None:
        """What ``checks`` measured of the tensors written, once all are (None without checks, or if it stopped)."""
        return None if self.checks is None else self.checks.measured()

    # -- the file -----------------------------------------------------------------------------

    def write(self, at: int, data: bytes | memoryview) -> None:
        """Write ``data`` at byte ``at`` of the file; an OSError is a busy refusal."""
        if self._fd is None:
            raise RefusedError("the upload ended before its tensors were written", kind="state")
        view = memoryview(data).cast("B")
        start, size = at, view.nbytes
        try:
            while view:
                written = os.pwrite(self._fd, view, at)
                view, at = view[written:], at + written
        except OSError as exc:
            raise self._refusal(exc) from None
        if _sync_file_range is None or not size:
            return
        low, high = self._unstarted
        low, high = min(low, start), max(high, start + size)
        if high - low < WRITEBACK_BYTES:
            self._unstarted = (low, high)
            return
        # advisory (its failure changes nothing): ``commit``'s fsync is what makes the file durable
        _sync_file_range(self._fd, low, high - low, _SYNC_FILE_RANGE_WRITE)
        self._unstarted = _NOTHING

    def commit(self) -> str:
        """Flush the file and its folder to disk and give it its final name (returned)."""
        assert self._fd is not None, "committed twice or after discard"
        try:
            os.fchmod(self._fd, 0o644)
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
            final = self.directory / self.name
            os.replace(self.path, final)
            self.path = final
            self._committed = True
            sync_directory(self.directory)  # the name is on disk before a record names it
        except OSError as exc:
            self._committed = False  # nothing names it yet: removed under whichever name it has
            self.discard()
            raise self._refusal(exc) from None
        return self.name

    def discard(self) -> None:
        """Remove the file unless it was committed (then the journal owns it); idempotent."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if not self._committed:
            self.path.unlink(missing_ok=True)

    def _refusal(self, exc: OSError) -> RefusedError:
        reason = exc.strerror or type(exc).__name__  # the site is told this much: no local path
        log.error(
            "cannot save %s: %s; refused for now, the site will send it again (free space in %s)",
            self._what,
            f"{reason} ({exc.filename})" if exc.filename else reason,
            self.directory,
        )
        return RefusedError(
            f"the aggregator cannot save this result now ({reason})",
            "nothing to do at the site: it sends the result again; the aggregator's operator frees disk space",
            kind="busy",
        )


def sync_directory(directory: Path) -> None:
    """Flush a folder's entries (a file created or renamed in it) to disk."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
