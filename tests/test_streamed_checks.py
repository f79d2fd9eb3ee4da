"""StreamedChecks: the change norms and non-finite tensors measured while an update arrives
equal, bit for bit, what change_norms and check_update find reading the saved file."""

from __future__ import annotations

import numpy as np
import pytest

from accord.aggregation.bounds import NORM_BLOCK, StreamedChecks, Update, change_norms
from accord.aggregator.staging import StagedFile
from accord.errors import RefusedError
from accord.messages import TaskResult
from accord.runners.base import OPTIMIZER_PREFIX
from accord.tensors.codec import TensorAssembler, iter_tensor_chunks
from accord.tensors.state import StateView, all_finite, check_update, tensor_specs


def _model(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "big": rng.standard_normal(20 * NORM_BLOCK + 12_345).astype(np.float32),  # 21 blocks, the last short
        "exact": rng.standard_normal((2, NORM_BLOCK // 2)).astype(np.float64),  # one block exactly
        "small": rng.standard_normal((3, 5)).astype(np.float16),
        "count": rng.integers(0, 100, 7).astype(np.int64),
        f"{OPTIMIZER_PREFIX}momentum": rng.standard_normal(1000).astype(np.float32),
        "empty": np.zeros((0, 4), np.float32),
    }


def _update(model: dict[str, np.ndarray], rng: np.random.Generator, is_delta: bool) -> dict[str, np.ndarray]:
    return {
        name: (
            (rng.standard_normal(v.shape) * 1e-2 + (0 if is_delta else v)).astype(v.dtype)
            if v.dtype.kind == "f"
            else v + 1
        )
        for name, v in model.items()
    }


def _received(tmp_path, model, update, is_delta: bool, chunk_bytes: int) -> StagedFile:
    """``update`` streamed through the assembler into a staged file measured against ``model``."""
    staged = StagedFile(tmp_path, tensor_specs(model), "a test result", StreamedChecks(model, is_delta))
    assembler = TensorAssembler(tensor_specs(model), max_total_bytes=1 << 32, destination=staged)
    for name, dtype, shape, offset, data in iter_tensor_chunks(update, chunk_bytes):
        assembler.add(name, dtype, shape, offset, data)
    assembler.finish()
    return staged


@pytest.mark.parametrize("is_delta", [False, True])
@pytest.mark.parametrize("chunk_bytes", [1 << 20, 3 * 4096 + 8])
def test_streamed_norms_equal_the_reread_ones_bit_for_bit(tmp_path, is_delta, chunk_bytes):
    rng = np.random.default_rng(7)
    model = _model(rng)
    update = _update(model, rng, is_delta)
    staged = _received(tmp_path, model, update, is_delta, chunk_bytes)
    measured = staged.measured()
    assert measured is not None and measured.reference is model and measured.non_finite == frozenset()
    staged.commit()
    reread = change_norms(model, Update("site", StateView(staged.path), 1.0, is_delta, {}))
    assert list(measured.norms) == list(reread) == ["big", "exact", "small", "empty"]
    for name in reread:  # == on floats: the same bits (no NaN here)
        assert measured.norms[name] == reread[name], name
    assert measured.norms["big"] > 0


def test_streamed_non_finite_tensors_are_those_the_scan_finds(tmp_path):
    rng = np.random.default_rng(3)
    model = _model(rng)
    update = _update(model, rng, False)
    update["big"][NORM_BLOCK + 5] = np.nan
    update["small"][2, 4] = np.inf
    update[f"{OPTIMIZER_PREFIX}momentum"][999] = -np.inf
    staged = _received(tmp_path, model, update, False, 1 << 20)
    measured = staged.measured()
    assert measured is not None
    view = StateView(staged.commit() and staged.path)
    assert measured.non_finite == {name for name in model if view[name].dtype.kind == "f" and not all_finite(view[name])}
    assert measured.non_finite == {"big", "small", f"{OPTIMIZER_PREFIX}momentum"}
    for non_finite in (None, measured.non_finite):  # the same refusal, read or measured
        with pytest.raises(RefusedError, match="tensor 'big' holds NaN or Inf"):
            check_update(model, view, "site", non_finite)


def test_a_stream_no_honest_site_sends_is_not_measured(tmp_path):
    rng = np.random.default_rng(5)
    model = _model(rng)
    update = _update(model, rng, False)
    interleaved = StreamedChecks(model, False)
    big = update["big"].view(np.uint8).reshape(-1)
    interleaved.add("big", np.dtype("<f4"), 0, big[:4096].data)
    interleaved.add("small", np.dtype("<f2"), 0, update["small"].view(np.uint8).reshape(-1).data)
    interleaved.add("big", np.dtype("<f4"), 4096, big[4096:].data)
    assert interleaved.measured() is None
    cut = StreamedChecks(model, False)  # a piece that ends inside an element
    cut.add("big", np.dtype("<f4"), 0, big[:4097].data)
    assert cut.measured() is None
    short = StreamedChecks(model, False)  # a tensor not whole
    short.add("big", np.dtype("<f4"), 0, big[:4096].data)
    assert short.measured() is None


def test_the_engine_uses_measurements_only_of_its_own_model(tmp_path):
    from accord.aggregator.result_checks import measured_against

    rng = np.random.default_rng(1)
    model = _model(rng)
    staged = _received(tmp_path, model, _update(model, rng, True), True, 1 << 20)
    measured = staged.measured()
    result = TaskResult("site", 0, "train", 10, {}, tensors=staged, is_delta=True, measured=measured)
    assert measured_against(result, model) is measured
    assert measured_against(result, dict(model)) is None  # an equal model, not the one measured against
    assert measured_against(TaskResult("site", 0, "train", 10, {}, tensors=staged, is_delta=False, measured=measured), model) is None


def _measured_alone(model: dict[str, np.ndarray], update: dict[str, np.ndarray], is_delta: bool):
    checks = StreamedChecks(model, is_delta)
    for name, dtype, _shape, offset, data in iter_tensor_chunks(update, 3 * 4096 + 8):
        checks.add(name, np.dtype(dtype).newbyteorder("<"), offset, data)
    return checks.measured()


@pytest.mark.parametrize("is_delta", [False, True])
def test_a_non_finite_value_is_found_from_its_block_sum_in_any_block(is_delta):
    # a normed tensor's values are not scanned apart: a NaN or Inf is found through its block's sum
    rng = np.random.default_rng(11)
    model = {"w": rng.standard_normal(3 * NORM_BLOCK + 7).astype(np.float32), "h": rng.standard_normal(99).astype(np.float16)}
    for where in (0, NORM_BLOCK - 1, NORM_BLOCK, 3 * NORM_BLOCK + 6):  # first, block ends, the short last block
        for bad in (np.nan, np.inf, -np.inf):
            update = _update(model, rng, is_delta)
            update["w"][where] = bad
            measured = _measured_alone(model, update, is_delta)
            assert measured is not None and measured.non_finite == {"w"}, (where, bad)
            assert not np.isfinite(measured.norms["w"]) and np.isfinite(measured.norms["h"])


def test_a_block_whose_squares_overflow_but_whose_values_are_finite_is_not_non_finite():
    model = {"d": np.zeros(NORM_BLOCK + 3, np.float64)}
    update = {"d": np.full(NORM_BLOCK + 3, 1e200)}  # a float64 delta: finite, its squares past float64
    measured = _measured_alone(model, update, True)
    assert measured is not None and measured.non_finite == frozenset()
    assert measured.norms["d"] == change_norms(model, Update("site", update, 1.0, True, {}))["d"] == np.inf


def test_a_block_it_cannot_judge_from_its_sum_stops_the_measuring():
    # float64 weights (their change may overflow) and a global holding Inf: the checks read the saved copy
    finite64 = {"w": np.zeros(100, np.float64)}
    overflowing = {"w": np.zeros(100, np.float64)}
    overflowing["w"][:2] = (1.7e308, -1.7e308)  # finite values whose change from a global of -1.7e308 is Inf
    with np.errstate(over="ignore"):
        assert _measured_alone({"w": np.full(100, -1.7e308)}, overflowing, False) is None
    nan64 = {"w": np.zeros(100, np.float64)}
    nan64["w"][5] = np.nan
    assert _measured_alone(finite64, nan64, False) is None
    inf_global = {"w": np.zeros(100, np.float32)}
    inf_global["w"][3] = np.inf
    assert _measured_alone(inf_global, {"w": np.ones(100, np.float32)}, False) is None
    assert _measured_alone(finite64, {"w": np.ones(100, np.float64)}, False) is not None  # finite: measured
