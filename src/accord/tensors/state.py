"""ModelState: an ordered mapping of tensor name to NumPy array, saved as safetensors."""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Collection, Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np

from accord.errors import AccordError, RefusedError
from accord.files import atomic_path

ModelState = dict[str, np.ndarray]

#: dtypes a tensor may have on disk or on the wire; nothing else is accepted.
ALLOWED_DTYPES: frozenset[str] = frozenset(
    {"float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool"}
)


#: safetensors' dtype codes for the dtypes Accord moves.
_SAFETENSORS_DTYPES = {
    "float16": "F16", "float32": "F32", "float64": "F64", "int8": "I8", "int16": "I16",
    "int32": "I32", "int64": "I64", "uint8": "U8", "bool": "BOOL",
}


def little_endian(array: np.ndarray) -> np.ndarray:
    """``array`` as a C-contiguous little-endian array (no copy when it already is one)."""
    order = array.dtype.byteorder
    if order == ">" or (order == "=" and sys.byteorder == "big"):
        array = array.astype(array.dtype.newbyteorder("<"))
    return array if array.flags.c_contiguous else array.copy(order="C")


def save_state(path: str | os.PathLike, state: Mapping[str, np.ndarray], durable: bool = False) -> Path:
    """Write ``state`` to ``path`` as safetensors, atomically (temp file + rename).

    Arrays are streamed from their own buffers (safetensors' NumPy writer would first copy
    each into a bytes object, doubling the peak memory of saving a large model).
    ``durable`` also flushes the file to disk before it replaces ``path``.
    """
    target = Path(path)
    arrays = {name: little_endian(np.asarray(value)) for name, value in state.items()}
    encoded, _ = safetensors_header(tensor_specs(arrays))
    with atomic_path(target) as partial, partial.open("wb") as handle:
        handle.write(encoded)
        for array in arrays.values():
            if array.nbytes:
                handle.write(array.reshape(-1).view(np.uint8).data)
        if durable:
            handle.flush()
            os.fsync(handle.fileno())
    return target


def safetensors_header(specs: Mapping[str, tuple[str, tuple[int, ...]]]) -> tuple[bytes, dict[str, int]]:
    """The start of a safetensors file holding tensors ``specs`` (name -> (dtype, shape)) in
    their order: its 8-byte length and header; and each tensor's offset in the file."""
    header: dict[str, object] = {}
    starts: dict[str, int] = {}
    offset = 0
    for name, (dtype, shape) in specs.items():
        if dtype not in _SAFETENSORS_DTYPES:
            raise AccordError(f"tensor {name!r} has dtype {dtype}, which cannot be saved")
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        header[name] = {"dtype": _SAFETENSORS_DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        starts[name] = offset
        offset += nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)
    start = 8 + len(encoded)
    return len(encoded).to_bytes(8, "little") + encoded, {name: start + at for name, at in starts.items()}


