"""The digest that binds a result to the global model of one round.

``model_digest(state, round_number)`` is BLAKE2b-256 (hex) over, in this order:
the tag ``accord-model-v1``, the round number, the tensor count, then for each tensor in
sorted name order its UTF-8 name, its dtype name (``float32``...), its shape and its bytes
in C order, little-endian. Every variable-length field is preceded by its length as 8
little-endian bytes, so no two different models (or rounds) hash the same input.

The round number is part of it, so a result trained in round r cannot pass for one of
round r+1 even when the two rounds' models are equal. The aggregator computes it once per
round; a collaborator computes it over the model it received.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Protocol

import numpy as np

from accord.tensors.state import little_endian

DIGEST_TAG = b"accord-model-v1"


class Hasher(Protocol):
    def update(self, data: bytes | memoryview, /) -> None: ...


def model_digest(state: Mapping[str, np.ndarray], round_number: int) -> str:
    """Hex BLAKE2b-256 of ``state`` as the global model of ``round_number`` (see the module)."""
    h = hashlib.blake2b(digest_size=32)
    _field(h, DIGEST_TAG)
    h.update(int(round_number).to_bytes(8, "little", signed=True))
    h.update(len(state).to_bytes(8, "little"))
    for name in sorted(state):
        array = little_endian(np.asarray(state[name]))
        _field(h, name.encode("utf-8"))
        _field(h, array.dtype.name.encode("ascii"))
        _field(h, b"".join(int(d).to_bytes(8, "little") for d in array.shape))
        h.update(array.nbytes.to_bytes(8, "little"))
        h.update(array.reshape(-1).data.cast("B"))
    return h.hexdigest()


def _field(h: Hasher, data: bytes) -> None:
    h.update(len(data).to_bytes(8, "little"))
    h.update(data)


UPDATE_TAG = b"accord-update-v1"


class UpdateDigest:
    """SHA-256 (hex; SHA-256 is twice BLAKE2b's speed where the CPU has SHA instructions:
    bench/audit_signing.py) of an update as it travels: the tag ``accord-update-v1``, then for each
    tensor chunk in the order sent its name, dtype, shape, offset, encoding and data, each
    field length-prefixed. The site hashes the chunks it sends, the aggregator those it
    receives, as it reads them (the audit trail, accord/audit/): equal digests, the same bytes."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        _field(self._h, UPDATE_TAG)

    def add(self, name: str, dtype: str, shape: tuple[int, ...], offset: int, encoding: str, data: bytes | memoryview) -> None:
        """Hash one chunk."""
        h = self._h
        _field(h, name.encode("utf-8"))
        _field(h, dtype.encode("ascii", "replace"))
        _field(h, b"".join(int(d).to_bytes(8, "little", signed=True) for d in shape))
        h.update(int(offset).to_bytes(8, "little"))  # unsigned, as the wire's uint64 (any offset a peer sends)
        _field(h, encoding.encode("ascii", "replace"))
        view = memoryview(data).cast("B")
        h.update(view.nbytes.to_bytes(8, "little"))
        h.update(view)

    def hexdigest(self) -> str:
        return self._h.hexdigest()
