"""What an open round keeps of its results' metrics: columns, not an object per record
(metric_records.RoundRecords, aggregator/weighted_metrics.py, open_round.py)."""

from __future__ import annotations

import gc
import json
import tracemalloc

import numpy as np
import pytest
from test_engine import honest, make_engine, result

from accord.aggregator.weighted_metrics import WeightedMetrics
from accord.metric_records import MetricRecord, MetricsLog, RoundRecords, read_metrics


def _filled(count: int) -> RoundRecords:
    records = RoundRecords(3)
    for i in range(count):
        records.add(f"site{i}", "train" if i % 2 else "validate", "loss", i / 7)
    return records


def test_round_records_read_back_as_the_records_added_in_their_order() -> None:
    records = _filled(5)
    expected = [MetricRecord(3, f"site{i}", "train" if i % 2 else "validate", "loss", i / 7) for i in range(5)]
    assert list(records) == expected and len(records) == 5
    assert records[-1] == expected[-1] and records[1:3] == expected[1:3]
    with pytest.raises(IndexError):
        records[5]
    more = [MetricRecord(3, "aggregator", "train", "loss", 0.5)]
    assert list(records.extended(more)) == [*expected, *more]
    assert len(records) == 5  # the copy's records are its own
    with pytest.raises(ValueError, match="round 4"):
        records.extended([MetricRecord(4, "aggregator", "train", "loss", 0.5)])


def test_metric_bookkeeping_keeps_no_python_object_per_result() -> None:
    """30,000 records and their weighted means take ~36 bytes a record (float64 value and count,
    a key index, a pointer to the site's name), not the ~150 of a MetricRecord, its float and a
    (value, count) tuple each."""
    names = [f"site{i}" for i in range(10_000)]
    values = [float(i) for i in range(10_000)]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        records, metrics = RoundRecords(0), WeightedMetrics(1.1)
        for name, value in zip(names, values):
            for task, metric in (("validate", "accuracy"), ("validate", "loss"), ("train", "loss")):
                records.add(name, task, metric, value)
                metrics.add(task, metric, value, 16)
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept / len(records) < 60, f"{kept / len(records):.0f} bytes a record"
    assert metrics.means()["train/loss"] == pytest.approx(np.mean(values))


def test_an_open_round_keeps_task_seconds_only_for_sites_still_owing() -> None:
    engine = make_engine(collaborators=("a", "b", "c"), rounds=1)
    tensors = {"w": np.zeros((2, 2), np.float32), "b": np.zeros(2, np.float32)}
    for name, seconds in (("a", 1.0), ("b", 4.0), ("c", 2.0)):
        honest(engine, result(name, "aggregated_model_validation", seconds=seconds))
        honest(engine, result(name, "train", tensors=tensors, seconds=seconds))
    honest(engine, result("a", "locally_tuned_model_validation", seconds=1.0))
    current = engine.current
    assert current is not None and set(current.task_seconds) == {"b", "c"}  # a's are folded
    assert current.slowest_task_seconds() == 8.0  # b so far: 4 + 4
    honest(engine, result("c", "locally_tuned_model_validation", seconds=9.0))
    outcome = honest(engine, result("b", "locally_tuned_model_validation", seconds=0.5))
    assert outcome is not None and outcome.slowest_task_seconds == 13.0  # c: 2 + 2 + 9


def test_metrics_log_writes_a_large_round_in_blocks_in_order(tmp_path) -> None:
    records = _filled(10_001)  # past MetricsLog's 4,096-line block
    path = tmp_path / "metrics.jsonl"
    MetricsLog(path).write(records)
    assert read_metrics(path) == list(records)
    assert json.loads(path.read_text().splitlines()[4096]) == records[4096].as_dict()
