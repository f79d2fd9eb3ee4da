"""Spares: a received model's arrays reused for the next one only once nothing else holds them."""

from __future__ import annotations

import numpy as np

from accord.tensors.codec import InMemory, Spares, TensorAssembler, iter_tensor_chunks
from accord.tensors.state import tensor_specs


def _receive(state: dict[str, np.ndarray], spares: Spares) -> dict[str, np.ndarray]:
    assembler = TensorAssembler(tensor_specs(state), max_total_bytes=1 << 30, destination=InMemory(spares.take()))
    for name, dtype, shape, offset, data in iter_tensor_chunks(state, 1000):
        assembler.add(name, dtype, shape, offset, data)
    model = dict(assembler.finish())
    spares.keep(model)
    return model


def _models(rounds: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [
        {"w": rng.standard_normal((30, 40)).astype(np.float32), "b": rng.integers(0, 9, 7)} for _ in range(rounds)
    ]


def test_a_dropped_model_is_received_into_again_with_the_new_values():
    spares, (first, second) = Spares(), _models(2)
    got = _receive(first, spares)
    address = got["w"].ctypes.data
    del got
    again = _receive(second, spares)
    assert again["w"].ctypes.data == address  # the same memory, overwritten
    for name in second:
        np.testing.assert_array_equal(again[name], second[name])


def test_a_held_model_a_view_or_a_shared_buffer_is_not_overwritten():
    spares, models = Spares(), _models(4)
    held = _receive(models[0], spares)
    kept = held["w"].copy()
    _receive(models[1], spares)  # ``held`` is still the caller's
    np.testing.assert_array_equal(held["w"], kept)
    view = _receive(models[2], spares)["w"][1:]  # only a view of one tensor survives
    before = view.copy()
    shared = memoryview(_receive(models[3], spares)["b"])  # and a memoryview of another
    np.testing.assert_array_equal(view, before)
    np.testing.assert_array_equal(np.frombuffer(shared, models[3]["b"].dtype), models[3]["b"])
    fresh = _receive(models[0], spares)
    assert not np.shares_memory(fresh["w"], view) and not np.shares_memory(fresh["b"], np.frombuffer(shared, np.int64))
    np.testing.assert_array_equal(view, before)


def test_a_spare_of_another_shape_or_dtype_is_not_used():
    spares = Spares()
    _receive({"w": np.ones((2, 3), np.float32)}, spares)
    got = _receive({"w": np.full((3, 2), 7, np.float32)}, spares)
    assert got["w"].shape == (3, 2) and (got["w"] == 7).all()
    del got
    got = _receive({"w": np.full((3, 2), 5, np.float64)}, spares)
    assert got["w"].dtype == np.float64 and (got["w"] == 5).all()
