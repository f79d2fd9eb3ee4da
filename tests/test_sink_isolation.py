"""A metrics sink cannot stop the aggregator: one that raises is warned of once, then counted,
and the round's close goes on (metrics.jsonl and the other sinks still get the records); one
that hangs holds the aggregator's stop CLOSE_SECONDS at most. And the sinks' imports point
downward: from aggregator/, only events.py and guarded.py."""

from __future__ import annotations

import ast
import threading
from pathlib import Path

import numpy as np
import pytest

import accord.aggregator.sinks
from accord.aggregator import guarded as guarded_module
from accord.aggregator.events import RoundClosed, RoundOpened, RoundOutcome
from accord.aggregator.guarded import Guarded
from accord.aggregator.reporting import metrics_sink
from accord.aggregator.sinks import queued
from accord.aggregator.sinks.plan_sinks import PlanSinks
from accord.aggregator.sinks.prometheus import PrometheusSink
from accord.aggregator.sinks.queued import QueuedSink
from accord.metric_records import MetricRecord, MetricsLog, read_metrics


def closed(number: int) -> RoundClosed:
    model = {"w": np.zeros(2, dtype=np.float32)}
    outcome = RoundOutcome(number, model, {"train/loss": 1.0 / (number + 1)}, [], None, None, 0.5, 0.25)
    return RoundClosed(outcome)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


def test_a_raising_record_sink_never_fails_the_round_close(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    prometheus = PrometheusSink("127.0.0.1", 0)
    try:
        def broken(*_args: object) -> None:
            raise ValueError("label registry is full")

        prometheus._metric = broken  # type: ignore[method-assign]  # as if prometheus-client raised
        got: list[int] = []
        path = tmp_path / "metrics.jsonl"
        sink = metrics_sink(MetricsLog(path), None, [prometheus.records, lambda records: got.append(records[0].round)])
        for number in range(3):
            sink(closed(number))  # raised ValueError out of the round's close before
    finally:
        prometheus.close()
    assert sorted({r.round for r in read_metrics(path)}) == [0, 1, 2]  # metrics.jsonl has every round
    assert got == [0, 1, 2]  # and so has the sink after the broken one
    assert warnings_of(caplog) == ["Prometheus: a round's metrics were not written: label registry is full"]


def test_a_raising_engine_sink_is_warned_of_once(caplog: pytest.LogCaptureFixture) -> None:
    prometheus = PrometheusSink("127.0.0.1", 0)
    try:
        def broken(_value: float) -> None:
            raise RuntimeError("gauge gone")

        prometheus._round.set = broken  # type: ignore[method-assign]
        (engine_sink,) = PlanSinks(prometheus=prometheus).engine
        for number in range(3):
            engine_sink(RoundOpened(number, ("site1",)))
    finally:
        prometheus.close()
    assert warnings_of(caplog) == ["Prometheus: an engine event was not counted: gauge gone"]


def test_failures_past_the_first_are_counted_with_a_line_at_each_power_of_10(caplog: pytest.LogCaptureFixture) -> None:
    def fail(_value: int) -> None:
        raise OSError("")

    guard = Guarded(fail, "sink")
    for value in range(120):
        guard(value)
    assert guard.failures == 120
    assert warnings_of(caplog) == [
        "sink: a round's metrics were not written: OSError",
        "sink: 10 failures so far (a round's metrics were not written)",
        "sink: 100 failures so far (a round's metrics were not written)",
    ]
    assert guarded_module._is_power_of_10(1000) and not guarded_module._is_power_of_10(20)


def close_in_thread(sink: QueuedSink, last=None) -> list[bool]:
    """Close ``sink`` on a thread of the test's, so that a close that hangs fails the test instead of hanging it."""
    answer: list[bool] = []
    closer = threading.Thread(target=lambda: answer.append(sink.close(last)), daemon=True)
    closer.start()
    closer.join(60)
    return answer


def test_a_hung_write_holds_the_close_only_close_seconds(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(queued, "CLOSE_SECONDS", 0.2)
    release = threading.Event()
    sink = QueuedSink(lambda _records: release.wait(), "MLflow run abc")  # a tracking server that stopped answering
    for number in range(3):
        sink([MetricRecord(number, "aggregator", "train", "loss", 1.0)])
    try:
        assert close_in_thread(sink) == [False]
    finally:
        release.set()
    assert warnings_of(caplog) == [
        "MLflow run abc: still busy after 0.2s; the aggregator stops without it: the records of 3 rounds were not written"
    ]


def test_a_hung_closing_call_is_named(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(queued, "CLOSE_SECONDS", 0.2)
    release = threading.Event()
    written: list[int] = []
    sink = QueuedSink(lambda records: written.append(records[0].round), "MLflow run abc")
    sink([MetricRecord(0, "aggregator", "train", "loss", 1.0)])
    try:
        assert close_in_thread(sink, release.wait) == [False]  # ending the run hangs
    finally:
        release.set()
    assert written == [0]
    assert warnings_of(caplog) == ["MLflow run abc: still busy after 0.2s; the aggregator stops without it: its closing call did not finish"]


def test_a_close_that_drains_in_time_calls_last_on_the_thread() -> None:
    seen: list[str] = []
    sink = QueuedSink(lambda records: seen.append(threading.current_thread().name), "TensorBoard")
    sink([MetricRecord(0, "aggregator", "train", "loss", 1.0)])
    assert sink.close(lambda: seen.append(threading.current_thread().name)) is True
    assert seen == ["accord-TensorBoard", "accord-TensorBoard"]


def test_the_sinks_import_only_events_and_guarded_of_the_aggregator() -> None:
    folder = Path(accord.aggregator.sinks.__file__).parent
    imported: set[str] = set()
    for source in folder.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            imported |= {n for n in names if n.startswith("accord.aggregator.") and not n.startswith("accord.aggregator.sinks")}
    assert imported == {"accord.aggregator.events", "accord.aggregator.guarded"}
    for module in imported:  # and neither imports serve.py or the sinks (no cycle)
        text = (folder.parent / f"{module.rsplit('.', 1)[1]}.py").read_text()
        assert "accord.aggregator.serve" not in text and "accord.aggregator.sinks" not in text
