"""The round close of each strategy: its time and peak memory, as ratios to FedAvg's and to the model.

Each site's update is saved as a safetensors file and kept, as in the aggregator, as a lazy
memory-mapped ``StateView``; the close (``accumulator.result()``) reads them block by block.
Printed per strategy: the close's seconds (min and median of the repeats), as a ratio to
FedAvg's measured in the same run, and its peak traced NumPy memory (one more run, under
tracemalloc; the new model included) as a multiple of the model's size. The robust ones
should stay within 2x the model whatever the number of sites.

    PYTHONPATH=src .venv/bin/python bench/strategy_close.py [--sites 8 64] [--megabytes 48] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from accord.aggregation.bounds import UpdateBounds
from accord.strategies import (
    Bulyan,
    CoordinateMedian,
    FedAvg,
    GeometricMedian,
    Krum,
    MultiKrum,
    NormClipping,
    Reply,
    RoundContext,
    Strategy,
    TrimmedMean,
)
from accord.tensors.state import StateView, save_state

STRATEGIES: list[tuple[str, Strategy]] = [
    ("FedAvg", FedAvg()),
    ("CoordinateMedian", CoordinateMedian()),
    ("TrimmedMean(0.2)", TrimmedMean(0.2)),
    ("GeometricMedian", GeometricMedian()),
    ("Krum(1)", Krum(1)),
    ("MultiKrum(1)", MultiKrum(1)),
    ("Bulyan(1)", Bulyan(1)),
    ("NormClipping(FedAvg)", NormClipping(FedAvg(), 1.0)),
]


def close(strategy: Strategy, model: dict, views: list[StateView]) -> float:
    accumulator = strategy.accumulator(RoundContext(0, model, UpdateBounds(), ()))
    for index, view in enumerate(views):
        accumulator.add(Reply(f"site{index}", view, 100.0, False, view))
    start = time.perf_counter()
    accumulator.result()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--megabytes", type=int, default=48, help="float32 model size (two tensors)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    half = (args.megabytes << 20) // 8
    rng = np.random.default_rng(0)
    model = {"w1": rng.normal(size=half).astype(np.float32), "w2": rng.normal(size=half).astype(np.float32), "__opt__.w1": np.ones(4096, np.float32)}
    model_bytes = sum(v.nbytes for v in model.values())
    for sites in args.sites:
        with tempfile.TemporaryDirectory() as directory:
            views = []
            for index in range(sites):
                update = {k: (v + 0.01 * rng.normal(size=v.shape)).astype(np.float32) for k, v in model.items()}
                views.append(StateView(save_state(Path(directory) / f"{index}.safetensors", update)))
                del update
            print(f"\n{sites} sites, a {model_bytes / 2**20:.0f} MB model")
            print(f"{'strategy':>22} {'min s':>7} {'median s':>9} {'/ FedAvg':>9} {'peak MB':>8} {'/ model':>8}")
            baseline = None
            for label, strategy in STRATEGIES:
                if strategy.min_replies(sites) > sites:
                    continue
                times = [close(strategy, model, views) for _ in range(args.repeat)]
                tracemalloc.start()
                close(strategy, model, views)
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
                baseline = baseline or min(times)
                ratio = min(times) / baseline
                print(f"{label:>22} {min(times):7.2f} {statistics.median(times):9.2f} {ratio:9.2f} {peak / 2**20:8.0f} {peak / model_bytes:8.2f}")


if __name__ == "__main__":
    main()
