"""The framework's own cost per round: round wall time minus the slowest collaborator's task time.

Runs real multi-process federations over mutual TLS on 127.0.0.1 with a tiny model, for
2 and 8 collaborators, and prints the per-round overhead the aggregator measured.

    .venv/bin/python bench/round_overhead.py [--rounds 6]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

TINY = {
    "task_runner.settings.model_kwargs": {"in_features": 64, "hidden": 16, "num_classes": 10},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2, 8])
    args = parser.parse_args()

    from accord.experiment.local import prepare_workspace, run_processes

    for count in args.sizes:
        workspace = Path(tempfile.mkdtemp(prefix="accord-bench-")) / "ws"
        plan = prepare_workspace(workspace, count, args.rounds, overrides=TINY)
        report = run_processes(plan)
        assert report.ok, report.returncodes
        overhead = report.aggregated("round/overhead_seconds")[1:]  # round 0 includes joining
        wall = report.aggregated("round/round_seconds")[1:]
        print(
            f"{count} collaborators: overhead per round median {1000 * statistics.median(overhead):.1f} ms, "
            f"max {1000 * max(overhead):.1f} ms; round wall median {1000 * statistics.median(wall):.1f} ms "
            f"({len(overhead)} rounds after the first)"
        )


if __name__ == "__main__":
    main()
