"""How the round close (``BoundedMean.result``, FedAvg's accumulator) grows with the number of sites, on the robust path.

Each site's update is a saved safetensors file read through a lazy ``StateView``, as in the
aggregator; the model is one small weight tensor and one 3.6 MB optimizer-state tensor
(``__opt__.*``, averaged with the coordinate-wise clamp, in blocks of ``BLOCK // N``). The
close should be O(N x model): the time per site should stay flat as N grows. Printed: the
close's seconds (min and median of the repeats) and the time per site as a ratio to the
smallest N's, measured in the same run.

    PYTHONPATH=src .venv/bin/python bench/fedavg_close.py [--sites 10 80 320] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from accord.aggregation.bounds import UpdateBounds
from accord.strategies.mean import BoundedMean
from accord.strategies.seam import Reply, RoundContext
from accord.tensors.state import StateView, save_state

ELEMENTS = 900_000  # 3.6 MB of float32: under StateView.MAPPED_BYTES, so a lookup reads it


def close_seconds(directory: Path, sites: int, repeat: int) -> list[float]:
    model = {"w": np.zeros(16, np.float32), "__opt__.w.exp_avg_sq": np.ones(ELEMENTS, np.float32)}
    rng = np.random.default_rng(0)
    paths = []
    for index in range(sites):
        path = directory / f"{sites}-{index}.safetensors"
        save_state(path, {"w": np.full(16, 0.1, np.float32), "__opt__.w.exp_avg_sq": rng.random(ELEMENTS, np.float32)})
        paths.append(path)
    times = []
    for _ in range(repeat):
        fedavg = BoundedMean(RoundContext(0, model, UpdateBounds()))
        for index, path in enumerate(paths):
            fedavg.add(Reply(f"s{index}", StateView(path), 100.0))
        start = time.perf_counter()
        fedavg.result()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, nargs="+", default=[10, 80, 320])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    baseline = None
    print(f"{'sites':>6} {'min s':>8} {'median s':>9} {'per site ms':>12} {'per site / first':>17}")
    with tempfile.TemporaryDirectory() as directory:
        for sites in args.sites:
            times = close_seconds(Path(directory), sites, args.repeat)
            per_site = min(times) / sites
            baseline = baseline or per_site
            print(f"{sites:>6} {min(times):>8.3f} {statistics.median(times):>9.3f} {per_site * 1e3:>12.2f} {per_site / baseline:>17.2f}")


if __name__ == "__main__":
    main()
