"""What saving one accepted result costs the aggregator, as the number of sites grows.

Drives an ``AggregatorRuntime`` in-process (a torch_digits workspace with a tiny model, one
training task per site, one round) and submits every site's result. Times, per accepted
result, the persist step (``Journal.add_result``: one record appended and flushed to disk),
the staging of its tensors (``Journal.stage``: the same before and after the journal) and the
whole ``runtime.submit``; bytes written per result are the journal's size over the results.

The baseline, measured in the same run on the same records, is what the aggregator did
before the journal: for every result, rewrite a JSON file (indent 1) naming every result
of the round so far and the round's status (its N sites), flush it to disk, keep the old one
as the previous state and rename the new one into place. Figures are per result over the
whole round and over its last tenth ("late"), min and median over the repeats, and the
ratio of the baseline's late median to the journal's.

    .venv/bin/python bench/journal.py [--repeats 3] [--sizes 10,100,1000,2000]
    .venv/bin/python bench/journal.py --submit-only   # runtime.submit alone, for any Accord version
    .venv/bin/python bench/journal.py --no-fsync      # without the disk flushes (a shared, busy disk)
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def runtime_for(root: Path, sites: int) -> Any:
    """An AggregatorRuntime for ``sites`` collaborators training a tiny model for one round."""
    from accord.aggregator.runtime import AggregatorRuntime
    from accord.plan.loader import load_plan, update_plan_file
    from accord.tensors.state import save_state
    from accord.workspace.create import create_workspace

    workspace = create_workspace(root, "torch_digits")
    plan_file = workspace / "plan" / "plan.yaml"
    update_plan_file(
        plan_file,
        {
            "collaborators": [f"site{i}" for i in range(sites)],
            "aggregator.settings.rounds_to_train": 1,
            "aggregator.settings.final_validation": False,
            "aggregator.settings.best_metric": "train/loss",
            "aggregator.settings.best_direction": "minimize",
            "assigner.settings.task_groups": [{"name": "all", "percentage": 1.0, "tasks": ["train"]}],
        },
    )
    plan = load_plan(plan_file, workspace=workspace)
    save_state(plan.resolve_path(plan.model.aggregator.settings.init_state_path), {"w": np.zeros(16, np.float32)})
    return AggregatorRuntime(plan)


def results(runtime: Any) -> list[Any]:
    from accord.messages import TaskResult

    digest = runtime.engine.model_digest
    return [
        TaskResult(name, 0, "train", 10, {"loss": 0.5}, {"w": np.full(16, 0.01, np.float32)}, False, 0.1, model_digest=digest)
        for name in runtime.engine.collaborators
    ]


def timed(owner: Any, name: str, into: list[float]) -> None:
    """Wrap ``owner.name`` so each call's seconds are appended to ``into``."""
    original: Callable[..., Any] = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            into.append(time.perf_counter() - start)

    setattr(owner, name, wrapper)


def one_round(sites: int, journal: bool) -> dict[str, Any]:
    """Per-result seconds of submit (and, with ``journal``, of add_result and stage), the
    journal's bytes, the records and the round's start status (for the baseline)."""
    with tempfile.TemporaryDirectory(prefix="accord-bench-", dir=os.environ.get("BENCH_DIR")) as tmp:
        runtime = runtime_for(Path(tmp) / "ws", sites)
        figures: dict[str, Any] = {"submit": [], "persist": [], "stage": []}
        if journal:
            timed(runtime.journal, "add_result", figures["persist"])
            timed(runtime.journal, "stage", figures["stage"])
            status = json.loads(runtime.journal.path.read_text())["status"]
        todo = results(runtime)
        gc.collect()
        gc.disable()
        try:
            for result in todo:
                start = time.perf_counter()
                runtime.submit(result, runtime.plan.hash)
                figures["submit"].append(time.perf_counter() - start)
        finally:
            gc.enable()
        if journal:
            from accord.aggregator.saved import read_records

            path = runtime.journal.directory / "journal-00000.jsonl"
            figures["bytes"] = path.stat().st_size / len(todo)
            figures["records"] = read_records(path).entries
            figures["status"] = status
        runtime.close()
    return figures


