"""Compression: bytes on the wire against final accuracy, on non-IID digits, per pipeline.

Each row runs the torch_digits federation (10 sites, 20 rounds of 2 local epochs by default)
in this process through the real AggregatorRuntime and RoundEngine (bench/_federation.py),
the training split cut among the sites by a Dirichlet label partition (alpha 0.5), with the
plan's ``compression_pipeline`` set as the row says. The sites talk through the in-process
transport with that pipeline: every chunk is encoded by the site's UpdateEncoder (with its
error feedback) and decoded by the same TensorAssembler as behind the gRPC server, and the
bytes counted are the chunks' data as made (what TensorChunk.data carries on the wire, in
1 MiB chunks; gRPC's framing is the same for every row and left out), uploads and downloads
apart. The figures, per row:

- ``up MB`` / ``down MB``: the median over repeats of the chunk bytes sent in the whole run;
- ``up %``: uploads as % of the fp32 row's (the baseline, run in the same seeds, interleaved);
- ``down %``: the same for downloads (lossless only: zstd or raw);
- ``accuracy`` median and min: the final global model on the whole digits validation split;
- ``delta``: the median's difference from fp32's median, as a fraction of accuracy.

Every row keeps the site's top-k error feedback on, except ``topk no-feedback`` (plain
top-k, for contrast; asked for by name: ``--rows "topk no-feedback" topk``).

The rows are interleaved: for each seed (the task runner's: initial weights and batch
order) every pipeline runs once, so a slower moment of the shared machine falls on all.
The anchors (NVIDIA FLARE): 25% / 14% of fp32 bytes at 8 / 4 bits.

    PYTHONPATH=src .venv/bin/python bench/compression.py [--rounds 20] [--sites 10] [--alpha 0.5]
        [--repeat 3] [--ratio 0.01] [--rows fp16 q8 "topk no-feedback" ...]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import threading
import time
from collections import defaultdict

from _federation import BOUNDS_OFF, POLL, digits_plan, run_federation
from _table import Column, Table

from accord.aggregator.runtime import AggregatorRuntime
from accord.plan.loader import Plan
from accord.transport.inprocess import InProcessClient

#: row -> (upload stages, download stages, error_feedback)
ROWS: dict[str, tuple[list[str], list[str], bool]] = {
    "fp32": ([], [], True),
    "fp16": (["fp16"], [], True),
    "bf16": (["bf16"], [], True),
    "q8": (["q8"], [], True),
    "q4": (["q4"], [], True),
    "q8+zstd": (["q8", "zstd"], [], True),
    "topk": (["topk"], [], True),
    "topk no-feedback": (["topk"], [], False),
    "topk+q8": (["topk", "q8"], [], True),
    "topk+q8+zstd": (["topk", "q8", "zstd"], ["zstd"], True),
    "zstd": (["zstd"], ["zstd"], True),
}
#: what runs unless --rows says otherwise (the no-feedback contrast is asked for by name)
DEFAULT_ROWS = [row for row in ROWS if row != "topk no-feedback"]


class Counter:
    """Chunk bytes per direction ("upload", "download"), from every site's thread."""

    def __init__(self) -> None:
        self.bytes: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()

    def add(self, direction: str, size: int) -> None:
        with self._lock:
            self.bytes[direction] += size


def plan_for(row: str, sites: int, rounds: int, alpha: float, ratio: float, seed: int) -> Plan:
    upload, download, feedback = ROWS[row]
    overrides = {
        "task_runner.settings.seed": seed,
        "data_loader.settings.partition": "dirichlet",
        "data_loader.settings.alpha": alpha,
        "collaborator.settings.opt_treatment": "RESET",
        "aggregator.settings.update_bounds": BOUNDS_OFF,
        "compression_pipeline.settings.upload": upload,
        "compression_pipeline.settings.download": download,
        "compression_pipeline.settings.topk_ratio": ratio,
        "compression_pipeline.settings.error_feedback": feedback,
    }
    return digits_plan(sites, rounds, overrides, prefix="accord-compression-")


def run(plan: Plan) -> tuple[float | None, str, dict[str, int]]:
    """The final accuracy (None: the run failed, and why) and the bytes counted."""
    counter = Counter()

    def client(runtime: AggregatorRuntime, name: str, plan: Plan) -> InProcessClient:
        return InProcessClient(runtime, name, plan.hash, POLL, plan.model.compression_pipeline.settings, counter.add)

    outcome = run_federation(plan, client)
    return outcome.accuracy, outcome.why, dict(counter.bytes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--sites", type=int, default=10)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--ratio", type=float, default=0.01, help="the top-k fraction (topk_ratio)")
    parser.add_argument("--repeat", type=int, default=3, help="runs a row, with task_runner seeds 0, 1, ...")
    parser.add_argument("--rows", nargs="+", default=DEFAULT_ROWS, choices=list(ROWS))
    args = parser.parse_args()
    logging.getLogger("accord").setLevel(logging.ERROR)
    rows = ["fp32", *[r for r in args.rows if r != "fp32"]]

    started = time.perf_counter()
    accuracy: dict[str, list[float]] = defaultdict(list)
    sent: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    failed: dict[str, str] = {}
    for seed in range(args.repeat):
        for row in rows:
            got, why, counted = run(plan_for(row, args.sites, args.rounds, args.alpha, args.ratio, seed))
            print(f"seed {seed} {row}: accuracy {got}, bytes {counted} {why}", file=sys.stderr, flush=True)
            if got is None:
                failed[row] = why
                continue
            accuracy[row].append(got)
            for direction in ("upload", "download"):
                sent[row][direction].append(counted.get(direction, 0))
    if "fp32" in failed:
        raise SystemExit(f"the fp32 baseline failed: {failed['fp32']}")
    base_up = statistics.median(sent["fp32"]["upload"])
    base_down = statistics.median(sent["fp32"]["download"])
    base_accuracy = statistics.median(accuracy["fp32"])
    table = Table(
        Column("pipeline", 16),
        Column("up MB", 8, ".3f"),
        Column("up %", 6, ".1f"),
        Column("down MB", 8, ".3f"),
        Column("down %", 6, ".1f"),
        Column("accuracy", 8),
        Column("min", 6),
        Column("delta", 7, "+.4f"),
    )
    for row in rows:
        if row in failed:
            table.row(row, "failed", "-", "-", "-", "-", "-", f"  {failed[row][:100]}")
            continue
        up, down = statistics.median(sent[row]["upload"]), statistics.median(sent[row]["download"])
        median = statistics.median(accuracy[row])
        table.row(
            row, up / 1e6, 100 * up / base_up, down / 1e6, 100 * down / base_down, median, min(accuracy[row]), median - base_accuracy
        )
    print(
        f"({args.sites} sites, {args.rounds} rounds, alpha {args.alpha:g}, topk_ratio {args.ratio:g}, "
        f"{args.repeat} seeds interleaved, {time.perf_counter() - started:.0f} s)"
    )


if __name__ == "__main__":
    main()
