"""The acknowledgement of the result that closes a round, against that of any other result,
in the real AggregatorRuntime (its journal and files on this disk, no network).

    .venv/bin/python bench/round_close.py [--sites 8] [--mb 50] [--rounds 3]

A torch_digits workspace whose global model is replaced by one float32 tensor of MB
megabytes (plus the template's validation tasks, which carry none); each site sends its
three results per round in turn. Printed, as min and median over the rounds: the
``submit`` seconds of an ordinary training result (its tensors staged and flushed, its
record flushed: the baseline), of the result that closes the round (its acknowledgement),
and the time until the close is committed (snapshot renamed; the same as the
acknowledgement where the close's files are written before it), with the ratios to the
baseline. Run it with PYTHONPATH pointing at another checkout's src to compare versions.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=8)
    parser.add_argument("--mb", type=float, default=50.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from accord.aggregator.runtime import AggregatorRuntime
    from accord.experiment.local import prepare_workspace
    from accord.messages import TaskResult

    plan = prepare_workspace(Path(tempfile.mkdtemp(prefix="accord-round-close-")) / "ws", args.sites, args.rounds)
    model = {"weight": np.zeros(int(args.mb * 2**20 / 4), np.float32)}
    runtime = AggregatorRuntime(plan, model=model)
    state = runtime.journal.directory
    ordinary, closing, committed = [], [], []
    for _ in range(args.rounds):
        number = runtime.engine.round_number
        results = [
            TaskResult(site, number, task.name, 100, {"accuracy": 0.5}, {"weight": model["weight"] + i} if task.name == "train" else None,
                       False, 0.1, model_digest=runtime.engine.model_digest)
            for i, site in enumerate(plan.model.collaborators)
            for task in runtime.engine.assignment(site).tasks
        ]
        for result in results:
            started = time.perf_counter()
            runtime.submit(result, plan.hash)
            took = time.perf_counter() - started
            if result is results[-1]:
                closing.append(took)
                while not (state / f"snapshot-{number + 1:05d}.json").exists():
                    time.sleep(0.001)
                committed.append(time.perf_counter() - started)
            elif result.tensors:
                ordinary.append(took)
    runtime.close()
    base = statistics.median(ordinary)
    for label, values in (("ordinary training result ack", ordinary), ("closing result ack", closing), ("close committed", committed)):
        print(
            f"{label:30s} min {1000 * min(values):8.1f} ms  median {1000 * statistics.median(values):8.1f} ms  "
            f"ratio {statistics.median(values) / base:5.2f}x"
        )


if __name__ == "__main__":
    main()
