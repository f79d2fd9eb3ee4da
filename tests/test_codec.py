"""The tensor codec: chunking without copies, and an assembler that refuses bad streams."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from accord.errors import AccordError, RefusedError
from accord.tensors.codec import TensorAssembler, iter_tensor_chunks
from accord.tensors.state import ALLOWED_DTYPES

BIG = 1 << 40


def roundtrip(state, chunk_bytes, expected=None):
    assembler = TensorAssembler(expected, max_total_bytes=BIG)
    for piece in iter_tensor_chunks(state, chunk_bytes):
        assembler.add(*piece)
    return assembler.finish()


def assert_same(a, b):
    assert list(a) == list(b)
    for name in a:
        assert b[name].dtype == np.asarray(a[name]).dtype.newbyteorder("=")
        assert b[name].shape == np.asarray(a[name]).shape
        np.testing.assert_array_equal(b[name], a[name])


def assorted_state():
    rng = np.random.default_rng(0)
    return {
        "w.f32": rng.standard_normal((7, 13)).astype(np.float32),
        "w.f16": rng.standard_normal(33).astype(np.float16),
        "w.f64": rng.standard_normal((2, 3, 4)),
        "i8": rng.integers(-128, 127, 10, dtype=np.int8),
        "i16": rng.integers(-1000, 1000, (3, 3), dtype=np.int16),
        "i32": rng.integers(-(2**31), 2**31 - 1, 17, dtype=np.int32),
        "i64": rng.integers(-(2**62), 2**62, 5, dtype=np.int64),
        "u8": rng.integers(0, 255, 9, dtype=np.uint8),
        "mask": rng.random(11) > 0.5,
        "scalar": np.array(3.5, dtype=np.float32),
        "empty": np.zeros((0, 4), dtype=np.float32),
        "empty1d": np.zeros(0, dtype=np.int64),
        "strided": np.arange(40, dtype=np.float32).reshape(5, 8)[:, ::2],
        "fortran": np.asfortranarray(np.arange(12, dtype=np.int32).reshape(3, 4)),
    }


@pytest.mark.parametrize("chunk_bytes", [1, 3, 7, 64, 1 << 20])
def test_roundtrip_assorted(chunk_bytes):
    state = assorted_state()
    out = roundtrip(state, chunk_bytes)
    assert_same(state, out)


def test_chunks_are_bounded_and_zero_size_travels():
    state = {"a": np.arange(10, dtype=np.float64), "z": np.zeros((3, 0), dtype=np.float32)}
    pieces = list(iter_tensor_chunks(state, 16))
    assert all(len(p[4]) <= 16 for p in pieces)
    assert [p[3] for p in pieces if p[0] == "a"] == [0, 16, 32, 48, 64]
    zero = [p for p in pieces if p[0] == "z"]
    assert len(zero) == 1 and zero[0][2] == (3, 0) and len(zero[0][4]) == 0


def test_chunks_share_memory_with_contiguous_little_endian_input():
    array = np.arange(1000, dtype="<f4")
    first = next(iter_tensor_chunks({"a": array}, 400))
    assert isinstance(first[4], memoryview)
    assert np.shares_memory(np.frombuffer(first[4], dtype=np.uint8), array)


def test_big_endian_input_travels_little_endian():
    values = np.arange(6, dtype=">i4").reshape(2, 3)
    (_name, dtype, shape, _offset, data), = iter_tensor_chunks({"b": values}, 1 << 20)
    assert dtype == "int32" and shape == (2, 3)
    assert bytes(data) == np.arange(6, dtype="<i4").tobytes()
    out = roundtrip({"b": values}, 5)
    np.testing.assert_array_equal(out["b"], values)
    assert out["b"].dtype.byteorder in ("<", "=")


def test_sending_a_disallowed_dtype_fails_clearly():
    with pytest.raises(AccordError, match="complex64"):
        list(iter_tensor_chunks({"c": np.zeros(2, dtype=np.complex64)}, 8))


def test_arrival_order_is_kept_and_interleaving_allowed():
    a, b = np.arange(4, dtype=np.int32), np.arange(3, dtype=np.int16)
    asm = TensorAssembler(None, BIG)
    asm.add("b", "int16", (3,), 0, b.tobytes()[:2])
    asm.add("a", "int32", (4,), 0, a.tobytes()[:8])
    asm.add("b", "int16", (3,), 2, b.tobytes()[2:])
    asm.add("a", "int32", (4,), 8, a.tobytes()[8:])
    out = asm.finish()
    assert list(out) == ["b", "a"] and len(asm) == 2
    np.testing.assert_array_equal(out["a"], a)


# -- refusals -------------------------------------------------------------------------------

EXPECTED = {"w": ("float32", (2, 3)), "b": ("float32", (3,))}
W = np.ones((2, 3), dtype=np.float32).tobytes()


def refused(match, *chunks, expected=None, max_total=BIG, finish=False):
    asm = TensorAssembler(expected, max_total_bytes=max_total)
    with pytest.raises(RefusedError, match=match) as info:
        for chunk in chunks:
            asm.add(*chunk)
        if finish:
            asm.finish()
    assert info.value.kind == "payload"
    return str(info.value)


def test_refuses_disallowed_dtype():
    refused("dtype 'object'", ("x", "object", (1,), 0, b"\0" * 8))
    refused("dtype 'complex64'", ("x", "complex64", (1,), 0, b"\0" * 8))


def test_refuses_unknown_name():
    refused("'x' is not part of the model", ("x", "float32", (1,), 0, b"\0" * 4), expected=EXPECTED)


def test_refuses_shape_or_dtype_differing_from_expected():
    refused(r"float32\[3, 2\], expected float32\[2, 3\]", ("w", "float32", (3, 2), 0, W), expected=EXPECTED)
    refused(r"float64\[2, 3\], expected float32", ("w", "float64", (2, 3), 0, W + W), expected=EXPECTED)


def test_refuses_negative_dims_and_too_many_elements():
    refused("invalid shape", ("x", "float32", (-1, 4), 0, b""))
    refused("invalid shape", ("x", "uint8", (1,) * 40, 0, b"\0"))
    refused("over the limit", ("x", "float64", (10**12, 10**12), 0, b""))
    refused("over the limit", ("x", "float32", (300,), 0, b""), max_total=1000)


def test_refuses_total_over_limit_across_tensors():
    refused(
        "over the limit",
        ("a", "uint8", (600,), 0, b"\0" * 600),
        ("b", "uint8", (600,), 0, b"\0" * 600),
        max_total=1000,
    )


def test_refuses_gaps_overlaps_and_reordering():
    refused("expected byte 0", ("w", "float32", (2, 3), 4, W[4:]))
    refused("expected byte 8", ("w", "float32", (2, 3), 0, W[:8]), ("w", "float32", (2, 3), 12, W[12:]))
    refused("expected byte 8", ("w", "float32", (2, 3), 0, W[:8]), ("w", "float32", (2, 3), 4, W[4:]))
    refused(  # second and third chunks swapped
        "chunk at byte 16, expected byte 8",
        ("w", "float32", (2, 3), 0, W[:8]),
        ("w", "float32", (2, 3), 16, W[16:]),
        ("w", "float32", (2, 3), 8, W[8:16]),
    )


def test_refuses_more_bytes_than_declared():
    refused("more than the 24", ("w", "float32", (2, 3), 0, W + b"\0"))
    refused("more than the 24", ("w", "float32", (2, 3), 0, W[:20]), ("w", "float32", (2, 3), 20, W[20:] + b"xx"))


def test_refuses_shape_change_mid_tensor():
    refused("changed from", ("w", "float32", (2, 3), 0, W[:8]), ("w", "float32", (6,), 8, W[8:]))


def test_a_refusal_repeats_a_hostile_dtype_or_shape_only_in_part():
    """The reason travels back in a gRPC status trailer (16 KiB at most) and into the log."""
    huge = (1,) * 100_000
    mismatch = refused("expected float32", ("w", "float32", huge, 0, W), expected=EXPECTED)
    changed = refused("changed from", ("w", "float32", (2, 3), 0, W[:8]), ("w", "x" * 10**6, huge, 8, W[8:]))
    assert mismatch.endswith(f"is float32[{'1, ' * 32}...], expected float32[2, 3]")
    assert len(mismatch) < 1_000 and len(changed) < 1_000 and "to xxxx" in changed


def test_refuses_duplicate_tensor():
    refused("sent twice", ("w", "float32", (2, 3), 0, W), ("w", "float32", (2, 3), 0, W))
    refused("sent twice", ("z", "float32", (0,), 0, b""), ("z", "float32", (0,), 0, b""))


def test_refuses_truncated_stream_naming_the_tensor():
    refused(
        "tensor 'w' is truncated: 8 of 24",
        ("b", "float32", (3,), 0, b"\0" * 12),
        ("w", "float32", (2, 3), 0, W[:8]),
        finish=True,
    )


def test_refuses_empty_name():
    refused("empty or too long", ("", "float32", (1,), 0, b"\0" * 4))


# -- property -------------------------------------------------------------------------------

_dtypes = st.sampled_from(sorted(ALLOWED_DTYPES)).flatmap(
    lambda name: st.sampled_from([np.dtype(name).newbyteorder("<"), np.dtype(name).newbyteorder(">")])
)
_arrays = _dtypes.flatmap(
    lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6))
)
_states = st.dictionaries(st.text(min_size=1, max_size=12), _arrays, max_size=6)


@settings(max_examples=150, deadline=None)
@given(state=_states, chunk_bytes=st.integers(min_value=1, max_value=200))
def test_chunk_assemble_roundtrip_property(state, chunk_bytes):
    out = roundtrip(state, chunk_bytes)
    assert list(out) == list(state)
    for name, value in state.items():
        assert out[name].shape == value.shape
        assert out[name].dtype.name == value.dtype.name
        np.testing.assert_array_equal(out[name], value)
        assert out[name].tobytes() == value.astype(value.dtype.newbyteorder("<")).tobytes()
