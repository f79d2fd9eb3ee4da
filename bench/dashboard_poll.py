"""What one poll of fx dashboard costs in reading metrics.jsonl, as it grows: the dashboard's
incremental read of a closed round's records (MetricCurves.refresh after an append) and its
first, whole-file read, as ratios to reading the whole file with read_metrics (the baseline,
what a poll would cost if it re-read the file), measured in the same run.

    .venv/bin/python bench/dashboard_poll.py [--sites 1000] [--rounds 50] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _table import Column, min_median_table

from accord.dashboard.curves import MetricCurves
from accord.metric_records import read_metrics

METRICS = ("accuracy", "loss", "samples")


def round_lines(round_number: int, sites: int) -> str:
    """A closed round's records as the aggregator writes them: each site's, then the aggregated ones."""
    rows = [
        {"round": round_number, "origin": origin, "task": "validate", "metric": metric, "value": 0.5}
        for origin in [*(f"site{i:05d}" for i in range(sites)), "aggregator"]
        for metric in METRICS
    ]
    return "".join(json.dumps(row) + "\n" for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    figures: dict[str, list[float]] = {"re-read whole file (baseline)": [], "first read": [], "poll after a round closed": []}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "metrics.jsonl"
        path.write_text("".join(round_lines(r, args.sites) for r in range(args.rounds)))
        for run in range(args.repeat):
            curves = MetricCurves(path)
            start = time.perf_counter()
            curves.refresh()
            figures["first read"].append((time.perf_counter() - start) * 1e3)
            with path.open("a") as out:
                out.write(round_lines(args.rounds + run, args.sites))
            start = time.perf_counter()
            curves.refresh()
            curves.as_json()
            figures["poll after a round closed"].append((time.perf_counter() - start) * 1e3)
            start = time.perf_counter()
            read_metrics(path)
            figures["re-read whole file (baseline)"].append((time.perf_counter() - start) * 1e3)
    lines = (args.rounds + args.repeat) * (args.sites + 1) * len(METRICS)
    print(f"{args.sites} sites x {len(METRICS)} metrics, {args.rounds} rounds (~{lines:,} lines at the end), {args.repeat} runs")
    min_median_table(Column("read", 30), "ms", figures, "re-read whole file (baseline)")


if __name__ == "__main__":
    main()
