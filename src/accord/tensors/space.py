"""Where a model that is being computed lives: in memory, or in a file mapped from disk.

An aggregation writes the next model (a mean, a server optimizer's step, its moments) one
block at a time into tensors it asks a :class:`TensorSpace` for. ``MEMORY`` gives plain arrays;
a :class:`DiskSpace` lays each new model out as a safetensors file in a folder (its whole size
reserved, the global model's names, dtypes and shapes in order) and gives writable memory maps
of its tensors: the model's pages are page cache, written back to the file, never the
process's anonymous memory, so a model larger than RAM can be computed. A finished file is
renamed into place (``adopt``) or copied from (``save_state`` reads the maps); ``release``
removes the rest. Its temporary names (``.model-<uuid>.safetensors.<n>.tmp``) are among those
the journal's clean-up of cut-short writes removes at the next start.
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import numpy as np

from accord.tensors.state import ModelState, safetensors_header

Specs = Mapping[str, tuple[str, tuple[int, ...]]]


class NewModel(Protocol):
    """One model being written: a writable tensor per name of its specs."""

    def tensor(self, name: str) -> np.ndarray:
        """Tensor ``name``, uninitialised, to be written (asked once per name)."""

    def state(self) -> ModelState:
        """The tensors asked for so far, by name, in the specs' order."""


class TensorSpace(Protocol):
    """Makes the models an aggregation writes."""

    def new_model(self, specs: Specs) -> NewModel:
        """A model laid out as ``specs`` (name -> (dtype, shape)), to be written."""


class _ArraysModel:
    def __init__(self, specs: Specs) -> None:
        self._specs = specs
        self._arrays: dict[str, np.ndarray] = {}

    def tensor(self, name: str) -> np.ndarray:
        dtype, shape = self._specs[name]
        array = self._arrays[name] = np.empty(shape, dtype)
        return array

    def state(self) -> ModelState:
        return {name: self._arrays[name] for name in self._specs if name in self._arrays}


class _Memory:
    """Plain arrays (the default: a model well within RAM)."""

    def new_model(self, specs: Specs) -> NewModel:
        return _ArraysModel(specs)


#: models computed in memory
MEMORY: TensorSpace = _Memory()


class FileModel:
    """A model being written into a safetensors file of its own (see the module docstring)."""

    def __init__(self, path: Path, specs: Specs) -> None:
        header, self._starts = safetensors_header(specs)
        self.path = path
        self._specs = {name: (np.dtype(dtype).newbyteorder("<"), tuple(shape)) for name, (dtype, shape) in specs.items()}
        size = len(header) + sum(math.prod(shape) * dtype.itemsize for dtype, shape in self._specs.values())
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.posix_fallocate(fd, 0, size)
            os.pwrite(fd, header, 0)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        self._fd: int | None = fd
        self._arrays: dict[str, np.ndarray] = {}

    def tensor(self, name: str) -> np.ndarray:
        dtype, shape = self._specs[name]
        if math.prod(shape) == 0:
            array = np.empty(shape, dtype)
        else:
            array = np.memmap(self.path, dtype=dtype, mode="r+", offset=self._starts[name], shape=shape)
        self._arrays[name] = array
        return array

    def state(self) -> ModelState:
        return {name: self._arrays[name] for name in self._specs if name in self._arrays}

    def holds(self, model: Mapping[str, np.ndarray]) -> bool:
        """Whether ``model`` is exactly this file's tensors, every one of them written."""
        return len(model) == len(self._specs) == len(self._arrays) and all(model.get(n) is a for n, a in self._arrays.items())

    def commit(self, target: Path) -> None:
        """Flush the file to disk and rename it to ``target`` (its maps stay valid)."""
        assert self._fd is not None, "committed twice"
        os.fsync(self._fd)  # the maps are shared: their written pages are the file's dirty pages
        os.close(self._fd)
        self._fd = None
        os.replace(self.path, target)
        self.path = target

    def remove(self) -> None:
        """Remove the file unless committed (its maps stay readable until dropped)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self.path.unlink(missing_ok=True)


class DiskSpace:
    """New models as files in ``directory`` (see the module docstring)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._made: list[FileModel] = []

    def new_model(self, specs: Specs) -> FileModel:
        made = FileModel(self.directory / f".model-{uuid.uuid4().hex}.safetensors.{len(self._made)}.tmp", specs)
        self._made.append(made)
        return made

    def adopt(self, model: Mapping[str, np.ndarray], target: Path) -> bool:
        """Rename the file that holds exactly ``model`` to ``target``, flushed; False if none does."""
        for made in self._made:
            if made.holds(model):
                made.commit(target)
                self._made.remove(made)
                return True
        return False

    def release(self) -> None:
        """Remove every file made so far and not adopted (their maps stay readable until dropped)."""
        for made in self._made:
            made.remove()
        self._made.clear()


def model_bytes(specs: Specs) -> int:
    """Bytes of a model's tensors ``specs``."""
    return sum(math.prod(shape) * np.dtype(dtype).itemsize for dtype, shape in specs.values())
