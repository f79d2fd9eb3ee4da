"""fx dashboard without a browser: the events file, the curves read as metrics.jsonl grows, the
JSON endpoint after a real (in-process) federation, and the token on every request."""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from test_inprocess_federation import run_federation

from accord.aggregator.event_log import REFUSAL_SECONDS, EventLog, events_sink, read_events
from accord.aggregator.events import ResultFailed, RoundOpened
from accord.cli.main import main
from accord.dashboard.curves import MAX_SITE_CURVES, MetricCurves
from accord.dashboard.server import DashboardServer, new_token
from accord.dashboard.view import DashboardView


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_refusals_are_written_at_most_once_a_second_and_counted(tmp_path: Path) -> None:
    clock = Clock()
    log = EventLog(tmp_path / "events.jsonl", clock=clock)
    for _ in range(500):  # a flood within one second: one line
        log.refused("collaborator 'mallory' is not in the plan")
    clock.now += REFUSAL_SECONDS
    log.refused("x" * 5000)  # the next line carries the count of those held back, its reason cut
    events = read_events(log.path, 10)
    assert [e["kind"] for e in events] == ["refused", "refused"]
    assert events[0]["more"] == 0 and events[1]["more"] == 499
    assert len(events[1]["reason"]) <= 300 and events[1]["reason"].endswith("(cut short)")
    for _ in range(3):  # held back, then the flood stops: the next event says how many first
        log.refused("again")
    log.write("round_opened", round=1, cohort=2, final=False)
    held, opened = read_events(log.path, 2)
    assert (held["kind"], held["reason"], held["more"]) == ("refused", "", 3) and opened["kind"] == "round_opened"


