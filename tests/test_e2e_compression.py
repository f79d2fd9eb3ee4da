"""A compression pipeline in real processes (fx aggregator start, fx collaborator start, mutual
TLS on 127.0.0.1): the sites send top-k 1% changes, quantized to 8 bits and zstd-compressed,
and download zstd models; the aggregator rebuilds each update on the round's global model."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST
from test_e2e_site_mods import federate

from accord.experiment.local import prepare_workspace
from accord.runners.base import OPTIMIZER_PREFIX
from accord.tensors.state import load_state

pytestmark = pytest.mark.e2e

PIPELINE = {
    "compression_pipeline.settings.upload": ["topk", "q8", "zstd"],
    "compression_pipeline.settings.download": ["zstd"],
    "compression_pipeline.settings.topk_ratio": 0.01,
}


def test_a_round_of_topk_q8_zstd_changes_only_what_the_sites_sent(tmp_path: Path) -> None:
    """Two sites, one round: each float tensor of the new model differs from the initial one in
    at most the two sites' top 1% (elements neither sent stay exactly as they were), and it did move."""
    plan = prepare_workspace(tmp_path / "ws", 2, 1, overrides={**FAST, **PIPELINE})
    initial = load_state(plan.resolve_path("save/init.safetensors"))
    sites = federate(plan)
    final = load_state(plan.resolve_path("save/last.safetensors"))
    for name, before in initial.items():
        if before.dtype.kind != "f" or not before.size:
            assert np.array_equal(final[name], before)
            continue
        changed = int((final[name] != before).sum())
        assert changed <= 2 * math.ceil(0.01 * before.size), (name, changed, before.size)
        assert changed > 0 or name.startswith(OPTIMIZER_PREFIX), name  # optimizer state is not sent (RESET)
    assert "Traceback" not in sites.log("aggregator")
