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

from accord.errors import AccordError
from accord.tensors.state import little_endian

DIGEST_TAG = b"accord-model-v1"


class Hasher(Protocol):
    def update(self, data: bytes | memoryview, /) -> object: ...

    def hexdigest(self) -> str: ...


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


UPDATE_TAG = b"accord-update-v2"
#: the algorithm an update digest names before its hex: ``blake3:<64 hex digits>``
UPDATE_ALGORITHM = "blake3"
#: what a bare 64-hex update digest is: one written before the digest named its algorithm
#: (SHA-256 of the same fields after the tag ``accord-update-v1``); such records still verify
LEGACY_UPDATE_ALGORITHM = "sha256"
_HEX_DIGITS = frozenset("0123456789abcdef")


class UpdateDigest:
    """BLAKE3-256 of an update as it travels, as ``blake3:<hex>``: the tag ``accord-update-v2``,
    then for each tensor chunk in the order sent its name, dtype, shape, offset, encoding and
    data, each field length-prefixed (texts in UTF-8, the offset as 8 unsigned bytes, as it
    travels). The site hashes the chunks it sends, the aggregator those it receives, as it
    reads them (the audit trail, accord/audit/): equal digests, the same bytes. BLAKE3 (the
    ``blake3`` package, a dependency of the wire, imported here only) hashes ~3.5x as fast as
    SHA-256 even with the CPU's SHA instructions (bench/audit_signing.py): it is on the
    upload's path at both ends."""

    def __init__(self) -> None:
        self._h = _blake3()
        _field(self._h, UPDATE_TAG)

    def add(self, name: str, dtype: str, shape: tuple[int, ...], offset: int, encoding: str, data: bytes | memoryview) -> None:
        """Hash one chunk."""
        h = self._h
        _field(h, _text(name))
        _field(h, _text(dtype))
        _field(h, b"".join(int(d).to_bytes(8, "little", signed=True) for d in shape))
        h.update(int(offset).to_bytes(8, "little"))  # a uint64: one past the tensor is the assembler's to refuse
        _field(h, _text(encoding))
        view = memoryview(data).cast("B")
        h.update(view.nbytes.to_bytes(8, "little"))
        h.update(view)

    def hexdigest(self) -> str:
        """``blake3:`` and the 32-byte digest in hex."""
        return f"{UPDATE_ALGORITHM}:{self._h.hexdigest()}"


def _text(value: str) -> bytes:
    """A text field's bytes: UTF-8, so two different texts (a peer may send any) never hash alike."""
    return value.encode("utf-8", "surrogatepass")


def update_digest_algorithm(digest: str) -> str | None:
    """The algorithm an update digest was made with: UPDATE_ALGORITHM for ``blake3:`` and 64
    lower-case hex digits, LEGACY_UPDATE_ALGORITHM for the 64 bare (an audit record of an
    earlier Accord); None for any other string, which no Accord writes."""
    algorithm, colon, hexdigest = digest.partition(":")
    if not colon:
        algorithm, hexdigest = LEGACY_UPDATE_ALGORITHM, digest
    elif algorithm != UPDATE_ALGORITHM:
        return None
    return algorithm if len(hexdigest) == 64 and set(hexdigest) <= _HEX_DIGITS else None


def require_update_digest() -> None:
    """AccordError now if no update digest can be made (the blake3 package missing): called as
    the aggregator's upload path and a site's record are made, so it stops a start, not a round."""
    _blake3()


def _blake3() -> Hasher:
    try:
        from blake3 import blake3
    except ImportError:
        raise AccordError(
            "the update digest needs the blake3 package (a dependency of Accord's wire), which is not installed",
            "pip install 'blake3>=1.0.11' in this environment (or reinstall accord)",
        ) from None
    return blake3()
