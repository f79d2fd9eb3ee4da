"""fx dashboard under many sites and a flooding neighbour: a round's close names a bounded
number of sites, the events list survives long lines, the curves are read in blocks and a
bounded number of metrics is sent, and refused requests are logged at most once a second."""

from __future__ import annotations

import json
import logging
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_dashboard import get

from accord.aggregator.event_log import MAX_NAMES, EventLog, events_sink, read_events
from accord.aggregator.events import RoundClosed, RoundOutcome
from accord.dashboard import curves as curves_module
from accord.dashboard import server as server_module
from accord.dashboard import view as view_module
from accord.dashboard.curves import MAX_KEYS, MetricCurves
from accord.dashboard.server import DashboardServer, new_token
from accord.dashboard.view import EVENTS_SHOWN, SITES_SHOWN, DashboardView
from accord.tensors.state import ModelState


def _closed(round_number: int, stragglers: int, failed: int) -> RoundClosed:
    outcome = RoundOutcome(
        round_number=round_number,
        model=ModelState({"w": np.zeros(1, dtype=np.float32)}),
        metrics={},
        records=[],
        best_model=None,
        best_score=None,
        wall_seconds=1.0,
        slowest_task_seconds=1.0,
        stragglers=tuple(f"site{i:05d}" for i in range(stragglers)),
        failed=tuple(f"bad{i:05d}" for i in range(failed)),
    )
    return RoundClosed(outcome)


def test_a_close_names_a_bounded_number_of_sites_and_counts_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    sink = events_sink(EventLog(path))
    sink(_closed(3, stragglers=8000, failed=25))
    sink(_closed(4, stragglers=2, failed=0))
    assert max(len(line) for line in path.read_bytes().splitlines()) < 4096  # was ~73 KB
    big, small = read_events(path, EVENTS_SHOWN)
    assert big["stragglers"] == [f"site{i:05d}" for i in range(MAX_NAMES)] and big["stragglers_more"] == 8000 - MAX_NAMES
    assert len(big["failed"]) == MAX_NAMES and big["failed_more"] == 25 - MAX_NAMES
    assert small["stragglers"] == ["site00000", "site00001"] and small["stragglers_more"] == 0 and small["failed_more"] == 0