def rewrite_baseline(records: list[dict[str, Any]], status: dict[str, Any]) -> tuple[list[float], float]:
    """Per-result seconds and bytes of rewriting the whole state file for every result."""
    from accord.files import atomic_path

    status = json.loads(json.dumps(status))
    seconds, written = [], 0
    with tempfile.TemporaryDirectory(prefix="accord-bench-", dir=os.environ.get("BENCH_DIR")) as tmp:
        path, previous = Path(tmp) / "state.json", Path(tmp) / "state.prev.json"
        for count, record in enumerate(records, 1):
            status["outstanding"].pop(record["collaborator"], None)  # as RoundStatus.accepted did, untimed
            status["reported"].append(record["collaborator"])
            start = time.perf_counter()
            data = {"format": 1, "round": 0, "results": records[:count], "status": status, "updated_at": time.time()}
            body = json.dumps(data, indent=1).encode("utf-8")
            with atomic_path(path) as partial:
                with partial.open("wb") as handle:
                    handle.write(body)
                    handle.flush()
                    os.fsync(handle.fileno())
                if path.exists():
                    os.replace(path, previous)
            seconds.append(time.perf_counter() - start)
            written += len(body)
    return seconds, written / len(records)


def late(seconds: list[float]) -> float:
    """Mean of the last tenth of a round's per-result figures."""
    tail = seconds[-max(len(seconds) // 10, 1) :]
    return sum(tail) / len(tail)


def whole(seconds: list[float]) -> float:
    return sum(seconds) / len(seconds)


def row(runs: list[float]) -> str:
    """min / median of one figure over the repeats, in microseconds."""
    return f"{min(runs) * 1e6:9.0f} {statistics.median(runs) * 1e6:9.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default="10,100,1000,2000")
    parser.add_argument("--submit-only", action="store_true", help="time runtime.submit alone (any Accord version)")
    parser.add_argument(
        "--no-fsync", action="store_true", help="make os.fsync a no-op on both sides: the work that grows with N, without the disk"
    )
    args = parser.parse_args()
    if args.no_fsync:
        os.fsync = lambda fd: None
    sizes = [int(s) for s in args.sizes.split(",")]
    logging.getLogger("accord").setLevel(logging.ERROR)  # per-result log lines are not what is timed
    if args.submit_only:
        print(f"runtime.submit per result, us: min and median over {args.repeats} repeats (late: the round's last tenth)")
        print(f"{'sites':>6} | {'round: min  median':>19} | {'late: min  median':>19}")
        for sites in sizes:
            runs = [one_round(sites, journal=False)["submit"] for _ in range(args.repeats)]
            print(f"{sites:6d} | {row([whole(r) for r in runs]):>19} | {row([late(r) for r in runs]):>19}")
        return
    header = "min us  median us"
    print(f"per accepted result, min and median over {args.repeats} repeats (late: the round's last tenth)")
    print(
        f"{'sites':>6} | {'journal persist, late':>21} | {'rewrite, late':>19} | {'x':>6} | {'bytes/result':>20} | "
        f"{'stage, round':>19} | {'submit, late':>19}"
    )
    print(f"{'':>6} | {header:>21} | {header:>19} | {'':>6} | {'journal   rewrite':>20} | {header:>19} | {header:>19}")
    for sites in sizes:
        new = [one_round(sites, journal=True) for _ in range(args.repeats)]
        old = [rewrite_baseline(run["records"], run["status"]) for run in new]
        persist = [late(run["persist"]) for run in new]
        rewrite = [late(seconds) for seconds, _ in old]
        ratio = statistics.median(rewrite) / statistics.median(persist)
        print(
            f"{sites:6d} | {row(persist):>21} | {row(rewrite):>19} | {ratio:6.1f} | "
            f"{statistics.median(run['bytes'] for run in new):9.0f} {statistics.median(b for _, b in old):10.0f} | "
            f"{row([whole(run['stage']) for run in new]):>19} | {row([late(run['submit']) for run in new]):>19}"
        )


if __name__ == "__main__":
    main()
