"""The sending side of the plan's compression pipeline: a state made into encoded chunks.

``UpdateEncoder`` is a site's: it encodes each float tensor of an update as its change from
the round's global model (trained - global, or the delta itself), selects the top-k changes,
quantizes with stochastic rounding, and keeps the error-feedback residual (what top-k, and
with ``quantization_feedback`` the rounding, left out) for the next round, in memory.
``lossless`` makes a whole model zstd chunks (downloads). Either gives an ``Encoded``, whose
chunks are the same bytes each time they are made (a retried upload sends what the first
try did; the residual moved once). Layouts: tensors/encodings.py.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from accord.errors import AccordError
from accord.tensors.codec import iter_tensor_chunks
from accord.tensors.encodings import (
    LEVELS,
    MAX_SPAN,
    RAW,
    Encoding,
    dequantize,
    from_bf16,
    pack_chunk,
    pack_values,
    sparse_inner,
    to_bf16,
)
from accord.tensors.state import little_endian

if TYPE_CHECKING:  # the plan's settings are only read here: the codec needs no pydantic
    from accord.plan.compression import CompressionSettings

#: (name, dtype, shape, byte offset, encoding, data): one chunk of one tensor
EncodedChunk = tuple[str, str, tuple[int, ...], int, str, bytes | memoryview]
#: fp16's largest finite value: a larger change saturates there
FP16_MAX = 65504.0


@dataclass(frozen=True)
class _Tensor:
    """One tensor made ready to cut: its codes (per element, or per top-k entry at ``indices``)."""

    name: str
    array: np.ndarray  # the tensor as it is (sent as is when ``encoding`` is raw)
    encoding: Encoding
    codes: np.ndarray
    indices: np.ndarray | None = None
    low: float = 0.0
    step: float = 0.0


class Encoded:
    """A state's tensors, encoded; ``chunks`` cuts them into chunks of at most ``chunk_bytes``."""

    def __init__(self, tensors: list[_Tensor], zstd_level: int) -> None:
        self._tensors = tensors
        self._level = zstd_level

    def chunks(self, chunk_bytes: int) -> Iterator[EncodedChunk]:
        for tensor in self._tensors:
            if tensor.encoding.name == RAW:
                for name, dtype, shape, offset, data in iter_tensor_chunks({tensor.name: tensor.array}, chunk_bytes):
                    yield name, dtype, shape, offset, RAW, data
            else:
                yield from self._cut(tensor, chunk_bytes)

    def _cut(self, tensor: _Tensor, chunk_bytes: int) -> Iterator[EncodedChunk]:
        encoding, array = tensor.encoding, tensor.array
        head = (tensor.name, array.dtype.name, tuple(int(d) for d in array.shape))
        most = encoding.per_chunk(chunk_bytes, array.itemsize)
        if tensor.indices is None:
            for start in range(0, array.size, most):
                codes = tensor.codes[start : start + most]
                inner = pack_values(encoding.values, codes, tensor.low, tensor.step)
                yield *head, start * array.itemsize, encoding.name, pack_chunk(encoding, codes.size, inner, self._level)
            return
        indices = tensor.indices
        starts = sorted({0, *(int(i) for i in indices[most::most]), *range(0, array.size, MAX_SPAN)})
        for start, end in zip(starts, [*starts[1:], array.size]):
            first, last = np.searchsorted(indices, [start, end])
            values = pack_values(encoding.values, tensor.codes[first:last], tensor.low, tensor.step)
            inner = sparse_inner(indices[first:last] - start, values)
            yield *head, start * array.itemsize, encoding.name, pack_chunk(encoding, end - start, inner, self._level)


def lossless(state: Mapping[str, np.ndarray], settings: CompressionSettings) -> Encoded:
    """``state`` in the plan's download encoding (zstd, or raw)."""
    encoding = Encoding.parse(settings.download_encoding)
    tensors = []
    for name, value in state.items():
        array = little_endian(np.asarray(value))
        chosen = encoding if array.size else Encoding.parse(RAW)
        tensors.append(_Tensor(name, array, chosen, array.reshape(-1)))
    return Encoded(tensors, settings.zstd_level)


