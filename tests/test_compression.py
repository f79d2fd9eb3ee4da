"""The compression pipeline: round trips (exact for lossless, bounded for lossy), stochastic
rounding's bias, top-k with error feedback, chunk bounds, hostile chunks, and the plan section."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import zstandard

from accord.cli.main import main
from accord.errors import AccordError, PlanError, RefusedError
from accord.plan.compression import CompressionSettings
from accord.plan.loader import load_plan, update_plan_file
from accord.tensors.codec import TensorAssembler
from accord.tensors.compression import UpdateEncoder, lossless
from accord.tensors.encodings import Decoding, Encoding
from accord.tensors.state import tensor_specs

BIG = 1 << 30


def a_model(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "w": rng.normal(size=(120, 33)).astype(np.float32),
        "b": rng.normal(size=33).astype(np.float64),
        "h": rng.normal(size=(7, 5)).astype(np.float16),
        "steps": np.arange(6, dtype=np.int64),
        "mask": rng.random(9) > 0.5,
        "empty": np.zeros((0, 4), dtype=np.float32),
    }


def trained_from(model: dict[str, np.ndarray], seed: int = 1, scale: float = 0.01) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        name: (value + scale * rng.normal(size=value.shape)).astype(value.dtype) if value.dtype.kind == "f" else value
        for name, value in model.items()
    }


def through(settings: CompressionSettings, chunks, model, base):
    """What an aggregator with ``settings`` rebuilds from ``chunks``."""
    assembler = TensorAssembler(tensor_specs(model), BIG, decoding=Decoding.upload(settings, base))
    for name, dtype, shape, offset, encoding, data in chunks:
        assembler.add(name, dtype, shape, offset, data, encoding)
    return assembler.finish()


def round_trip(stages: list[str], chunk_bytes: int = 2048, seed: int = 3, **settings):
    plan = CompressionSettings(upload=stages, **settings)
    model = a_model()
    trained = trained_from(model)
    chunks = list(UpdateEncoder(plan, seed=seed).encode(trained, model, is_delta=False).chunks(chunk_bytes))
    assert max(len(c[5]) for c in chunks) <= chunk_bytes  # every chunk within network.settings.chunk_bytes
    return trained, through(plan, chunks, model, model if plan.lossy_upload else None), chunks, model


@pytest.mark.parametrize("chunk_bytes", [1024, 4096, 1 << 20])
def test_lossless_zstd_round_trips_exactly_every_dtype_in_chunks_within_the_bound(chunk_bytes: int) -> None:
    trained, got, chunks, _ = round_trip(["zstd"], chunk_bytes)
    assert {c[4] for c in chunks} == {"zstd", ""}  # the empty tensor travels raw
    for name, value in trained.items():
        assert got[name].dtype == value.dtype and np.array_equal(got[name], value)


def test_a_zstd_download_round_trips_exactly_and_refuses_raw_in_its_place() -> None:
    plan = CompressionSettings(download=["zstd"])
    model = a_model()
    assembler = TensorAssembler(tensor_specs(model), BIG, decoding=Decoding.download(plan))
    for name, dtype, shape, offset, encoding, data in lossless(model, plan).chunks(1024):
        assembler.add(name, dtype, shape, offset, data, encoding)
    assert all(np.array_equal(v, model[k]) for k, v in assembler.finish().items())
    raw = TensorAssembler(tensor_specs(model), BIG, decoding=Decoding.download(plan))
    with pytest.raises(RefusedError, match=r"arrived in encoding ''; the plan's compression_pipeline.download sends"):
        raw.add("w", "float32", (120, 33), 0, model["w"].tobytes())


@pytest.mark.parametrize(("stage", "relative"), [("fp16", 2**-11), ("bf16", 2**-8)])
def test_half_precision_changes_are_within_their_rounding(stage: str, relative: float) -> None:
    trained, got, _, model = round_trip([stage])
    for name in ("w", "b"):
        change = trained[name].astype(np.float64) - model[name]
        error = np.abs(got[name].astype(np.float64) - trained[name])
        assert (error <= relative * np.abs(change) + 1e-6).all()  # precision relative to the change
    assert np.array_equal(got["steps"], trained["steps"]) and np.array_equal(got["mask"], trained["mask"])


@pytest.mark.parametrize(("stage", "levels"), [("q8", 255), ("q4", 15), ("q8+zstd", 255)])
def test_quantized_changes_are_within_one_step_of_their_scale(stage: str, levels: int) -> None:
    trained, got, _, model = round_trip(stage.split("+"))
    for name in ("w", "b", "h"):
        change = trained[name].astype(np.float64) - model[name].astype(np.float64)
        step = (change.max() - change.min()) / levels
        error = np.abs(got[name].astype(np.float64) - trained[name].astype(np.float64))
        slack = 1e-3 if name == "h" else 1e-6  # a float16 tensor rounds base + change once more
        assert error.max() <= step * (1 + 1e-4) + slack
        assert error.max() > 0  # lossy indeed
    whole = UpdateEncoder(CompressionSettings(upload=stage.split("+")), seed=0).encode(trained, model, False)
    sent = sum(len(c[5]) for c in whole.chunks(1 << 20) if c[0] == "w")  # one chunk: 16 bytes of count and scale
    assert sent <= (0.25 if levels == 255 else 0.125) * trained["w"].nbytes + 16


def test_stochastic_rounding_is_unbiased_in_expectation() -> None:
    plan = CompressionSettings(upload=["q4"])
    rng = np.random.default_rng(11)
    base = {"x": np.zeros(400, dtype=np.float32)}
    value = rng.uniform(-1, 1, size=400).astype(np.float32)
    value[:2] = (-1, 1)  # fixes the scale: step = 2 / 15
    encoder = UpdateEncoder(plan, seed=5)
    draws = np.stack(
        [through(plan, encoder.encode({"x": value}, base, False).chunks(1 << 20), base, base)["x"] for _ in range(400)]
    )
    step = 2 / 15
    # each draw is off by up to one step; the mean of 400 draws is off by ~step / (2 sqrt(400)) = step / 40
    assert np.abs(draws - value).max() <= step * (1 + 1e-5)
    assert np.abs(draws.mean(axis=0) - value).max() < step / 6
    assert abs(float((draws.mean(axis=0) - value).mean())) < step / 100  # no drift overall
    nearest = np.round((value + 1) / step) * step - 1  # deterministic rounding's error, for contrast
    assert np.abs(nearest - value).mean() > 10 * abs(float((draws.mean(axis=0) - value).mean()))


def test_topk_sends_the_largest_changes_and_keeps_the_rest_as_residual() -> None:
    plan = CompressionSettings(upload=["topk", "q8", "zstd"], topk_ratio=0.05)
    model = a_model()
    trained = trained_from(model)
    encoder = UpdateEncoder(plan, seed=0)
    chunks = list(encoder.encode(trained, model, False).chunks(1024))
    got = through(plan, chunks, model, model)
    change = trained["w"].astype(np.float32) - model["w"]
    moved = (got["w"] != model["w"]).sum()
    k = int(np.ceil(0.05 * change.size))
    assert 0.9 * k <= moved <= k  # q8 may round a small one to no change
    largest = np.argsort(np.abs(change).reshape(-1))[-k:]
    sent = np.zeros(change.size, dtype=bool)
    sent[largest] = True
    residual = encoder.residuals["w"].reshape(-1)
    assert np.allclose(residual[~sent], change.reshape(-1)[~sent])  # what top-k left out is owed
    assert np.all(residual[sent] == 0)  # quantization_feedback off: the rounding is not
    assert sum(len(c[5]) for c in chunks if c[0] == "w") < 0.06 * trained["w"].nbytes


def test_quantization_feedback_keeps_the_rounding_error_as_residual() -> None:
    plan = CompressionSettings(upload=["q4"], quantization_feedback=True)
    model = a_model()
    trained = trained_from(model)
    encoder = UpdateEncoder(plan, seed=2)
    got = through(plan, encoder.encode(trained, model, False).chunks(1 << 20), model, model)
    change = trained["w"].astype(np.float32) - model["w"]
    sent = got["w"].astype(np.float32) - model["w"]
    assert np.allclose(encoder.residuals["w"].reshape(change.shape), change - sent, atol=1e-6)
    assert set(encoder.residuals) == {"w", "b", "h"}  # float tensors only


def test_a_delta_is_encoded_as_it_is_and_kept_a_delta() -> None:
    plan = CompressionSettings(upload=["q8", "zstd"])
    model = a_model()
    delta = {k: (v - model[k]).astype(v.dtype) if v.dtype.kind == "f" else v for k, v in trained_from(model).items()}
    got = through(plan, UpdateEncoder(plan, seed=0).encode(delta, model, is_delta=True).chunks(4096), model, None)
    step = (delta["w"].max() - delta["w"].min()) / 255
    assert np.abs(got["w"] - delta["w"]).max() <= step * (1 + 1e-4)  # no global model added at either end


def _averaging(feedback: bool, rounds: int = 400) -> list[float]:
    """Four sites step towards their own targets; their mean is c, but on two coordinates they
    pull hard in opposite directions, so plain top-k (2 of 100) only ever sends those."""
    rng = np.random.default_rng(0)
    c = rng.normal(size=100)
    targets = [c.copy() for _ in range(4)]
    for i, target in enumerate(targets):
        target[:2] += 4.0 if i % 2 else -4.0
    plan = CompressionSettings(upload=["topk"], topk_ratio=0.02, error_feedback=feedback)
    encoders = [UpdateEncoder(plan, seed=i) for i in range(4)]
    x, errors = np.zeros(100), []
    for r in range(rounds):
        lr = 0.02 / (1 + 0.005 * r)
        model = {"x": x}
        replies = [
            through(plan, e.encode({"x": x + lr * (t - x)}, model, False).chunks(1 << 20), model, model)["x"]
            for e, t in zip(encoders, targets)
        ]
        x = np.mean(replies, axis=0)
        errors.append(float(np.linalg.norm(x - c) / np.linalg.norm(c)))
    return errors


def test_topk_with_error_feedback_converges_where_plain_topk_stalls() -> None:
    with_feedback, plain = _averaging(True), _averaging(False)
    assert plain[-1] > 0.99  # the small coordinates never travel
    assert with_feedback[-1] < 0.02 and with_feedback[-1] < with_feedback[199] < with_feedback[99]


def test_chunks_are_the_same_bytes_each_time_they_are_made() -> None:
    plan = CompressionSettings(upload=["topk", "q4", "zstd"])
    model = a_model()
    encoded = UpdateEncoder(plan, seed=0).encode(trained_from(model), model, False)
    assert list(encoded.chunks(1024)) == list(encoded.chunks(1024))  # a retried upload resends the same


def test_a_non_finite_update_is_not_encoded() -> None:
    model = a_model()
    trained = trained_from(model)
    trained["w"][0, 0] = np.nan
    with pytest.raises(AccordError, match="tensor 'w' holds values that are not finite"):
        UpdateEncoder(CompressionSettings(upload=["q8"])).encode(trained, model, False)


# -- hostile chunks: refused before anything is written ----------------------------------


def _assembler(stages: list[str], expected=None) -> TensorAssembler:
    plan = CompressionSettings(upload=stages)
    expected = expected or {"x": ("float32", (1000,))}
    base = {name: np.zeros(shape, dtype=dtype) for name, (dtype, shape) in expected.items()}
    return TensorAssembler(expected, BIG, decoding=Decoding.upload(plan, base))


def _sparse(count: int, indices: list[int], values: list[float]) -> bytes:
    return struct.pack("<QI", count, len(indices)) + np.array(indices, "<u4").tobytes() + np.array(values, "<f4").tobytes()


@pytest.mark.parametrize(
    ("stages", "encoding", "data", "why"),
    [
        (["q8"], "fp16", struct.pack("<Q", 2) + b"\0" * 4, "arrived in encoding 'fp16'; the plan's compression_pipeline.upload sends a float32 tensor as 'q8'"),
        (["q8"], "", b"\0" * 4000, "arrived in encoding ''"),
        (["q8"], "q8", b"\0" * 5, "lacks its 8-byte count"),
        (["q8"], "q8", struct.pack("<Q", 0), "covers no element"),
        (["q8"], "q8", struct.pack("<Q", 1001) + b"\0" * 1009, "more than the 4000 its dtype and shape declare"),
        (["q8"], "q8", struct.pack("<Qff", 4, 0.0, float("nan")) + b"\0" * 4, "step=nan; both must be finite"),
        (["q8"], "q8", struct.pack("<Qff", 4, 3e38, 3e38) + b"\xff" * 4, "not finite"),
        (["q8"], "q8", struct.pack("<Qff", 4, 0.0, 1.0) + b"\0" * 5, "has 13 bytes where its count needs 12"),
        (["q4"], "q4", struct.pack("<Qff", 3, 0.0, 1.0) + b"\0\xf0", "non-zero final nibble"),
        (["fp16"], "fp16", struct.pack("<Q", 1) + np.float16(np.inf).tobytes(), "not finite"),
        (["topk"], "topk", _sparse(10, [3, 10], [1, 1]), "not increasing, distinct and below its count 10"),
        (["topk"], "topk", _sparse(10, [3, 3], [1, 1]), "not increasing, distinct"),
        (["topk"], "topk", _sparse(10, [5, 3], [1, 1]), "not increasing"),
        (["topk"], "topk", struct.pack("<QI", 2, 3) + b"\0" * 24, "claims 3 entries"),
        (["zstd"], "zstd", struct.pack("<Q", 4) + b"not a frame", "does not decompress"),
        (["zstd"], "zstd", struct.pack("<Q", 4) + zstandard.ZstdCompressor().compress(b"\0" * (1 << 24)), "does not decompress within 16 bytes"),
        (["q8", "zstd"], "q8+zstd", struct.pack("<Q", 4) + zstandard.ZstdCompressor().compress(b"\0" * 9), "has 9 bytes where"),
    ],
)
def test_a_hostile_chunk_is_refused_with_its_reason(stages, encoding, data, why) -> None:
    assembler = _assembler(stages)
    with pytest.raises(RefusedError, match=why.replace("(", r"\(").replace(".", r"\.")) as refused:
        assembler.add("x", "float32", (1000,), 0, data, encoding)
    assert refused.value.kind == "payload"


def test_a_zstd_bomb_with_no_declared_size_is_cut_at_the_bound() -> None:
    small_window = zstandard.ZstdCompressionParameters.from_level(3, window_log=10, write_content_size=False)
    bomb = zstandard.ZstdCompressor(compression_params=small_window).compress(b"\0" * (1 << 24))
    with pytest.raises(RefusedError, match="inflates past 4000 bytes"):
        _assembler(["zstd"]).add("x", "float32", (1000,), 0, struct.pack("<Q", 1000) + bomb, "zstd")


def test_an_integer_tensor_must_come_lossless_and_the_encoding_may_not_change_midway() -> None:
    assembler = _assembler(["topk", "q8", "zstd"], {"n": ("int64", (600,)), "x": ("float32", (1000,))})
    with pytest.raises(RefusedError, match=r"sends a int64 tensor as 'zstd'"):
        assembler.add("n", "int64", (600,), 0, struct.pack("<Q", 1) + b"\0" * 8, "topk+q8+zstd")
    plan = CompressionSettings(upload=["q8"])
    other = TensorAssembler({"x": ("float32", (1000,))}, BIG, decoding=Decoding.upload(plan, {"x": np.zeros(1000, np.float32)}))
    other.add("x", "float32", (1000,), 0, struct.pack("<Qff", 4, 0.0, 1.0) + b"\1" * 4, "q8")
    with pytest.raises(RefusedError, match="changed encoding in the middle"):
        other.add("x", "float32", (1000,), 16, struct.pack("<Q", 4) + b"\0" * 8, "fp16")


def test_encoding_names_parse_only_in_order() -> None:
    assert Encoding.parse("topk+q8+zstd") == Encoding("topk+q8+zstd", True, "q8", True)
    for bad in ("zstd+q8", "q8+fp16", "gzip", "topk+topk"):
        with pytest.raises(ValueError):
            Encoding.parse(bad)


# -- the plan section --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "why"),
    [
        ({"upload": ["gzip"]}, "compression_pipeline.settings.upload: Value error, unknown upload stage 'gzip'; the stages are topk, fp16"),
        ({"upload": ["zstd", "q8"]}, "must be distinct and in the order topk, fp16, bf16, q8, q4, zstd"),
        ({"upload": ["fp16", "q8"]}, "name more than one of fp16, bf16, q8, q4"),
        ({"download": ["q8"]}, "download stage 'q8' is lossy: a model changed on the way would not match its digest"),
        ({"topk_ratio": 0}, "compression_pipeline.settings.topk_ratio: Input should be greater than 0"),
        ({"level": 3}, "compression_pipeline.settings.level: Extra inputs are not permitted"),
    ],
)
def test_bad_compression_settings_are_one_line_naming_the_key(workspace_factory, settings, why) -> None:
    plan = workspace_factory(["a", "b"])
    update_plan_file(plan.path, {f"compression_pipeline.settings.{k}": v for k, v in settings.items()})
    with pytest.raises(PlanError) as refused:
        load_plan(plan.path, workspace=plan.workspace)
    assert why in refused.value.message and "\n" not in refused.value.message


def test_zstd_without_its_package_names_the_extra(workspace_factory, monkeypatch) -> None:
    from accord.plan import compression

    plan = workspace_factory(["a", "b"])
    update_plan_file(plan.path, {"compression_pipeline.settings.upload": ["q8", "zstd"]})
    monkeypatch.setattr(compression, "_zstd_installed", lambda: False)
    with pytest.raises(PlanError, match=r"the zstd stage needs the zstandard package, which is not installed: pip install 'accord\[zstd\]'"):
        load_plan(plan.path, workspace=plan.workspace)


def test_fx_refuses_a_bad_pipeline_in_one_line_and_exits_2(workspace_factory, capsys) -> None:
    plan = workspace_factory(["a", "b"])
    update_plan_file(plan.path, {"compression_pipeline.settings.download": ["q4"]})
    assert main(["plan", "print", "-w", str(plan.workspace)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(errors) == 1 and "compression_pipeline.settings.download: Value error, download stage 'q4' is lossy" in errors[0]


def test_the_pipeline_is_part_of_the_plan_hash(workspace_factory) -> None:
    plan = workspace_factory(["a", "b"])
    update_plan_file(plan.path, {"compression_pipeline.settings.upload": ["q8"]})
    assert load_plan(plan.path, workspace=plan.workspace).hash != plan.hash


# -- decoding is bounded by one chunk, not by the tensor --------------------------------


class _Discard:
    """A destination that keeps nothing: what a decode allocates is the decode's own."""

    def allocate(self, name, dtype, shape):
        return self

    def write(self, offset, data) -> None:
        pass

    def finish(self, names):
        return {}

    def discard(self) -> None:
        pass


