"""The update digest of the audit trail (tensors/digest.py): BLAKE3-256 of the documented fields,
named ``blake3:``; every byte that travels is in it; the site's digest of what it sends equals
the aggregator's of the same messages as they are received; a bare hex digest (an earlier
Accord's) reads as SHA-256; without the blake3 package, one clear message."""

from __future__ import annotations

import sys

import blake3
import numpy as np
import pytest

from accord.errors import AccordError, RefusedError
from accord.tensors.codec import TensorAssembler
from accord.tensors.digest import UpdateDigest, update_digest_algorithm
from accord.transport import chunk_views, wire
from accord.transport.uploads import _take_chunks

CHUNK = 4096


def field(data: bytes) -> bytes:
    return len(data).to_bytes(8, "little") + data


def test_the_digest_is_blake3_of_the_documented_fields() -> None:
    data = np.arange(6, dtype=np.float32).tobytes()
    digest = UpdateDigest()
    digest.add("layer.w", "float32", (2, 3), 8, "raw", data)
    shape = b"".join(d.to_bytes(8, "little") for d in (2, 3))
    expected = blake3.blake3(
        field(b"accord-update-v2")
        + field(b"layer.w")
        + field(b"float32")
        + field(shape)
        + (8).to_bytes(8, "little")
        + field(b"raw")
        + field(data)
    ).hexdigest()
    assert digest.hexdigest() == f"blake3:{expected}"


def one_chunk(name: str = "w", dtype: str = "float32", shape: tuple[int, ...] = (4,), offset: int = 0, encoding: str = "", data: bytes = b"\x01" * 16) -> str:
    digest = UpdateDigest()
    digest.add(name, dtype, shape, offset, encoding, data)
    return digest.hexdigest()


@pytest.mark.parametrize(
    "change",
    [
        {"data": b"\x01" * 15 + b"\x02"},
        {"data": b"\x01" * 15},
        {"name": "v"},
        {"dtype": "int32"},
        {"shape": (2, 2)},
        {"offset": 16},
        {"encoding": "q8"},
        {"name": "wf", "dtype": "loat32"},  # a byte moved from one field to the next: the length prefixes tell them apart
    ],
    ids=["a-byte", "one-byte-less", "name", "dtype", "shape", "offset", "encoding", "moved-byte"],
)
def test_every_field_that_travels_changes_the_digest(change: dict) -> None:
    assert one_chunk(**change) != one_chunk()


def test_the_sites_digest_is_the_aggregators_of_the_messages_received() -> None:
    """``sent_update_digest`` against the receive path's: each message the site sends
    (``encoded_tensor_chunks``: big tensors cut in chunks, small ones travelling together in
    ``more``) parsed as the server parses it (chunk_views) and hashed as the upload's writer
    hashes it (uploads._take_chunks), while the assembler rebuilds the tensors."""
    rng = np.random.default_rng(3)
    state = {
        "big": rng.standard_normal(3000).astype(np.float32),
        "bias": rng.standard_normal(5).astype(np.float32),
        "count": np.arange(7, dtype=np.int64),
        "empty": np.zeros((0, 3), np.float32),
    }
    expected = {name: (array.dtype.name, array.shape) for name, array in state.items()}
    received = UpdateDigest()
    assembler = TensorAssembler(expected, max_total_bytes=1 << 20)
    messages = list(wire.encoded_tensor_chunks(state, CHUNK, in_result=True))
    assert len(messages) == 3 and len(chunk_views.result_chunk(messages[-1])) == 4  # 12 KB cut in three, the rest grouped
    for message in messages:
        _take_chunks(received, assembler, len(state), [wire.chunk_fields(c) for c in chunk_views.result_chunk(message)])
    rebuilt = assembler.finish()
    assert all(np.array_equal(rebuilt[name], state[name]) for name in state)
    assert received.hexdigest() == wire.sent_update_digest(state, CHUNK)
    assert wire.sent_update_digest({**state, "bias": state["bias"] + 1}, CHUNK) != received.hexdigest()
    assert wire.sent_update_digest(state, CHUNK // 2) != received.hexdigest()  # other chunks: another digest


def test_a_digest_names_its_algorithm_and_a_bare_one_is_sha256() -> None:
    assert update_digest_algorithm(one_chunk()) == "blake3"
    assert update_digest_algorithm("ab" * 32) == "sha256"  # what audit records of earlier versions hold
    odd = ["md5:" + "ab" * 32, "blake3:", "BLAKE3:" + "ab" * 32, "blake3:" + "AB" * 32, "ab" * 31, "ab" * 32 + "\n", "sha256:" + "ab" * 32, ""]
    assert [update_digest_algorithm(digest) for digest in odd] == [None] * len(odd)  # no Accord writes them


def test_without_the_blake3_package_the_message_names_it_and_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "blake3", None)  # as if it were not installed
    with pytest.raises(AccordError) as caught:
        UpdateDigest()
    assert "needs the blake3 package" in caught.value.message and "pip install 'blake3" in str(caught.value.fix)


def test_an_offset_past_int64_is_hashed_and_left_to_the_assembler_to_refuse() -> None:
    """``offset`` travels as a uint64: one past int64 (a lying site's) is hashed as the same 8
    bytes any offset is, and the assembler refuses it; it does not overflow the digest."""
    assert one_chunk(offset=(1 << 64) - 1) != one_chunk(offset=0)
    assembler = TensorAssembler({"w": ("float32", (4,))}, max_total_bytes=1 << 20)
    with pytest.raises(RefusedError, match="chunk at byte 9223372036854775808"):
        _take_chunks(UpdateDigest(), assembler, 1, [("w", "float32", (4,), 1 << 63, b"\x01" * 16, "")])


@pytest.mark.parametrize("field_name", ["dtype", "encoding"])
def test_two_texts_that_differ_hash_apart_even_outside_ascii(field_name: str) -> None:
    """A peer may send any text: two different dtypes (or encodings) never hash the same."""
    assert one_chunk(**{field_name: "flo\u00e9t32"}) != one_chunk(**{field_name: "flo?t32"})
