"""The simulation's spool: each reply's tensors read back exactly, replies of one layout
sharing its record, another layout in the same round read by its own."""

from __future__ import annotations

import numpy as np

from accord.simulation.spool import RoundSpool


def _reply(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"w": rng.standard_normal((3, 5)).astype(np.float32), "b": rng.standard_normal(5), "n": np.array(seed, np.int64)}


def test_replies_read_back_exactly_and_share_their_layout(tmp_path):
    spool = RoundSpool(tmp_path)
    replies = [_reply(seed) for seed in range(20)]
    kept = [spool.keep(1, reply) for reply in replies]
    for reply, view in zip(replies, kept):
        assert list(view) == ["w", "b", "n"]
        for name, value in reply.items():
            assert view[name].dtype == value.dtype and view[name].shape == value.shape
            np.testing.assert_array_equal(view[name], value)
            assert not view[name].flags.writeable
    assert len({id(view._layout) for view in kept}) == 1  # one record for the round's layout
    assert not hasattr(kept[0], "__dict__")  # a reply holds its start offset, no per-tensor record


def test_another_layout_in_the_round_and_a_new_round(tmp_path):
    spool = RoundSpool(tmp_path)
    first = spool.keep(1, _reply(1))
    other = {"w": np.arange(6, dtype=np.float64).reshape(2, 3), "empty": np.zeros((0, 4), np.float32)}
    odd = spool.keep(1, other)
    later = spool.keep(2, _reply(2))
    np.testing.assert_array_equal(odd["w"], other["w"])
    assert odd["empty"].shape == (0, 4)
    np.testing.assert_array_equal(first["w"], _reply(1)["w"])
    np.testing.assert_array_equal(later["b"], _reply(2)["b"])
    assert first._file is not later._file  # a round's file is its own
