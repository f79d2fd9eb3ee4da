"""The site's side of the compression pipeline: encoding after the client mods, relative to the
round's global model, error feedback kept across rounds, and an update that cannot be encoded."""

from __future__ import annotations

import numpy as np
import pytest
from test_mods import GLOBAL, FakeClient, FakeRunner, assigned

from accord.collaborator.collaborator import Collaborator, SiteFailure
from accord.messages import Action, TaskAssignment, TaskResult
from accord.mods.clip_update import ClipUpdate
from accord.plan.compression import CompressionSettings
from accord.tensors.codec import TensorAssembler
from accord.tensors.compression import Encoded
from accord.tensors.encodings import Decoding
from accord.tensors.state import tensor_specs


class EncodingClient(FakeClient):
    """Records what the site sends with its encoding."""

    def __init__(self, rounds: int) -> None:
        super().__init__(assigned({}))
        self.assignments = [TaskAssignment(Action.RUN, r, assigned({}).tasks) for r in range(rounds)] + [TaskAssignment(Action.QUIT, rounds)]
        self.encoded: list[tuple[TaskResult, Encoded | None]] = []

    def send_result(self, result: TaskResult, encoded: Encoded | None = None) -> None:
        self.encoded.append((result, encoded))


def decoded(plan: CompressionSettings, encoded: Encoded) -> dict[str, np.ndarray]:
    assembler = TensorAssembler(tensor_specs(GLOBAL), 1 << 20, decoding=Decoding.upload(plan, GLOBAL))
    for name, dtype, shape, offset, encoding, data in encoded.chunks(1024):
        assembler.add(name, dtype, shape, offset, data, encoding)
    return assembler.finish()


def test_the_site_encodes_after_its_mods_relative_to_the_global_model() -> None:
    plan = CompressionSettings(upload=["q8"])
    client = EncodingClient(1)
    site = Collaborator("site1", client, FakeRunner(), data=object(), mods=[ClipUpdate(max_norm=0.5)], compression=plan)
    site.run()
    ((result, encoded),) = client.encoded
    assert encoded is not None and not result.is_delta
    clipped = result.tensors["w"] - GLOBAL["w"]  # the mod's output, at full precision: norm 0.5
    assert np.isclose(np.linalg.norm(clipped), 0.5, rtol=1e-5)
    got = decoded(plan, encoded)
    step = (clipped.max() - clipped.min()) / 255
    assert np.abs(got["w"] - result.tensors["w"]).max() <= step * 1.001 + 1e-7  # q8 of the clipped change
    assert got["steps"] == GLOBAL["steps"]


def test_the_sites_residual_carries_what_topk_left_out_into_the_next_round() -> None:
    plan = CompressionSettings(upload=["topk"], topk_ratio=0.1)  # 2 of the 12 elements of w
    client = EncodingClient(2)
    site = Collaborator("site1", client, FakeRunner(), data=object(), compression=plan)
    site.run()
    (_, one), (_, two) = client.encoded
    sent_first = decoded(plan, one)["w"] - GLOBAL["w"]
    sent_second = decoded(plan, two)["w"] - GLOBAL["w"]
    assert (sent_first != 0).sum() == 2
    # each round trains w by +1 from the same global model: round two's change is 1 + what round one left out
    assert np.allclose(sent_second[sent_second != 0], 2.0)


def test_an_update_that_cannot_be_encoded_is_reported_as_the_sites_failure() -> None:
    class Diverged(FakeRunner):
        def train(self, data, **kwargs):
            output = super().train(data, **kwargs)
            self.weights["w"][0, 0] = np.inf
            return output

    client = EncodingClient(1)
    site = Collaborator("site1", client, Diverged(), data=object(), compression=CompressionSettings(upload=["q4"]))
    with pytest.raises(SiteFailure, match="the update of tensor 'w' holds values that are not finite"):
        site.run()
    ((report, encoded),) = client.encoded
    assert report.failure == "the update could not be encoded (compression_pipeline)" and report.tensors is None and encoded is None
