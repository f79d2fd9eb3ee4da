"""The plan's metrics sinks without a federation: what the plan accepts, a missing extra, the
byte counters, and the Prometheus endpoint's bounds (real HTTP on 127.0.0.1)."""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from accord.aggregator.sinks.plan_sinks import open_sinks
from accord.aggregator.sinks.prometheus import MAX_METRIC_SERIES, PrometheusSink
from accord.aggregator.sinks.queued import QueuedSink
from accord.cli.main import main
from accord.errors import AccordError, PlanError
from accord.experiment.local import prepare_workspace
from accord.metric_records import MetricRecord
from accord.transport.traffic import Traffic

METRICS = "aggregator.settings.metrics"


def test_paths_stay_inside_the_workspace_and_mlflow_takes_a_server_or_a_folder(workspace_factory) -> None:
    with pytest.raises(PlanError, match=r"aggregator\.settings\.metrics\.tensorboard\.log_dir is '\.\./board'.*outside"):
        workspace_factory(["a"], overrides={METRICS: {"tensorboard": {"log_dir": "../board"}}})
    with pytest.raises(PlanError, match=r"tracking_uri.*outside"):
        workspace_factory(["a"], overrides={METRICS: {"mlflow": {"tracking_uri": "/tmp/mlruns"}}})
    with pytest.raises(PlanError, match="expected an http:// or https:// tracking server"):
        workspace_factory(["a"], overrides={METRICS: {"mlflow": {"tracking_uri": "sqlite:///mlflow.db"}}})
    served = workspace_factory(["a"], overrides={METRICS: {"mlflow": {"tracking_uri": "https://mlflow.example:5000"}}})
    assert served.model.aggregator.settings.metrics.mlflow.tracking_uri == "https://mlflow.example:5000"
    plain = workspace_factory(["a"])
    assert plain.model.aggregator.settings.metrics.model_dump() == {
        "tensorboard": None,
        "mlflow": None,
        "prometheus": None,
        "callback": None,
    }
    assert open_sinks(plain).records == []  # off by default


@pytest.mark.parametrize(
    ("sink", "module", "extra"),
    [("tensorboard", "tensorboard", "tensorboard"), ("mlflow", "mlflow", "mlflow"), ("prometheus", "prometheus_client", "prometheus")],
)
def test_a_missing_extra_is_one_line_before_anything_opens(
    workspace_factory, monkeypatch: pytest.MonkeyPatch, sink: str, module: str, extra: str
) -> None:
    plan = workspace_factory(["a"], overrides={METRICS: {"tensorboard": {}, sink: {}}})
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if it were not installed
    with pytest.raises(AccordError, match=rf"aggregator\.settings\.metrics\.{sink} needs the {module} package") as caught:
        open_sinks(plan)
    assert caught.value.fix == f"pip install 'accord[{extra}]'"
    assert not (plan.workspace / "logs" / "tensorboard").exists()  # nothing was opened


def test_fx_aggregator_start_without_the_extra_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = prepare_workspace(tmp_path / "ws", collaborators=1, rounds=1, overrides={METRICS: {"prometheus": {"port": 0}}})
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    assert main(["aggregator", "start", "-w", str(plan.workspace)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'accord[prometheus]'" in err, err


def test_fx_plot_without_matplotlib_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], workspace_factory
) -> None:
    plan = workspace_factory(["a"])
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["plot", "-w", str(plan.workspace)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "fx plot needs the matplotlib package" in err and "accord[plot]" in err, err


def test_traffic_takes_what_passed_since_the_last_take() -> None:
    traffic = Traffic()
    read = traffic.reader(bytes.upper)
    write = traffic.writer(bytes.lower)
    assert read(b"abc") == b"ABC"
    assert write(b"XY") == b"xy"
    assert traffic.take() == (3, 2)
    read(b"12345")
    assert traffic.take() == (5, 0)
    assert traffic.take() == (0, 0)
    assert (traffic.received, traffic.sent) == (8, 2)


def test_a_failing_writer_is_warned_of_once_and_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    written: list[int] = []

    def write(records) -> None:
        if records[0].round % 2:
            raise OSError("tracking server unreachable")
        written.append(records[0].round)

    sink = QueuedSink(write, "test sink")
    for number in range(5):
        sink([MetricRecord(number, "aggregator", "train", "loss", 1.0)])  # queued: returns at once
    sink.close()
    assert written == [0, 2, 4]  # in order, the failed rounds left out
    assert sink.failures == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        "test sink: a round's metrics were not written: tracking server unreachable",
        "test sink: the metrics of 2 rounds were not written",
    ]


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode("utf-8")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value for family in text_string_to_metric_families(text) for s in family.samples
    }


def test_prometheus_shows_aggregated_metrics_only_and_caps_their_series() -> None:
    sink = PrometheusSink("127.0.0.1", 0)
    try:
        assert sink._server.server_address[0] == "127.0.0.1"
        records = [MetricRecord(0, "aggregator", "train", f"m{i}", float(i)) for i in range(MAX_METRIC_SERIES + 40)]
        records += [
            MetricRecord(0, "site1", "train", "loss", 9.0),  # a site's: no series of its own
            MetricRecord(0, "aggregator", "round", "bytes_received", 1234.0),
            MetricRecord(0, "aggregator", "round", "round_seconds", 0.5),
        ]
        sink.records(records)
        sink.records([MetricRecord(1, "aggregator", "round", "bytes_received", 100.0)])
        samples = scrape(sink.port)
        shown = [key for key in samples if key[0] == "accord_metric"]
        assert len(shown) == MAX_METRIC_SERIES
        assert samples[("accord_metric", (("metric", "m3"), ("task", "train")))] == 3.0
        assert not any("site1" in str(key) for key in samples)
        assert samples[("accord_round_received_bytes", ())] == 100.0
        assert samples[("accord_received_bytes_total", ())] == 1334.0
        assert samples[("accord_round_seconds", ())] == 0.5
        assert samples[("accord_last_closed_round", ())] == 1
        with pytest.raises(AccordError, match=rf"cannot serve on 127\.0\.0\.1:{sink.port}") as busy:
            PrometheusSink("127.0.0.1", sink.port)
        assert "\n" not in str(busy.value)
    finally:
        sink.close()