class UpdateEncoder:
    """A site's upload encoder: the plan's ``settings`` and the residuals it keeps across rounds.

    The residuals live as long as this object (the collaborator process): a restarted site
    starts with none, dropping what top-k had not sent yet. ``seed`` fixes the stochastic
    rounding (tests); by default it is drawn from the operating system.
    """

    def __init__(self, settings: CompressionSettings, seed: int | None = None) -> None:
        self.settings = settings
        self._lossy = Encoding.parse(settings.upload_encoding)
        self._lossless = Encoding.parse(settings.upload_lossless)
        self._residuals: dict[str, np.ndarray] = {}
        self._rng = np.random.default_rng(seed)

    @property
    def residuals(self) -> Mapping[str, np.ndarray]:
        """The error-feedback residual of each tensor (what is still owed to the aggregator)."""
        return self._residuals

    def encode(self, tensors: Mapping[str, np.ndarray], global_model: Mapping[str, np.ndarray], is_delta: bool) -> Encoded:
        """``tensors`` (trained weights, or deltas when ``is_delta``) encoded for the wire; float
        tensors relative to ``global_model``. AccordError if a change is not finite."""
        prepared = []
        for name, value in tensors.items():
            array = little_endian(np.asarray(value))
            if array.dtype.kind == "f" and array.size and self._lossy.lossy:
                prepared.append(self._lossy_tensor(name, array, global_model, is_delta))
            else:
                encoding = self._lossless if array.size else Encoding.parse(RAW)
                prepared.append(_Tensor(name, array, encoding, array.reshape(-1)))
        return Encoded(prepared, self.settings.zstd_level)

    def _lossy_tensor(self, name: str, array: np.ndarray, global_model: Mapping[str, np.ndarray], is_delta: bool) -> _Tensor:
        work = np.float64 if array.dtype == np.float64 else np.float32
        change: npt.NDArray[np.floating[Any]] = array.reshape(-1).astype(work)
        if not is_delta:
            if name not in global_model:
                raise AccordError(f"tensor {name!r} of the update is not in the round's global model")
            base: npt.NDArray[np.floating[Any]] = np.asarray(global_model[name]).reshape(-1).astype(work)
            change = change - base
        residual = self._residuals.pop(name, None)
        if residual is not None and residual.shape == change.shape:
            change = change + residual
        if not np.isfinite(change).all():
            raise AccordError(
                f"the update of tensor {name!r} holds values that are not finite (NaN or Inf)",
                "lower the learning rate or check the training data: the update cannot be encoded",
            )
        encoding, settings = self._lossy, self.settings
        indices = None
        values = change
        if encoding.sparse:
            k = min(change.size, max(1, math.ceil(settings.topk_ratio * change.size)))
            indices = np.sort(np.argpartition(np.abs(change), change.size - k)[change.size - k :])
            values = change[indices]
        codes, low, step, decoded = self._values(values, array.dtype)
        sent = decoded if settings.quantization_feedback else values
        if (encoding.sparse and settings.error_feedback) or (settings.quantization_feedback and encoding.values):
            left: npt.NDArray[np.floating[Any]] = change.copy()
            if indices is None:
                left -= sent
            else:
                left[indices] -= sent
            self._residuals[name] = left
        return _Tensor(name, array, encoding, codes, indices, low, step)

    def _values(self, values: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, float, float, np.ndarray]:
        """The codes of ``values`` in the value stage, its scale (low, step) and what they decode to."""
        kind = self._lossy.values
        if kind == "":
            codes = values.astype(dtype.newbyteorder("<"))
            return codes, 0.0, 0.0, codes.astype(values.dtype)
        if kind == "fp16":
            codes = np.clip(values, -FP16_MAX, FP16_MAX).astype("<f2")
            return codes, 0.0, 0.0, codes.astype(values.dtype)
        if kind == "bf16":
            codes = to_bf16(values)
            return codes, 0.0, 0.0, from_bf16(codes).astype(values.dtype)
        levels = LEVELS[kind]
        low = np.float32(values.min())
        step = np.float32((float(values.max()) - float(low)) / levels)
        if not np.isfinite(step):
            raise AccordError("an update's range does not fit float32: it cannot be quantized")
        if step > 0:
            scaled = (values.astype(np.float32) - low) / step
            codes = np.clip(np.floor(scaled + self._rng.random(scaled.shape, dtype=np.float32)), 0, levels).astype(np.uint8)
        else:
            codes = np.zeros(values.shape, dtype=np.uint8)
        return codes, float(low), float(step), dequantize(codes, low, step).astype(values.dtype)
