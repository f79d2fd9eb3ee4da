"""Replies kept on disk until their round closes, as the aggregator keeps them (its staged
copies): one unlinked, append-only file per round, each tensor read back through a memory map
of its own pages made when it is asked for, so a round's memory is O(model) whatever its cohort."""

from __future__ import annotations

import mmap
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

_Place = tuple[int, np.dtype, tuple[int, ...]]
#: a reply's tensors as laid out in its round's file: name -> (offset from the reply's start, dtype, shape)
_Layout = dict[str, _Place]


class RoundSpool:
    """Appends each reply's tensors to its round's file; ``keep`` returns their lazy view."""

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = folder
        if folder is not None:
            Path(folder).mkdir(parents=True, exist_ok=True)
        self._round = -1
        self._file: _RoundFile | None = None

    def keep(self, round_number: int, tensors: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        """Write ``tensors`` to ``round_number``'s file (a new round starts a new one); their view.

        A round's file is dropped (its disk space freed) once nothing holds a view of it."""
        if round_number != self._round or self._file is None:
            self._file, self._round = _RoundFile(self.folder), round_number
        return self._file.append(tensors)


class _RoundFile:
    """One round's unlinked file: arrays appended, then read through one memory map."""

    def __init__(self, folder: str | Path | None) -> None:
        self._file = tempfile.TemporaryFile(prefix="accord-round-", dir=folder)  # noqa: SIM115 (unlinked at once; lives with the round)
        self._size = 0
        self._flushed = True
        self._layouts: dict[tuple[tuple[str, str, tuple[int, ...]], ...], _Layout] = {}

    def append(self, tensors: Mapping[str, np.ndarray]) -> SpooledState:
        """Write one reply's tensors back to back; their view. Replies of one layout (names,
        dtypes, shapes: every reply of a round, as a rule) share its one record, so what a
        reply holds in memory is its start offset, not a record per tensor."""
        arrays = {name: np.asarray(value, order="C") for name, value in tensors.items()}  # (ascontiguousarray makes a 0-d array 1-d)
        key = tuple((name, array.dtype.str, array.shape) for name, array in arrays.items())
        layout = self._layouts.get(key)
        if layout is None:
            layout, offset = {}, 0
            for name, array in arrays.items():
                layout[name] = (offset, array.dtype, array.shape)
                offset += array.nbytes
            layout = self._layouts.setdefault(key, layout)
        start = self._size
        for array in arrays.values():
            if array.nbytes:
                self._file.write(array.data.cast("B"))
                self._flushed = False
            self._size += array.nbytes
        return SpooledState(self, layout, start)

    def read(self, offset: int, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        """The array at ``offset``, mapped on its own: its pages are resident only while it is
        used (a slice of it maps in only the slice's pages)."""
        count = int(np.prod(shape, dtype=np.int64))
        if count == 0:
            return np.empty(shape, dtype)
        if not self._flushed:
            self._file.flush()
            self._flushed = True
        start = offset - offset % mmap.ALLOCATIONGRANULARITY
        mapped = mmap.mmap(self._file.fileno(), offset - start + count * dtype.itemsize, offset=start, access=mmap.ACCESS_READ)
        return np.frombuffer(mapped, dtype, count, offset - start).reshape(shape)


class SpooledState(Mapping[str, np.ndarray]):
    """One reply's tensors in its round's file, read (memory-mapped, read-only) when asked."""

    __slots__ = ("_file", "_layout", "_start")

    def __init__(self, file: _RoundFile, layout: _Layout, start: int) -> None:
        self._file = file
        self._layout = layout
        self._start = start

    def __getitem__(self, name: str) -> np.ndarray:
        offset, dtype, shape = self._layout[name]
        return self._file.read(self._start + offset, dtype, shape)

    def __iter__(self) -> Iterator[str]:
        return iter(self._layout)

    def __len__(self) -> int:
        return len(self._layout)
