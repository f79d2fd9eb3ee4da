"""Model files: safetensors round-trip, atomic writes, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from accord.errors import AccordError
from accord.tensors.state import load_state, save_state


def test_round_trip_keeps_dtypes_and_scalar_shapes(tmp_path: Path) -> None:
    state = {
        "w": np.arange(6, dtype=np.float32).reshape(2, 3),
        "step": np.array(3.0, np.float32),
        "count": np.array(7, np.int64),
        "mask": np.array([True, False]),
    }
    path = save_state(tmp_path / "m.safetensors", state)
    back = load_state(path)
    assert set(back) == set(state)
    for name, value in state.items():
        assert back[name].shape == value.shape and back[name].dtype == value.dtype
        np.testing.assert_array_equal(back[name], value)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_missing_and_corrupt_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(AccordError, match="fx plan initialize"):
        load_state(tmp_path / "absent.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 32)
    with pytest.raises(AccordError, match="not a readable safetensors"):
        load_state(bad)
