"""The aggregator serves with BLAS on one thread (aggregator/serve.py): BLAS's spinning threads
made each update's change norms, on the acknowledgement's path, 2-3x slower on a busy machine."""

from __future__ import annotations

import pytest

from accord.aggregator import serve
from accord.pki import make_federation_pki
from accord.workspace.initialize import initialize_model

threadpoolctl = pytest.importorskip("threadpoolctl")


def blas_threads() -> list[int]:
    return [lib["num_threads"] for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"]


def test_the_aggregator_serves_with_blas_on_one_thread(workspace_factory, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = workspace_factory(["c1"], overrides={"network.settings.agg_addr": "localhost"})
    make_federation_pki(plan.resolve_path(plan.model.network.settings.cert_dir), "localhost", ["c1"])
    initialize_model(plan)
    before = blas_threads()
    seen: list[list[int]] = []
    monkeypatch.setattr(serve, "_serve", lambda *args: seen.append(blas_threads()))
    serve.start_aggregator(plan)
    assert seen == [[1] * len(before)] and before
    assert blas_threads() == before  # an aggregator started in a notebook's process gives it back
