"""Per-result work in the engine, as the number of sites grows.

Builds a RoundEngine (no model tasks: one validation task per site, so only the engine's
own bookkeeping is timed) for a small federation (the baseline) and for larger ones, then
times, in the same run, taking one result: ``engine.submit`` (the owed task,
the straggler policy with the open round's report count); the saved status costs nothing per
result (it is derived when read: aggregator/status.py), the journal record is bench/journal.py.
Each repeat opens a fresh round and submits a result of half the sites. Prints min and
median microseconds per result over the repeats, and the ratio to the baseline; O(1)
per result shows as a ratio near 1 at any size (the garbage collector is paused while
timing: its passes grow with all live objects, whatever the engine does).

    .venv/bin/python bench/per_result.py [--repeats 5] [--sizes 100,1000,10000]
"""

from __future__ import annotations

import argparse
import gc
import time

import numpy as np
from _table import Column, min_median_table


def per_result_us(sites: int, repeats: int) -> list[float]:
    """Microseconds per result with ``sites`` collaborators, one figure per repeat."""
    from accord.aggregator.assigner import RandomGroupedAssigner
    from accord.aggregator.engine import RoundEngine
    from accord.messages import TaskResult
    from accord.plan.round_settings import TaskSpec

    names = [f"site{i}" for i in range(sites)]
    tasks = {"validate": TaskSpec(function="validate", kwargs={"apply": "global"})}
    runs = []
    for _ in range(repeats):
        engine = RoundEngine(
            collaborators=names,
            tasks=tasks,
            assigner=RandomGroupedAssigner(names, [{"name": "all", "percentage": 1.0, "tasks": ["validate"]}]),
            rounds_to_train=1,
            model={"w": np.zeros(2, np.float32)},
            clock=time.monotonic,
            final_validation=False,
        )
        digest = engine.model_digest
        results = [TaskResult(n, 0, "validate", 10, {"accuracy": 0.5}, model_digest=digest) for n in names[: sites // 2]]
        gc.collect()
        gc.disable()  # a collection's cost grows with every live object, not with this work
        start = time.perf_counter()
        for result in results:
            engine.submit(result)
        runs.append((time.perf_counter() - start) / len(results) * 1e6)
        gc.enable()
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", default="100,1000,10000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    figures = {size: per_result_us(size, args.repeats) for size in sizes}
    min_median_table(Column("sites", 8), "us", figures, sizes[0])


if __name__ == "__main__":
    main()