def test_the_sink_writes_engine_events_and_a_fresh_log_starts_empty(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text('{"at": 1, "kind": "old"}\n')
    sink = events_sink(EventLog(path, fresh=True))
    sink(RoundOpened(3, ("a", "b", "c"), {}, False))
    sink(ResultFailed(3, "b", "out of memory\n<script>"))
    events = read_events(path, 10)
    assert [(e["kind"], e["round"]) for e in events] == [("round_opened", 3), ("result_failed", 3)]
    assert events[0]["cohort"] == 3 and events[1]["reason"] == "out of memory\n<script>"


def test_read_events_keeps_the_last_and_skips_a_line_cut_short(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "events.jsonl")
    for number in range(200):
        log.write("round_opened", round=number, cohort=1, final=False)
    with log.path.open("a") as out:
        out.write('{"at": 1, "kind": "round_cl')  # a killed writer
    events = read_events(log.path, 5)
    assert [e["round"] for e in events] == [195, 196, 197, 198, 199]
    assert read_events(tmp_path / "missing.jsonl", 5) == []


def _record(round_number: int, origin: str, value: float, metric: str = "accuracy") -> str:
    return json.dumps({"round": round_number, "origin": origin, "task": "validate", "metric": metric, "value": value}) + "\n"


def test_curves_read_only_what_was_appended_and_start_over_when_the_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    curves = MetricCurves(path)
    curves.refresh()
    assert curves.as_json() == {"aggregated": {}, "sites": {}, "left_out": 0}
    path.write_text(_record(0, "aggregator", 0.5) + _record(0, "site1", 0.4))
    curves.refresh()
    with path.open("a") as out:
        out.write(_record(1, "aggregator", 0.7) + '{"round": 2, "origin": "aggre')  # the last line is being written
    curves.refresh()
    assert curves.as_json()["aggregated"] == {"validate/accuracy": [(0, 0.5), (1, 0.7)]}
    with path.open("a") as out:
        out.write('gator", "task": "validate", "metric": "accuracy", "value": 0.9}\n')
    curves.refresh()
    assert curves.as_json()["aggregated"]["validate/accuracy"][-1] == (2, 0.9)
    assert curves.as_json()["sites"] == {"validate/accuracy": {"curves": {"site1": [(0, 0.4)]}, "total": 1}}
    replaced = tmp_path / "metrics.new"  # a resume rewrites the file (atomic_write: a new inode)
    replaced.write_text(_record(0, "aggregator", 0.25))
    os.replace(replaced, path)
    curves.refresh()
    assert curves.as_json() == {"aggregated": {"validate/accuracy": [(0, 0.25)]}, "sites": {}, "left_out": 0}


def test_curves_send_a_bounded_number_of_sites(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(_record(0, f"site{i:03d}", 0.1) for i in range(100)) + "not json\n" + _record(0, "x", float("nan")))
    curves = MetricCurves(path)
    curves.refresh()
    sent = curves.as_json()["sites"]["validate/accuracy"]
    assert sent["total"] == 100 and len(sent["curves"]) == MAX_SITE_CURVES
    assert "x" not in sent["curves"]  # a value that is not finite is left out


def get(url: str, token: str | None = None) -> tuple[int, str, dict[str, str]]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read().decode(), dict(answer.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


@pytest.fixture
def finished_federation(workspace_factory):
    plan = workspace_factory(["alpha", "beta"], rounds=1)
    runtime, _ = run_federation(plan, ["alpha", "beta"])
    runtime.close()  # the last round's files are written
    return plan


def test_the_json_endpoint_shows_a_finished_federation_and_refuses_without_the_token(finished_federation) -> None:
    plan = finished_federation
    token = new_token()
    server = DashboardServer(DashboardView(plan), token)
    server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        assert server.url == f"{base}/?token={token}"
        for path in ("/", "/api/state", "/nothing"):
            status, body, headers = get(base + path)
            assert status == 401 and "token" in body and headers["WWW-Authenticate"].startswith("Bearer")
            assert get(base + path + "?token=wrong")[0] == 403
            assert get(base + path, token="wrong")[0] == 403
            assert get(f"{base}{path}?token=wrong", token=token)[0] == 403  # every token given must be right
        post = urllib.request.Request(f"{base}/api/state?token={token}", data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(post, timeout=30)
        assert refused.value.code == 501  # only GET
        assert get(f"{base}/../plan/plan.yaml?token={token}")[0] == 404  # no path from a request is opened
        assert get(f"{base}/save/last.safetensors", token=token)[0] == 404

        status, page, headers = get(f"{base}/?token={token}")
        assert status == 200 and '<svg id="curve"' in page
        nonce = headers["Content-Security-Policy"].split("'nonce-", 1)[1].split("'", 1)[0]
        assert f'<script nonce="{nonce}">' in page and "default-src 'none'" in headers["Content-Security-Policy"]
        assert headers["Cache-Control"] == "no-store" and "http" not in page.split("<script", 1)[1].replace(
            "http://www.w3.org/2000/svg", ""
        )  # nothing loaded from elsewhere

        status, body, headers = get(f"{base}/api/state", token=token)
        assert status == 200 and headers["Content-Type"] == "application/json"
        state = json.loads(body)
    finally:
        server.shutdown()
    federation = state["federation"]
    assert federation["finished"] and not federation["running"] and federation["round"] == 2
    assert state["plan_hash"] == plan.hash
    accuracy = state["curves"]["aggregated"]["aggregated_model_validation/accuracy"]
    assert [point[0] for point in accuracy] == [0, 1]  # the round and the final validation
    assert set(state["curves"]["sites"]["aggregated_model_validation/accuracy"]["curves"]) == {"alpha", "beta"}
    kinds = [e["kind"] for e in state["events"]]
    # round 0 opened before the sink subscribed; the engine opens the next round before it announces a close
    assert kinds == ["started", "round_opened", "round_closed", "round_closed"], kinds
    assert [e["round"] for e in state["events"] if e["kind"] == "round_closed"] == [0, 1]
    assert {"init.safetensors", "best.safetensors", "last.safetensors"} <= {m["name"] for m in state["models"]}


def test_the_json_endpoint_says_when_no_round_is_saved_yet(workspace_factory) -> None:
    plan = workspace_factory(["alpha"], rounds=1)
    view = DashboardView(plan)
    state = view.snapshot()
    assert "holds no saved round" in state["federation"]["waiting"]
    assert state["events"] == [] and state["models"] == [] and state["curves"] == {"aggregated": {}, "sites": {}, "left_out": 0}


def test_a_busy_port_ends_in_one_line(workspace_factory, capsys) -> None:
    plan = workspace_factory(["alpha"], rounds=1)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert main(["dashboard", "-w", str(plan.workspace), "--port", str(taken.getsockname()[1])]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "the dashboard cannot listen on 127.0.0.1:" in err and "choose another --port" in err
