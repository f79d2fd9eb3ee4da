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
        return SpooledState(self._file, {name: self._file.write(value) for name, value in tensors.items()})


class _RoundFile:
    """One round's unlinked file: arrays appended, then read through one memory map."""

    def __init__(self, folder: str | Path | None) -> None:
        self._file = tempfile.TemporaryFile(prefix="accord-round-", dir=folder)  # noqa: SIM115 (unlinked at once; lives with the round)
        self._size = 0
        self._flushed = True

    def write(self, value: np.ndarray) -> _Place:
        array = np.ascontiguousarray(value)
        place = (self._size, array.dtype, array.shape)
        if array.nbytes:
            self._file.write(array.data.cast("B"))
            self._flushed = False
        self._size += array.nbytes
        return place

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

    def __init__(self, file: _RoundFile, places: dict[str, _Place]) -> None:
        self._file = file
        self._places = places

    def __getitem__(self, name: str) -> np.ndarray:
        return self._file.read(*self._places[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self._places)

    def __len__(self) -> int:
        return len(self._places)