def test_read_events_reaches_back_past_lines_longer_than_its_first_read(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    log.write("round_opened", round=1, cohort=2, final=False)
    log.write("round_closed", round=1, seconds=1.0, stragglers=["s" * 100_000], failed=[], bounds=[])  # an older writer's line
    log.write("round_opened", round=2, cohort=2, final=False)
    events = read_events(path, EVENTS_SHOWN)
    assert [(e["kind"], e["round"]) for e in events] == [("round_opened", 1), ("round_closed", 1), ("round_opened", 2)]
    assert [e["round"] for e in read_events(path, 2)] == [1, 2]


def _record(key: str, origin: str = "aggregator", round_number: int = 0) -> str:
    task, metric = key.split("/")
    return json.dumps({"round": round_number, "origin": origin, "task": task, "metric": metric, "value": 0.5}) + "\n"


def test_a_bounded_number_of_metrics_is_sent_the_aggregated_first(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    aggregated = [f"validate/m{i:04d}" for i in range(MAX_KEYS + 50)]
    site_only = [f"train/s{i:04d}" for i in range(30)]
    path.write_text("".join(_record(key) for key in reversed(aggregated)) + "".join(_record(key, "site1") for key in site_only))
    curves = MetricCurves(path)
    curves.refresh()
    sent = curves.as_json()
    assert sorted(sent["aggregated"]) == aggregated[:MAX_KEYS] and sent["sites"] == {}
    assert sent["left_out"] == 50 + 30
    path.write_text(_record("validate/loss") + _record("validate/loss", "site1") + _record("train/loss", "site1"))
    curves.refresh()
    sent = curves.as_json()
    assert sent["left_out"] == 0 and list(sent["aggregated"]) == ["validate/loss"]
    assert set(sent["sites"]) == {"validate/loss", "train/loss"}


class _Reads:
    """A file that records the size of each read."""

    def __init__(self, file: Any, sizes: list[int]) -> None:
        self._file, self._sizes = file, sizes

    def __enter__(self) -> _Reads:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()

    def read(self, size: int = -1) -> bytes:
        self._sizes.append(size)
        return self._file.read(size)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


def test_curves_are_read_in_bounded_blocks_and_a_line_too_long_is_skipped(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "metrics.jsonl"
    lines = [_record("validate/accuracy", "aggregator", r) for r in range(40)]
    path.write_text("".join(lines[:20]) + "x" * 5000 + "\n" + "".join(lines[20:]))
    monkeypatch.setattr(curves_module, "READ_BLOCK", 512)
    monkeypatch.setattr(curves_module, "MAX_LINE_BYTES", 1000)
    sizes: list[int] = []
    real_open = Path.open
    monkeypatch.setattr(Path, "open", lambda self, *a, **k: _Reads(real_open(self, *a, **k), sizes))
    curves = MetricCurves(path)
    curves.refresh()
    assert sizes and all(0 < size <= 512 for size in sizes)
    assert [r for r, _ in curves.as_json()["aggregated"]["validate/accuracy"]] == list(range(40))
    with real_open(path, "a") as out:  # a line being written is left for the next poll
        out.write(_record("validate/accuracy", "aggregator", 40)[:30])
    curves.refresh()
    with real_open(path, "a") as out:
        out.write(_record("validate/accuracy", "aggregator", 40)[30:])
    curves.refresh()
    assert curves.as_json()["aggregated"]["validate/accuracy"][-1] == (40, 0.5)


@pytest.fixture
def served(workspace_factory):
    plan = workspace_factory(["alpha"], rounds=1)
    token = new_token()
    server = DashboardServer(DashboardView(plan), token)
    server.start()
    yield f"http://127.0.0.1:{server.port}", token
    server.shutdown()


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now


def test_refused_requests_are_logged_at_most_once_a_second_and_the_favicon_is_not_one(served, caplog, monkeypatch) -> None:
    base, token = served
    clock = _Clock()
    monkeypatch.setattr(server_module, "time", types.SimpleNamespace(monotonic=clock.monotonic))
    caplog.set_level(logging.WARNING, logger="accord.dashboard")
    status, body, _ = get(base + "/favicon.ico")  # a browser asks with no token on each page load
    assert (status, body) == (204, "") and caplog.records == []
    for _ in range(30):
        assert get(base + "/api/state")[0] == 401
    assert len(caplog.records) == 1 and "no token" in caplog.text
    clock.now += server_module.REFUSAL_LOG_SECONDS
    assert get(base + "/api/state", token="wrong")[0] == 403
    assert len(caplog.records) == 2 and "a wrong token (and 29 more refused since the last line)" in caplog.records[1].getMessage()
    assert get(base + "/api/state", token=token)[0] == 200


def test_a_poll_names_a_bounded_number_of_sites_of_each_list_and_counts_the_rest(served, monkeypatch) -> None:
    sites = [f"site{i:05d}" for i in range(8000)]
    status = {
        "rounds_to_train": 5,
        "total_rounds": 6,
        "opened_at": 0.0,
        "policy": {"policy": "wait_for_all", "min_reports": 1, "cutoff_seconds": None, "round_deadline_seconds": 60.0},
        "assigned": len(sites),
        "reported": sites[:3000][::-1],  # in the engine's order, not by name
        "outstanding": {name: ["train"] for name in sites[3000:]},
        "previous_stragglers": sites[:7],
        "previous_bounds": [f"{name}: norm clipped" for name in sites[:25]],
    }
    state = {"status": status, "round": 1, "finished": False, "running": True, "matches_plan": True, "pid": 1, "updated_at": 0.0}
    monkeypatch.setattr(view_module, "read_status", lambda plan: state)
    base, token = served
    code, body, _ = get(f"{base}/api/state", token=token)
    assert code == 200 and len(body) < 16_384  # 8000 sites' names would be ~250 KB
    federation = json.loads(body)["federation"]
    assert federation["reported"] == sites[:SITES_SHOWN] and federation["reported_more"] == 3000 - SITES_SHOWN
    assert federation["outstanding"] == {name: ["train"] for name in sites[3000 : 3000 + SITES_SHOWN]}
    assert federation["outstanding_more"] == 5000 - SITES_SHOWN and federation["late"]  # past the 60 s deadline, owing
    assert federation["previous_stragglers"] == sites[:7] and federation["previous_stragglers_more"] == 0
    assert len(federation["previous_bounds"]) == SITES_SHOWN and federation["previous_bounds_more"] == 25 - SITES_SHOWN
