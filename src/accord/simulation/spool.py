"""Replies kept on disk until their round closes, as the aggregator keeps them (its staged
copies): one unlinked, append-only file per round, read back through memory-mapped views, so
a round's memory is O(model) whatever its cohort (page cache, not the process's own memory)."""

from __future__ import annotations

import mmap
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from accord.tensors.state import ModelState

_Place = tuple[int, np.dtype, tuple[int, ...]]


class RoundSpool:
    """Appends each reply's tensors to its round's file; ``keep`` returns their lazy view."""

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = folder
        if folder is not None:
            Path(folder).mkdir(parents=True, exist_ok=True)
        self._round = -1
        self._file: _RoundFile | None = None

    def keep(self, round_number: int, tensors: ModelState) -> Mapping[str, np.ndarray]:
        """Write ``tensors`` to ``round_number``'s file (a new round starts a new one); their view.

        A round's file is dropped (its disk space freed) once nothing holds a view of it."""
        if round_number != self._round or self._file is None:
            self._file, self._round = _RoundFile(self.folder), round_number
        return SpooledState(self._file, {name: self._file.write(value) for name, value in tensors.items()})


class _RoundFile:
    """One round's unlinked file: arrays appended, then read through one memory map."""

    def __init__(self, folder: str | Path | None) -> None:
        self._file = tempfile.TemporaryFile(prefix="accord-round-", dir=folder)  # unlinked at once
        self._size = 0
        self._map: mmap.mmap | None = None

    def write(self, value: np.ndarray) -> _Place:
        array = np.ascontiguousarray(value)
        place = (self._size, array.dtype, array.shape)
        if array.nbytes:
            self._file.write(memoryview(array).cast("B"))
        self._size += array.nbytes
        return place

    def read(self, offset: int, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        count = int(np.prod(shape, dtype=np.int64))
        if count == 0:
            return np.empty(shape, dtype)
        if self._map is None or offset + count * dtype.itemsize > len(self._map):
            self._file.flush()
            self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        return np.frombuffer(self._map, dtype, count, offset).reshape(shape)


class SpooledState(Mapping[str, np.ndarray]):
    """One reply's tensors in its round's file, read (memory-mapped, read-only) when asked."""

    def __init__(self, file: _RoundFile, places: dict[str, _Place]) -> None:
        self._file = file
        self._places = places

    def __getitem__(self, name: str) -> np.ndarray:
        return self._file.read(*self._places[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self._places)

    def __len__(self) -> int:
        return len(self._places)
