"""What a server optimizer's step costs at a round's close, beside the FedAvg mean it follows.

The round's replies are saved safetensors files read through lazy ``StateView``s, as in the
aggregator; the model is float32 (``--mb`` MB in 4 tensors). Baseline: the FedAvg close
(``BoundedMean``: the bounded, sample-weighted mean of N replies), measured in the same run.
Then each strategy's ``finish`` on that mean: seconds (min and median of the repeats), as a
ratio to the baseline's median, and the peak memory it allocates (tracemalloc: NumPy reports
its arrays) in models; its state (the moments) is counted in the ``state`` column.

    PYTHONPATH=src .venv/bin/python bench/server_optimizers.py [--mb 50] [--sites 8] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from accord.strategies import FedAdagrad, FedAdam, FedAvg, FedAvgM, FedYogi, Strategy
from accord.strategies.mean import BoundedMean
from accord.strategies.seam import Aggregate, Reply, RoundContext
from accord.tensors.state import StateView, save_state


def model_of(mb: int) -> dict[str, np.ndarray]:
    size = mb * (1 << 20) // 4 // 4
    rng = np.random.default_rng(0)
    return {f"layer{i}.weight": rng.normal(size=size).astype(np.float32) for i in range(4)}


def close(model: dict[str, np.ndarray], paths: list[Path]) -> tuple[float, Aggregate, RoundContext]:
    context = RoundContext(0, model, cohort=tuple(p.stem for p in paths))
    mean = BoundedMean(context)
    start = time.perf_counter()
    for path in paths:
        view = StateView(path)
        mean.add(Reply(path.stem, view, 100.0, stored=view))
    aggregate = mean.result()
    return time.perf_counter() - start, aggregate, context


def finish(strategy: Strategy, context: RoundContext, aggregate: Aggregate) -> tuple[float, int]:
    """Seconds and peak bytes allocated by one ``finish`` (the second round's: moments exist)."""
    strategy.finish(context, aggregate)
    tracemalloc.start()
    start = time.perf_counter()
    strategy.finish(context, aggregate)
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=50)
    parser.add_argument("--sites", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    model = model_of(args.mb)
    model_bytes = sum(t.nbytes for t in model.values())
    with tempfile.TemporaryDirectory() as directory:
        paths = []
        for index in range(args.sites):
            path = Path(directory) / f"site{index}.safetensors"
            save_state(path, {n: t + np.float32(0.01 * (index + 1)) for n, t in model.items()})
            paths.append(path)
        closes = [close(model, paths) for _ in range(args.repeat)]
        baseline = statistics.median(c[0] for c in closes)
        _, aggregate, context = closes[-1]
        print(f"model {model_bytes / 2**20:.0f} MB float32, {args.sites} sites; FedAvg close (BoundedMean): "
              f"min {min(c[0] for c in closes):.3f} s, median {baseline:.3f} s")
        print(f"{'strategy':>11} {'min s':>7} {'median s':>9} {'x close':>8} {'peak alloc (models)':>20} {'state (models)':>15}")
        for cls in (FedAvg, FedAvgM, FedAdam, FedYogi, FedAdagrad):
            runs = [finish(cls(), context, aggregate) for _ in range(args.repeat)]
            seconds = [r[0] for r in runs]
            probe = cls()
            probe.finish(context, aggregate)
            state = sum(t.nbytes for t in probe.snapshot().tensors.values())
            print(f"{cls.__name__:>11} {min(seconds):7.3f} {statistics.median(seconds):9.3f} "
                  f"{statistics.median(seconds) / baseline:8.2f} {min(r[1] for r in runs) / model_bytes:20.2f} "
                  f"{state / model_bytes:15.2f}")


if __name__ == "__main__":
    main()
