"""The byte layouts of encoded tensor chunks, and their bounded decoding into place.

An encoding names its stages joined by ``+`` in a fixed order (``topk+q8+zstd``); ``""`` is
raw little-endian bytes, which keeps the plain layout of tensors/codec.py. Any other chunk is,
little-endian throughout::

    count: u64                   elements the chunk covers, from element offset / itemsize
    body                         the inner payload, or a zstd frame of it (stage zstd)

    inner (dense):  values(count)
    inner (topk):   entries: u32, entries x index: u32 (strictly increasing, < count), values(entries)
    values(n):      raw:  n x the tensor's dtype      fp16: n x f16      bf16: n x u16 (bf16 bits)
                    q8:   low: f32, step: f32, n x u8            (value = low + code * step)
                    q4:   low: f32, step: f32, ceil(n/2) bytes   (element 2i in the low nibble;
                          an odd n leaves the last high nibble 0)

A lossy chunk carries a change: the receiver writes ``base + change`` (the round's global
model) or the change itself (a delta), and elements a top-k chunk leaves out are no change.
Decoding refuses (RefusedError, kind ``payload``) before writing: a size that does not match
its count exactly, indices out of range or repeated, a scale or value that is not finite, a
dense chunk (or a top-k chunk's entries) past what one chunk of the plan's ``chunk_bytes`` may
hold, and a zstd frame that would inflate past the most its count can need. A top-k chunk may
span many more elements than it holds: it is decoded in pieces of one chunk's elements.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from accord.errors import RefusedError
from accord.imports import optional_module

if TYPE_CHECKING:  # the plan's settings are only read here: the codec needs no pydantic
    from accord.plan.compression import CompressionSettings

RAW = ""
COUNT = struct.Struct("<Q")
ENTRIES = struct.Struct("<I")
SCALE = struct.Struct("<ff")
#: the levels above the lowest of each quantization
LEVELS = {"q8": 255, "q4": 15}
#: bytes each element's value takes, in halves of a byte (None: the tensor's own itemsize)
_HALF_BYTES = {"": None, "fp16": 4, "bf16": 4, "q8": 2, "q4": 1}
#: what a zstd frame may add to its input (ZSTD_compressBound, rounded up), beyond input / 256
_ZSTD_SLACK = 128
#: the most elements one top-k chunk may span (its indices are u32)
MAX_SPAN = 2**32 - 1
#: the largest chunk a plan may set (network.settings.chunk_bytes): a receiver's default bound
MAX_CHUNK_BYTES = 64 * 1024 * 1024


def _refuse(name: str, why: str) -> RefusedError:
    return RefusedError(f"tensor {name[:80]!r}: {why}", kind="payload")


@dataclass(frozen=True)
class Encoding:
    """One wire encoding, parsed: top-k or dense, its value stage ("" = the dtype's own), zstd or not."""

    name: str
    sparse: bool
    values: str
    zstd: bool

    @classmethod
    def parse(cls, name: str) -> Encoding:
        """The encoding ``name`` names; ValueError unless its stages are known and in order."""
        stages = name.split("+") if name else []
        values = [s for s in stages if s in LEVELS or s in ("fp16", "bf16")]
        order = ["topk", *values, "zstd"]
        if len(values) > 1 or [s for s in order if s in stages] != stages:
            raise ValueError(f"encoding {name[:40]!r} is not stages of topk, fp16|bf16|q8|q4, zstd in that order")
        return cls(name, "topk" in stages, values[0] if values else "", "zstd" in stages)

    @property
    def lossy(self) -> bool:
        return self.sparse or bool(self.values)

    @property
    def quantized(self) -> bool:
        return self.values in LEVELS

    def values_bytes(self, n: int, itemsize: int) -> int:
        """Bytes that ``values(n)`` takes."""
        half = _HALF_BYTES[self.values] or 2 * itemsize
        return (n * half + 1) // 2 + (SCALE.size if self.quantized else 0)

    def inner_bytes(self, count: int, entries: int, itemsize: int) -> int:
        """Bytes of the inner payload of a chunk of ``count`` elements (``entries`` of them for top-k)."""
        if not self.sparse:
            return self.values_bytes(count, itemsize)
        return ENTRIES.size + 4 * entries + self.values_bytes(entries, itemsize)

    def per_chunk(self, chunk_bytes: int, itemsize: int) -> int:
        """The most elements (dense) or entries (top-k) one chunk of at most ``chunk_bytes`` may hold."""
        room = chunk_bytes - COUNT.size
        if self.zstd:
            room = (room - _ZSTD_SLACK) * 256 // 257
        room -= (ENTRIES.size if self.sparse else 0) + (SCALE.size if self.quantized else 0)
        half = (_HALF_BYTES[self.values] or 2 * itemsize) + (8 if self.sparse else 0)
        most = (2 * room) // half
        if most < 1:
            raise ValueError(f"chunk_bytes {chunk_bytes} is too small for encoding {self.name!r}")
        return most


# -- values ----------------------------------------------------------------------------


def to_bf16(values: np.ndarray) -> np.ndarray:
    """float32 values as bf16 bits (u16), rounded to nearest even; saturated at bf16's largest finite."""
    big = np.float32(3.3895314e38)
    bits = np.clip(values.astype(np.float32), -big, big).view(np.uint32)
    return ((bits + np.uint32(0x7FFF) + ((bits >> 16) & 1)) >> 16).astype("<u2")


def from_bf16(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def dequantize(codes: np.ndarray, low: np.float32, step: np.float32) -> np.ndarray:
    """``low + code * step`` in float32: the site computes exactly what the receiver will."""
    with np.errstate(over="ignore"):  # a hostile scale overflows to inf: refused by the caller
        return low + codes.astype(np.float32) * step


def pack_values(kind: str, codes: np.ndarray, low: float = 0.0, step: float = 0.0) -> bytes:
    """``values(n)`` of already encoded ``codes`` (the dtype's, f16, bf16 bits or quantization codes)."""
    if kind not in LEVELS:
        return codes.tobytes()
    head = SCALE.pack(low, step)
    if kind == "q8":
        return head + codes.astype(np.uint8).tobytes()
    pairs = np.zeros((codes.size + 1) // 2 * 2, dtype=np.uint8)
    pairs[: codes.size] = codes
    return head + (pairs[0::2] | (pairs[1::2] << 4)).tobytes()


def _values(kind: str, body: memoryview, n: int, dtype: np.dtype, name: str) -> np.ndarray:
    """``values(n)`` read from ``body`` (exactly its size), as finite float values or the dtype's."""
    if kind == "":
        out = np.frombuffer(body, dtype=dtype.newbyteorder("<"), count=n)
    elif kind == "fp16":
        out = np.frombuffer(body, dtype="<f2", count=n).astype(np.float32)
    elif kind == "bf16":
        out = from_bf16(np.frombuffer(body, dtype="<u2", count=n))
    else:
        low, step = (np.float32(v) for v in SCALE.unpack_from(body))
        if not (np.isfinite(low) and np.isfinite(step) and step >= 0):
            raise _refuse(name, f"a {kind} chunk has scale low={low} step={step}; both must be finite, step >= 0")
        packed = np.frombuffer(body, dtype=np.uint8, offset=SCALE.size)
        if kind == "q8":
            codes = packed
        else:
            if n % 2 and packed[-1] >> 4:
                raise _refuse(name, "a q4 chunk of an odd count has a non-zero final nibble")
            codes = np.empty(packed.size * 2, dtype=np.uint8)
            codes[0::2], codes[1::2] = packed & 0x0F, packed >> 4
            codes = codes[:n]
        out = dequantize(codes, low, step)
    if out.dtype.kind == "f" and not np.isfinite(out).all():
        raise _refuse(name, "a chunk decodes to values that are not finite (NaN or Inf)")
    return out


# -- chunks ----------------------------------------------------------------------------


def chunk_count(data: bytes | memoryview, name: str) -> int:
    """The elements an encoded chunk covers (its first 8 bytes)."""
    if len(data) < COUNT.size:
        raise _refuse(name, f"an encoded chunk of {len(data)} bytes lacks its {COUNT.size}-byte count")
    (count,) = COUNT.unpack_from(data)
    if count == 0:
        raise _refuse(name, "an encoded chunk covers no element")
    return int(count)


def pack_chunk(encoding: Encoding, count: int, inner: bytes, zstd_level: int) -> bytes:
    """A chunk of ``count`` elements whose inner payload is ``inner``."""
    if encoding.zstd:
        inner = _zstandard().ZstdCompressor(level=zstd_level).compress(inner)
    return COUNT.pack(count) + inner


def sparse_inner(indices: np.ndarray, packed_values: bytes) -> bytes:
    """The inner payload of a top-k chunk: its entries, their indices (relative to the chunk), their values."""
    return ENTRIES.pack(indices.size) + indices.astype("<u4").tobytes() + packed_values


def decode_chunk(
    encoding: Encoding,
    data: bytes | memoryview,
    count: int,
    dtype: np.dtype,
    base: np.ndarray | None,
    most: int,
    name: str,
) -> Iterator[tuple[int, np.ndarray]]:
    """Decode one chunk of ``count`` elements of ``dtype``: (first element, decoded values) for each
    piece of at most ``most`` elements, ``base + change`` when ``base`` (the same elements of the
    global model) is given, else the change. ``most`` is what one chunk may hold
    (``Encoding.per_chunk``): a dense chunk, or a top-k chunk's entries, past it is refused, so
    decoding allocates per chunk, never per tensor (a top-k chunk may span far more elements)."""
    body = memoryview(data)[COUNT.size :]
    if not encoding.sparse:
        if count > most:
            raise _refuse(name, f"a chunk of {count} elements is more than the {most} one chunk may hold")
        if encoding.zstd:
            body = memoryview(_inflate(body, encoding.inner_bytes(count, 0, dtype.itemsize), name))
        _expect_size(name, len(body), encoding.inner_bytes(count, 0, dtype.itemsize))
        change = _values(encoding.values, body, count, dtype, name)
        out = np.empty(count, dtype=dtype)
        if base is None:
            out[...] = change
        else:
            np.add(base, change, out=out, casting="unsafe")
        yield 0, out
        return
    if encoding.zstd:
        body = memoryview(_inflate(body, encoding.inner_bytes(count, min(count, most), dtype.itemsize), name))
    if len(body) < ENTRIES.size:
        raise _refuse(name, "a top-k chunk lacks its entry count")
    (entries,) = ENTRIES.unpack_from(body)
    if entries > min(count, most):
        raise _refuse(name, f"a top-k chunk of {count} elements claims {entries} entries, more than the {min(count, most)} it may hold")
    _expect_size(name, len(body), encoding.inner_bytes(count, entries, dtype.itemsize))
    indices = np.frombuffer(body, dtype="<u4", count=entries, offset=ENTRIES.size)
    if entries and (int(indices[-1]) >= count or not bool((indices[1:] > indices[:-1]).all())):
        raise _refuse(name, f"a top-k chunk's indices are not increasing, distinct and below its count {count}")
    values = _values(encoding.values, body[ENTRIES.size + 4 * entries :], entries, dtype, name).astype(dtype)
    bounds = np.searchsorted(indices, np.arange(0, count + most, most).clip(max=count))
    for piece, start in enumerate(range(0, count, most)):
        n = min(most, count - start)
        out = np.zeros(n, dtype=dtype) if base is None else np.array(base[start : start + n], dtype=dtype)
        first, last = bounds[piece], bounds[piece + 1]
        out[indices[first:last] - start] += values[first:last]
        yield start, out


def _expect_size(name: str, got: int, want: int) -> None:
    if got != want:
        raise _refuse(name, f"an encoded chunk's payload has {got} bytes where its count needs {want}")


def _inflate(body: memoryview, most: int, name: str) -> bytes:
    """The zstd frame ``body`` decompressed, refused as soon as it passes ``most`` bytes (a bomb)."""
    zstandard = _zstandard()
    window = 1 << max(10, (most - 1).bit_length())  # no frame may ask for a window larger than its output
    try:
        reader = zstandard.ZstdDecompressor(max_window_size=min(window, 1 << 31)).stream_reader(body.tobytes())
        out = reader.read(most + 1)
        while len(out) <= most:
            more = reader.read(most + 1 - len(out))
            if not more:
                break
            out += more
    except zstandard.ZstdError as exc:
        raise _refuse(name, f"its zstd frame does not decompress within {most} bytes, the most its count can need: {str(exc)[:120]}") from None
    if len(out) > most:
        raise _refuse(name, f"its zstd frame inflates past {most} bytes, the most its count can need")
    return out


def _zstandard() -> Any:  # an optional module: untyped
    return optional_module("zstandard", "the plan's compression_pipeline (zstd)", "pip install 'accord[zstd]'")


@dataclass(frozen=True)
class Decoding:
    """What a receiver accepts: float tensors in ``lossy`` (their changes are added to ``base``, if
    given), every other tensor in ``lossless``; ``source`` names the plan key for a refusal;
    ``chunk_bytes`` is the plan's chunk size, which bounds what one encoded chunk may hold."""

    lossy: str
    lossless: str
    base: Mapping[str, np.ndarray] | None
    source: str
    chunk_bytes: int = MAX_CHUNK_BYTES

    @classmethod
    def upload(
        cls, settings: CompressionSettings, base: Mapping[str, np.ndarray] | None, chunk_bytes: int = MAX_CHUNK_BYTES
    ) -> Decoding:
        """An uploaded result's: ``base`` is the round's global model (None for a delta)."""
        return cls(settings.upload_encoding, settings.upload_lossless, base, "compression_pipeline.upload", chunk_bytes)

    @classmethod
    def download(cls, settings: CompressionSettings, chunk_bytes: int = MAX_CHUNK_BYTES) -> Decoding:
        """A downloaded model's: lossless only, every tensor alike."""
        encoding = settings.download_encoding
        return cls(encoding, encoding, None, "compression_pipeline.download", chunk_bytes)

    def expected(self, dtype: str, nbytes: int) -> str:
        """The encoding a tensor of ``dtype`` and ``nbytes`` must come in (an empty one travels raw)."""
        if nbytes == 0:
            return RAW
        return self.lossy if np.dtype(dtype).kind == "f" else self.lossless

    def base_of(self, name: str, start: int, count: int) -> np.ndarray | None:
        """Elements [start, start + count) of the global model's tensor ``name``, flat (None: no base)."""
        if self.base is None:
            return None
        return np.asarray(self.base[name]).reshape(-1)[start : start + count]


#: a receiver that accepts raw bytes only
RAW_ONLY = Decoding(RAW, RAW, None, "compression_pipeline")
