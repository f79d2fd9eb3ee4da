"""The aggregator process runs NumPy's BLAS on one thread (aggregator/threads.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from accord.errors import AccordError

SCRIPT = """
import json
import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits
threadpool_limits(limits=2, user_api="blas")  # as on a 2-core machine, whatever this one has
before = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
from accord.aggregator.threads import limit_blas_threads
limit_blas_threads()
after = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
x = np.ones(1 << 16)
print(json.dumps({"before": before, "after": after, "dot": float(np.dot(x, x))}))
"""


def test_limit_blas_threads_leaves_one_blas_thread_for_the_rest_of_the_process() -> None:
    import json

    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["before"] and seen["before"] != [1] * len(seen["before"])  # the limit is what changed it
    assert seen["after"] == [1] * len(seen["after"])
    assert seen["dot"] == float(1 << 16)


def test_start_aggregator_limits_blas_threads_before_it_serves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before anything else can fail: here the aggregator's certificate is missing."""
    from accord.aggregator import serve
    from accord.experiment.local import prepare_workspace

    plan = prepare_workspace(tmp_path / "ws", collaborators=1, rounds=1)
    shutil.rmtree(plan.resolve_path(plan.model.network.settings.cert_dir))
    calls: list[str] = []
    monkeypatch.setattr(serve, "limit_blas_threads", lambda: calls.append("limited"))
    with pytest.raises(AccordError):
        serve.start_aggregator(plan)
    assert calls == ["limited"]