def test_a_dense_chunk_counting_more_elements_than_one_chunk_holds_is_refused() -> None:
    """A tiny zstd frame may not make the receiver inflate a whole (large) tensor at once."""
    n = 1 << 22  # 16 MiB of float32
    plan = CompressionSettings(upload=["q8", "zstd"])
    assembler = TensorAssembler({"x": ("float32", (n,))}, BIG, decoding=Decoding.upload(plan, None, chunk_bytes=1 << 20), destination=_Discard())
    bomb = struct.pack("<Q", n) + zstandard.ZstdCompressor().compress(struct.pack("<ff", 0.0, 1.0) + b"\0" * n)
    with pytest.raises(RefusedError, match=r"chunk of 4194304 elements is more than the \d+ one chunk may hold") as refused:
        assembler.add("x", "float32", (n,), 0, bomb, "q8+zstd")
    assert refused.value.kind == "payload"


def test_a_sparse_chunk_spanning_a_large_tensor_decodes_in_bounded_pieces() -> None:
    import tracemalloc

    n = 1 << 24  # 64 MiB of float32, one top-k chunk of 3 entries spans it all
    plan = CompressionSettings(upload=["topk"])
    written: list[tuple[int, int]] = []

    class _Record(_Discard):
        def write(self, offset, data) -> None:
            chunk = np.frombuffer(data, dtype="<f4")
            if chunk.any():
                written.append((offset // 4 + int(np.flatnonzero(chunk)[0]), float(chunk[chunk != 0][0])))

    assembler = TensorAssembler({"x": ("float32", (n,))}, BIG, decoding=Decoding.upload(plan, None, chunk_bytes=1 << 20), destination=_Record())
    tracemalloc.start()
    try:
        assembler.add("x", "float32", (n,), 0, _sparse(n, [5, 1 << 22, n - 1], [1.0, 2.0, 3.0]), "topk")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert written == [(5, 1.0), (1 << 22, 2.0), (n - 1, 3.0)]
    assert peak < 8 << 20, f"decoding one sparse chunk allocated {peak} bytes"