def load_state(path: str | os.PathLike) -> ModelState:
    """Read a safetensors file into a ModelState, in the file's tensor order."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    source = Path(path)
    if not source.is_file():
        raise AccordError(
            f"model file {source} does not exist",
            "run `fx plan initialize` to write the initial model",
        )
    try:
        return dict(load_file(str(source)))
    except (SafetensorError, OSError, ValueError) as exc:
        raise AccordError(f"model file {source} is not a readable safetensors file: {exc}") from exc


_NUMPY_DTYPES = {code: name for name, code in _SAFETENSORS_DTYPES.items()}


class StateView(Mapping[str, np.ndarray]):
    """A read-only, lazy view of a safetensors file that ``save_state`` wrote.

    Only the header is read here. Each lookup reads a small tensor (under ``MAPPED_BYTES``)
    into memory and maps a larger one from the file (``np.memmap``), so holding views of
    many large files costs page cache, not memory; a mapping is released when the array it
    returned is dropped.
    """

    #: tensors from this size on are memory-mapped, smaller ones read (a mapping costs ~0.2 ms)
    MAPPED_BYTES = 4 << 20

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        with self.path.open("rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(size))
        header.pop("__metadata__", None)
        self._start = 8 + size
        self._entries = {
            name: (
                np.dtype(_NUMPY_DTYPES[e["dtype"]]).newbyteorder("<"),
                tuple(e["shape"]),
                int(e["data_offsets"][0]),
                int(e["data_offsets"][1]) - int(e["data_offsets"][0]),
            )
            for name, e in header.items()
        }

    def __getitem__(self, name: str) -> np.ndarray:
        dtype, shape, offset, size = self._entries[name]
        if size >= self.MAPPED_BYTES:
            return self.mapped(name)
        with self.path.open("rb") as handle:
            handle.seek(self._start + offset)
            return np.frombuffer(handle.read(size), dtype).reshape(shape)

    def mapped(self, name: str) -> np.ndarray:
        """Tensor ``name`` fetched once for a reader that indexes it many times (each lookup by
        name reads a small tensor again): mapped from the file, or read whole if it is smaller
        than ``MAPPED_BYTES`` (reading it costs less than mapping it, and little memory)."""
        dtype, shape, offset, size = self._entries[name]
        if size == 0:
            return np.empty(shape, dtype)
        if size < self.MAPPED_BYTES:
            return self[name]
        return np.memmap(str(self.path), dtype=dtype, mode="r", offset=self._start + offset, shape=shape)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


def name_mismatch(expected: Iterable[str], got: Iterable[str]) -> str:
    """``"; missing [...]; unexpected [...]"`` (five names each at most), or ``""`` when the names agree."""
    expected, got = list(expected), list(got)
    expected_set, got_set = set(expected), set(got)
    missing = [name for name in expected if name not in got_set]
    extra = [name for name in got if name not in expected_set]
    return (f"; missing {missing[:5]}" if missing else "") + (f"; unexpected {extra[:5]}" if extra else "")


def check_update(
    template: Mapping[str, np.ndarray], update: Mapping[str, np.ndarray], origin: str, non_finite: Collection[str] | None = None
) -> None:
    """Refuse an update whose names, shapes or dtypes differ from ``template``, or that holds NaN/Inf;
    ``non_finite``, when given, names the tensors that do (measured as they arrived), and no
    tensor is read for it."""
    mismatch = name_mismatch(template, update)
    if mismatch:
        raise RefusedError(f"update from {origin} has the wrong tensors" + mismatch)
    for name, expected in template.items():
        got = update[name]
        if got.shape != expected.shape:
            raise RefusedError(
                f"update from {origin}: tensor {name!r} has shape {got.shape}, expected {expected.shape}"
            )
        if got.dtype != expected.dtype:
            raise RefusedError(
                f"update from {origin}: tensor {name!r} has dtype {got.dtype}, expected {expected.dtype}"
            )
        if got.dtype.kind == "f" and (name in non_finite if non_finite is not None else not all_finite(got)):
            raise RefusedError(f"update from {origin}: tensor {name!r} holds NaN or Inf values")


#: elements checked at a time: the check's temporaries stay ~1 MB whatever the tensor size
_FINITE_BLOCK = 1 << 20


def all_finite(array: np.ndarray) -> bool:
    """Whether every value of ``array`` is finite, checked one block at a time (a memory-mapped
    tensor larger than RAM is read through, never copied)."""
    values = np.asarray(array).reshape(-1)
    return all(bool(np.isfinite(values[at : at + _FINITE_BLOCK]).all()) for at in range(0, values.size, _FINITE_BLOCK))


def tensor_specs(state: Mapping[str, np.ndarray]) -> dict[str, tuple[str, tuple[int, ...]]]:
    """name -> (dtype name, shape) of each tensor of ``state``: what a stream of it must declare."""
    return {name: (np.asarray(t).dtype.name, tuple(np.shape(t))) for name, t in state.items()}
