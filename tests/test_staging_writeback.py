"""A staged result's writing to disk starts as its chunks arrive (aggregator/staging.py), so
the flush before the acknowledgement finds little left; the file's bytes are unchanged."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

from accord.aggregator import staging
from accord.aggregator.staging import StagedFile
from accord.tensors.state import StateView, tensor_specs


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sync_file_range is Linux's")
def test_linux_has_the_writeback_starter() -> None:
    assert staging._sync_file_range is not None


def test_the_writeback_starts_once_a_mib_has_gathered_and_the_rest_goes_with_the_flush(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[tuple[int, int, int]] = []
    real = staging._sync_file_range

    def record(fd: int, offset: int, nbytes: int, flags: int) -> int:
        started.append((offset, nbytes, flags))
        return 0 if real is None else real(fd, offset, nbytes, flags)

    monkeypatch.setattr(staging, "_sync_file_range", record)
    state = {"w": np.arange(1_000_000, dtype=np.float32), "b": np.ones(10, dtype=np.float64)}
    staged = StagedFile(tmp_path, tensor_specs(state), "a test result")
    assert started == []  # the header alone: too little to start
    chunk = 2**18
    data = state["w"].view(np.uint8)
    for at in range(0, data.size, chunk):
        staged.allocate("w", np.dtype(np.float32), (1_000_000,)).write(at, data[at : at + chunk].data)
    staged.allocate("b", np.dtype(np.float64), (10,)).write(0, state["b"].view(np.uint8).data)
    assert [flags for _, _, flags in started] == [2] * len(started) and len(started) == 3  # 4 MB of w: three whole MiB
    assert started[0][0] == 0 and all(size >= staging.WRITEBACK_BYTES for _, size, _ in started)
    assert all(a + n == b for (a, n, _), (b, _, _) in itertools.pairwise(started))  # each byte started once, in order
    assert started[-1][0] + started[-1][1] < staged.path.stat().st_size  # the tail is the flush's
    name = staged.commit()
    saved = StateView(tmp_path / name)
    assert np.array_equal(saved["w"], state["w"]) and np.array_equal(saved["b"], state["b"])
