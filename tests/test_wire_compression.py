"""The compression pipeline over real mutual TLS on 127.0.0.1 (the fake service of test_transport):
encoded uploads rebuilt against the global model, zstd downloads, and hostile chunks refused
from both sides (the refusing end logs why, the refused end gets a clear message)."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import zstandard
from test_transport import FakeService, Federation, a_result, pki, small_model  # noqa: F401  (pki is a fixture)

from accord.errors import AccordError, RefusedError
from accord.plan.compression import CompressionSettings
from accord.tensors.compression import UpdateEncoder
from accord.transport import wire
from accord.transport.proto import accord_pb2 as pb

UPLOAD = CompressionSettings(upload=["topk", "q8", "zstd"], download=["zstd"], topk_ratio=0.05)


@pytest.fixture
def served(pki):  # noqa: F811
    federations: list[Federation] = []

    def start(compression: CompressionSettings) -> Federation:
        service = FakeService(small_model())
        service.round_open = True
        federations.append(Federation(pki, service.model, service=service, compression=compression))
        return federations[-1]

    yield start
    for federation in federations:
        federation.close()


def encoded_result(model):
    result = a_result(model, is_delta=False)  # weights: their changes travel, added back to the model
    trained = {k: (v + 0.1).astype(v.dtype) if v.dtype.kind == "f" else v for k, v in model.items()}
    result.tensors = trained
    return result, UpdateEncoder(UPLOAD, seed=0).encode(trained, model, is_delta=False)


def test_an_encoded_upload_is_rebuilt_on_the_global_model(served) -> None:
    federation = served(UPLOAD)
    model = federation.service.model
    result, encoded = encoded_result(model)
    federation.client("col1", compression=UPLOAD).send_result(result, encoded)
    ((got, _),) = federation.service.submissions
    weight, base = got.tensors["dense.weight"], model["dense.weight"]
    moved = weight != base
    assert moved.sum() == int(np.ceil(0.05 * base.size))  # top-k: only those changed
    assert np.allclose(weight[moved], base[moved] + 0.1, atol=1e-6)  # every change 0.1: q8 of a flat range is exact
    assert got.tensors["steps"] == model["steps"] and got.tensors["empty"].shape == (0, 3)


def test_a_zstd_download_arrives_exact_and_a_site_without_it_refuses_it(served) -> None:
    federation = served(UPLOAD)
    model = federation.service.model
    got = federation.client("col1", compression=UPLOAD).get_model(2)
    assert all(np.array_equal(got[k], v) for k, v in model.items())
    with pytest.raises(AccordError, match=r"arrived in encoding 'zstd'; the plan's compression_pipeline.download sends a float32 tensor as 'raw'"):
        federation.client("col2").get_model(2)


def _sparse(count: int, indices: list[int]) -> bytes:
    body = struct.pack("<I", len(indices)) + np.array(indices, "<u4").tobytes() + struct.pack("<ff", 0.0, 1.0) + bytes(len(indices))
    return struct.pack("<Q", count) + zstandard.ZstdCompressor().compress(body)


HOSTILE_UPLOADS = {
    "an out-of-range index": (lambda size: _sparse(size, [1, size]), "indices are not increasing, distinct and below its count 2048"),
    "a repeated index": (lambda size: _sparse(size, [5, 5]), "indices are not increasing, distinct"),
    "a bomb": (
        lambda size: struct.pack("<Q", size) + zstandard.ZstdCompressor().compress(bytes(1 << 26)),
        "does not decompress within 10252 bytes",
    ),
}


@pytest.mark.parametrize("attack", sorted(HOSTILE_UPLOADS))
def test_a_hostile_upload_chunk_is_refused_and_nothing_submitted(served, monkeypatch, attack: str) -> None:
    craft, why = HOSTILE_UPLOADS[attack]
    federation = served(UPLOAD)
    model = federation.service.model
    result, encoded = encoded_result(model)
    plain = wire.encoded_tensor_chunks

    def hostile(state, chunk_bytes, in_result=False, encoded=None):
        for data in plain(state, chunk_bytes, False, encoded):
            chunk = pb.TensorChunk.FromString(data)
            if chunk.name == "dense.weight":
                chunk.data = craft(2048)
            yield pb.ResultChunk(tensor=chunk).SerializeToString() if in_result else chunk.SerializeToString()

    monkeypatch.setattr(wire, "encoded_tensor_chunks", hostile)
    with pytest.raises(RefusedError, match=why) as refused:
        federation.client("col1", compression=UPLOAD).send_result(result, encoded)
    assert refused.value.kind == "payload"
    assert federation.service.submissions == []
    assert any(why in line for line in federation.refusals)  # the aggregator says why too


def test_an_upload_in_an_encoding_the_plan_does_not_name_is_refused_from_its_first_chunk(served) -> None:
    federation = served(CompressionSettings(upload=["q8"]))
    model = federation.service.model
    result, encoded = encoded_result(model)  # the site's plan says topk+q8+zstd
    with pytest.raises(RefusedError, match=r"arrived in encoding 'topk\+q8\+zstd'; the plan's compression_pipeline.upload sends a float32 tensor as 'q8'"):
        federation.client("col1").send_result(result, encoded)
    assert federation.service.submissions == []
    assert any("encoding 'topk+q8+zstd'" in line for line in federation.refusals)


@pytest.mark.parametrize(
    ("encoding", "data", "why"),
    [
        (
            "q8",
            struct.pack("<Qff", 2048, 0.0, 1.0) + bytes(2048),
            r"arrived in encoding 'q8'; the plan's compression_pipeline.download sends a float32 tensor as 'zstd'",
        ),
        ("zstd", struct.pack("<Q", 2048) + zstandard.ZstdCompressor().compress(bytes(1 << 26)), "does not decompress within 8192 bytes"),
    ],
)
def test_a_hostile_aggregators_download_is_refused_at_the_site(served, monkeypatch, encoding, data, why) -> None:
    federation = served(UPLOAD)

    def hostile(state, chunk_bytes, in_result=False, encoded=None):
        chunk = pb.TensorChunk(name="dense.weight", dtype="float32", shape=[64, 32], offset=0, data=data, encoding=encoding)
        yield chunk.SerializeToString()

    monkeypatch.setattr(wire, "encoded_tensor_chunks", hostile)
    specs = federation.service.expected_tensors()
    with pytest.raises(AccordError, match=r"sent a model that is not this site's model: tensor 'dense\.weight'") as refused:
        federation.client("col1", compression=UPLOAD).get_model(2, expected=specs)
    assert refused.match(why)
