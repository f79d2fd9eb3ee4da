"""What the plan's metrics sinks add to a closed round, and what counting bytes adds to a message.

A closed round's records (``sites`` sites x 5 metrics, the aggregated ones, timing and bytes)
are handed to each sink as the runtime does, under its lock; the baseline, measured in the
same run on the same records, is appending them to metrics.jsonl (what every round already
pays). The TensorBoard and MLflow sinks only queue the records (their threads write them),
so their figure is the time the round's close is held; what their threads still had to do at
the close is printed after. Counting bytes: deserializing a
1 MiB tensor chunk with and without ``Traffic.reader``'s count. Prints min and median over
the repeats and the ratio of the medians to the baseline.

    .venv/bin/python bench/sinks.py [--repeats 7] [--sites 10,100,1000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from accord.metric_records import MetricRecord, MetricsLog

TASKS = (("aggregated_model_validation", "accuracy"), ("aggregated_model_validation", "loss"), ("train", "loss"),
         ("locally_tuned_model_validation", "accuracy"), ("locally_tuned_model_validation", "loss"))


def round_records(number: int, sites: int) -> list[MetricRecord]:
    records = [MetricRecord(number, f"site{i}", task, metric, 0.5) for i in range(sites) for task, metric in TASKS]
    records += [MetricRecord(number, "aggregator", task, metric, 0.5) for task, metric in TASKS]
    timing = ("round_seconds", "overhead_seconds", "bytes_received", "bytes_sent")
    return records + [MetricRecord(number, "aggregator", "round", name, 1.0) for name in timing]


def timed(sink: Callable[[Sequence[MetricRecord]], None], sites: int, repeats: int) -> list[float]:
    """Seconds each of ``repeats`` rounds held ``sink`` (a warm-up round first)."""
    sink(round_records(0, sites))
    seconds = []
    for number in range(1, repeats + 1):
        records = round_records(number, sites)
        started = time.perf_counter()
        sink(records)
        seconds.append(time.perf_counter() - started)
    return seconds


def show(name: str, seconds: list[float], baseline: list[float]) -> None:
    ratio = statistics.median(seconds) / statistics.median(baseline)
    print(f"  {name:<28} min {min(seconds) * 1e3:8.3f} ms  median {statistics.median(seconds) * 1e3:8.3f} ms  x{ratio:7.3f}")


def drained(name: str, end: Callable[[], None]) -> None:
    """How long the sink's thread still took at the close (its writing, off the runtime's lock)."""
    started = time.perf_counter()
    end()
    print(f"  {name + ': written by the close':<28} {(time.perf_counter() - started) * 1e3:8.1f} ms (its thread, not under the lock)")


def sinks_bench(root: Path, sites: int, repeats: int) -> None:
    from accord.aggregator.sinks.mlflow_run import MlflowSink, tracking_uri
    from accord.aggregator.sinks.prometheus import PrometheusSink
    from accord.aggregator.sinks.tensorboard import TensorBoardSink

    folder = root / f"n{sites}"
    log = MetricsLog(folder / "metrics.jsonl")
    baseline = timed(log.write, sites, repeats)
    print(f"{sites} sites, {len(round_records(0, sites))} records a round:")
    show("metrics.jsonl (baseline)", baseline, baseline)
    board = TensorBoardSink(folder / "board")
    show("tensorboard (queued)", timed(board, sites, repeats), baseline)
    drained("tensorboard", board.end)
    run = MlflowSink(tracking_uri(folder / "mlruns"), "bench", None, "0" * 96)
    show("mlflow file store (queued)", timed(run, sites, repeats), baseline)
    drained("mlflow", lambda: run.end(True))
    endpoint = PrometheusSink("127.0.0.1", 0)
    show("prometheus", timed(endpoint.records, sites, repeats), baseline)
    endpoint.close()


def counting_bench(repeats: int) -> None:
    from accord.transport import chunk_views
    from accord.transport.traffic import Traffic

    chunk = os.urandom(1 << 20)
    counted = Traffic().reader(chunk_views.result_chunk)
    for name, read in (("deserialize (baseline)", chunk_views.result_chunk), ("deserialize + count", counted)):
        seconds = []
        for _ in range(repeats):
            started = time.perf_counter()
            for _ in range(1000):
                read(chunk)
            seconds.append((time.perf_counter() - started) / 1000)
        if name.endswith("(baseline)"):
            baseline = seconds
        show(name, seconds, baseline)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--sites", default="10,100,1000")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for sites in (int(n) for n in args.sites.split(",")):
            sinks_bench(Path(tmp), sites, args.repeats)
    print("a 1 MiB message:")
    counting_bench(args.repeats)


if __name__ == "__main__":
    main()
