"""End to end: the plan's metrics sinks (TensorBoard, MLflow, Prometheus) fed by a real
federation of `fx` processes over mutual TLS, read back with each tool's own reader."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import FAST, wait_listening

from accord.experiment.local import free_port, fx_command, prepare_workspace, run_processes
from accord.metric_records import MetricRecord, read_metrics
from accord.tensors.state import load_state

pytestmark = pytest.mark.e2e

ACCURACY = "aggregator/aggregated_model_validation/accuracy"
SITES = ("collaborator1", "collaborator2")


def aggregated(records: list[MetricRecord], task: str, metric: str) -> dict[int, float]:
    return {r.round: r.value for r in records if r.origin == "aggregator" and r.task == task and r.metric == metric}


def test_tensorboard_and_mlflow_hold_every_round_and_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sinks = {"tensorboard": {"log_dir": "logs/board"}, "mlflow": {"tracking_uri": "logs/mlruns", "experiment": "digits"}}
    plan = prepare_workspace(tmp_path / "ws", collaborators=2, rounds=2, overrides={**FAST, "aggregator.settings.metrics": sinks})
    report = run_processes(plan, timeout=300)
    assert report.ok, (plan.workspace / "logs" / "aggregator.log").read_text()
    records = report.records
    accuracy = aggregated(records, "aggregated_model_validation", "accuracy")
    assert sorted(accuracy) == [0, 1, 2]  # two training rounds, then the final validation
    received = aggregated(records, "round", "bytes_received")
    sent = aggregated(records, "round", "bytes_sent")
    assert sorted(received) == sorted(sent) == [0, 1, 2]
    # each training round sends the model to both sites and receives both updates (float32, raw):
    # at least twice the model's bytes each way, and not much more
    model = load_state(plan.resolve_path(plan.model.aggregator.settings.init_state_path))
    model_bytes = sum(array.nbytes for array in model.values())
    for r in (0, 1):
        assert 2 * model_bytes <= received[r] < 3 * model_bytes, (r, received, model_bytes)
        assert 2 * model_bytes <= sent[r] < 3 * model_bytes, (r, sent, model_bytes)
    assert received[2] < model_bytes  # the final validation: metrics only come back

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(plan.workspace / "logs" / "board"))
    board.Reload()
    scalars = {e.step: e.value for e in board.Scalars(ACCURACY)}
    assert scalars == pytest.approx(accuracy, rel=1e-6)  # float32 in the event file
    for site in SITES:
        steps = [e.step for e in board.Scalars(f"site/{site}/aggregated_model_validation/accuracy")]
        assert steps == [0, 1, 2]
    assert [e.step for e in board.Scalars("aggregator/round/bytes_received")] == [0, 1, 2]

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(plan.workspace / "logs" / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("digits")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.tags["accord.plan_hash"] == plan.hash
    history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, ACCURACY)}
    assert history == pytest.approx(accuracy)
    for site in SITES:
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, f"site/{site}/aggregated_model_validation/accuracy")) == [0, 1, 2]
    bytes_in = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "aggregator/round/bytes_received")}
    assert bytes_in == pytest.approx(received)


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples of the aggregator's /metrics, parsed by prometheus_client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode("utf-8")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape_until(port: int, done, proc: subprocess.Popen, what: str, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(port)
        if done(samples):
            return samples
        assert proc.poll() is None and time.monotonic() < deadline, f"the aggregator never showed {what}: {samples}"
        time.sleep(0.05)


def test_prometheus_endpoint_during_a_federation(tmp_path: Path) -> None:
    port = free_port()
    plan = prepare_workspace(
        tmp_path / "ws",
        collaborators=2,
        rounds=3,
        overrides={**FAST, "aggregator.settings.metrics": {"prometheus": {"port": port}}},
    )
    ws = plan.workspace
    log = ws / "aggregator.log"
    with log.open("w") as out:
        aggregator = subprocess.Popen(fx_command("aggregator", "start", "-w", str(ws)), stdout=out, stderr=subprocess.STDOUT)
    sites: list[subprocess.Popen] = []

    def site(name: str, *extra: str) -> subprocess.Popen:
        proc = subprocess.Popen(
            fx_command("collaborator", "start", "-n", name, "-w", str(ws), *extra),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        sites.append(proc)
        return proc

    try:
        wait_listening(port, aggregator, log)
        start = scrape(port)
        assert start[("accord_round", ())] == 0
        assert start[("accord_last_closed_round", ())] == -1
        assert start[("accord_results_accepted_total", ())] == 0

        # a site whose plan differs is refused: counted
        hashed = site("collaborator1", "-o", "aggregator.settings.rounds_to_train=4")
        assert hashed.wait(timeout=120) == 2
        refused = scrape(port)[("accord_calls_refused_total", ())]
        assert refused >= 1

        # one site of two: its three results of round 0 are accepted, the round stays open
        site("collaborator1")
        alone = scrape_until(port, lambda s: s[("accord_results_accepted_total", ())] >= 3, aggregator, "3 results")
        assert alone[("accord_results_accepted_total", ())] == 3
        assert alone[("accord_last_closed_round", ())] == -1
        assert alone[("accord_received_bytes_total", ())] == 0  # counted per closed round

        site("collaborator2")
        closed = scrape_until(port, lambda s: s[("accord_last_closed_round", ())] >= 0, aggregator, "a closed round")
        assert closed[("accord_round", ())] >= 1
        assert closed[("accord_results_accepted_total", ())] >= 6
        assert closed[("accord_round_seconds", ())] > 0
        assert closed[("accord_round_received_bytes", ())] > 0
        assert closed[("accord_received_bytes_total", ())] >= closed[("accord_round_received_bytes", ())]
        assert closed[("accord_sent_bytes_total", ())] > 0
        shown = closed[("accord_metric", (("metric", "accuracy"), ("task", "aggregated_model_validation")))]
        assert aggregator.wait(timeout=300) == 0, log.read_text()
        assert [proc.wait(timeout=120) for proc in sites[1:]] == [0, 0]
    finally:
        for proc in (*sites, aggregator):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    records = read_metrics(plan.resolve_path(plan.model.aggregator.settings.metrics_path))
    assert shown in aggregated(records, "aggregated_model_validation", "accuracy").values()
