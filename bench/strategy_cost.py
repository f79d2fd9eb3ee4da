"""Aggregator cost of each strategy: a round's close time and peak memory, N = 8 and 64 sites.

A ~50 MB float32 model (four 12 MB tensors, memory-mapped by StateView, one 1 MB tensor and a
bias, read into memory at each lookup) and N updates of it are saved as safetensors files in a
temporary folder (``--dir``, /tmp by default; removed at the end). Each case runs in a child
process of its own, as the aggregator's round does: the global model in memory, the strategy
built from its plan mapping (``aggregator.settings.strategy``), its accumulator fed N replies
whose tensors are StateViews of the saved files (as ``checkpoint.stage``/``view`` give them to
the engine; the plan's default update bounds on), then the close (``accumulator.result`` and
``strategy.finish``), timed, its memory measured over the close (bench/_memory.py):

- peak RSS: VmHWM after a reset, minus RSS before the close; it counts the pages of the mapped
  update files the close touched (page cache, which the kernel can drop);
- peak anon: RssAnon sampled every 5 ms, minus before: the process's own memory, which it
  cannot. The issue's bar (median and Krum within 2x the model in RAM, because they read the
  updates from disk) is judged on this one.

Baseline, in the same run: NumPy's mean of the N updates loaded in memory (``load_state``, then
``np.mean(np.stack(...), axis=0)`` tensor by tensor): the time of the mean, the peak increase of
loading and mean. Shown as ratios: close / baseline mean time, peak / model size, peak / the
baseline's peak. Min and median over ``--repeat`` closes in the same child (the peak: the
highest). The add time (N replies) is shown too; here ``add`` reads the update through the
file's view, where the runtime hands it the arrived arrays.

    PYTHONPATH=src .venv/bin/python bench/strategy_cost.py [--sizes 8 64] [--size-mb 50] [--repeat 3]
        [--strategies LABEL ...] [--dir /tmp]

``--child`` is the mode the script starts itself in for one case.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _memory import PeakMemory
from _strategies import CATALOG, StrategyChoice
from _table import Column, Table

MB = 1_000_000
#: the issue's bar: these strategies' peak own memory over the close, as a multiple of the model
BAR, BARRED = 2.0, ("CoordinateMedian", "Krum")
BIG = 4  # tensors of 12 MB, memory-mapped
NUMPY = "numpy mean (in memory)"

#: the catalog's strategies; NormClipping's bound clips every update here (their change norms are ~35 at 50 MB),
#: TrimmedMean trims one a side at N = 8 (beta 0.1 needs 10 replies)
STRATEGIES = {
    **CATALOG,
    "NormClipping": CATALOG["NormClipping"].but(max_norm=10.0),
    "TrimmedMean": CATALOG["TrimmedMean"].but(beta=0.2),
    #: central DP: the same clip as NormClipping, noise on the sum (its draw is most of its cost)
    "DPFedAvg": StrategyChoice("DPFedAvg", "DPFedAvg", {"noise_multiplier": 1.0, "clip_norm": 10.0}, "FedAvg with central DP"),
}


def model_tensors(size_mb: float) -> dict[str, tuple[int, ...]]:
    """The model's tensor shapes: ~``size_mb`` MB of float32."""
    big = int(size_mb * MB * 0.24 / 4)
    return {**{f"layer{i}.weight": (big,) for i in range(BIG)}, "head.weight": (int(size_mb * MB * 0.02 / 4),), "head.bias": (1000,)}


def write_files(directory: Path, size_mb: float, count: int) -> int:
    """global.safetensors and update-<i>.safetensors (global + small noise, different per site); the model's bytes."""
    from accord.tensors.state import save_state

    rng = np.random.default_rng(0)
    model = {name: rng.standard_normal(shape, dtype=np.float32) for name, shape in model_tensors(size_mb).items()}
    save_state(directory / "global.safetensors", model)
    for index in range(count):
        update = {name: value + np.float32(0.01) * rng.standard_normal(value.shape, dtype=np.float32) for name, value in model.items()}
        save_state(directory / f"update-{index}.safetensors", update)
    return sum(v.nbytes for v in model.values())


def close_case(directory: Path, label: str, sites: int, repeat: int) -> dict[str, Any]:
    """One strategy's adds and closes of a round of ``sites`` replies (in this process), or
    ``{"skip": why}`` if it needs more replies."""
    from accord.aggregation.bounds import UpdateBounds
    from accord.plan.strategy import build_strategy
    from accord.strategies.seam import Reply, RoundContext
    from accord.tensors.state import StateView, load_state

    global_model = load_state(directory / "global.safetensors")
    strategy = build_strategy(STRATEGIES[label].spec, directory)
    if strategy.min_replies(sites) > sites:  # the engine refuses such a federation at start
        return {"skip": f"needs {strategy.min_replies(sites)} replies"}
    names = tuple(f"site{i}" for i in range(sites))
    figures: dict[str, list[float]] = {"add_s": [], "close_s": [], "rss_kb": [], "anon_kb": []}
    for round_number in range(repeat):
        context = RoundContext(round_number, global_model, UpdateBounds(), names)
        accumulator = strategy.accumulator(context)
        started = time.perf_counter()
        for index, name in enumerate(names):
            view = StateView(directory / f"update-{index}.safetensors")
            accumulator.add(Reply(name, view, 100.0 + index, False, view))
        figures["add_s"].append(time.perf_counter() - started)
        with PeakMemory() as peak:
            started = time.perf_counter()
            model = strategy.finish(context, accumulator.result())
            figures["close_s"].append(time.perf_counter() - started)
        figures["rss_kb"].append(peak.rss_kb)
        figures["anon_kb"].append(peak.anon_kb)
        del model, accumulator
    return figures


def numpy_case(directory: Path, sites: int, repeat: int) -> dict[str, Any]:
    """The baseline: the updates loaded in memory, then NumPy's mean of them tensor by tensor."""
    from accord.tensors.state import load_state

    figures: dict[str, list[float]] = {"add_s": [], "close_s": [], "rss_kb": [], "anon_kb": []}
    for _ in range(repeat):
        with PeakMemory() as peak:
            started = time.perf_counter()
            updates = [load_state(directory / f"update-{index}.safetensors") for index in range(sites)]
            figures["add_s"].append(time.perf_counter() - started)
            started = time.perf_counter()
            mean = {name: np.mean(np.stack([u[name] for u in updates]), axis=0) for name in updates[0]}
            figures["close_s"].append(time.perf_counter() - started)
        figures["rss_kb"].append(peak.rss_kb)
        figures["anon_kb"].append(peak.anon_kb)
        del updates, mean
    return figures


def run_child(directory: Path, label: str, sites: int, repeat: int, timeout: float) -> dict[str, Any] | str:
    """One case in a fresh process: its figures, or why it has none."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", label, "--dir", str(directory), "--sizes", str(sites), "--repeat", str(repeat)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout:.0f} s"
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return f"failed ({done.returncode}): {(done.stderr.strip().splitlines() or ['?'])[-1]}"
    figures = json.loads(lines[-1])
    return figures.get("skip", figures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--size-mb", type=float, default=50.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES), metavar="LABEL")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()), help="where the update files go (removed at the end)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds one case may take")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        case = numpy_case(args.dir, args.sizes[0], args.repeat) if args.child == NUMPY else close_case(args.dir, args.child, args.sizes[0], args.repeat)
        print(json.dumps(case))
        return

    need = (max(args.sizes) + 1) * args.size_mb * MB
    free = shutil.disk_usage(args.dir).free
    if free < 1.5 * need:
        sys.exit(f"{args.dir} has {free / 1e9:.1f} GB free; the update files need {need / 1e9:.1f} GB: pass --dir elsewhere or fewer --sizes")
    started = time.perf_counter()
    directory = Path(tempfile.mkdtemp(prefix="accord-cost-", dir=args.dir))
    try:
        model_bytes = write_files(directory, args.size_mb, max(args.sizes))
        print(f"model {model_bytes / MB:.1f} MB, updates in {directory}, {args.repeat} closes a case, default update bounds")
        table = Table(
            Column("strategy", len(NUMPY)),
            Column("N", 3),
            Column("add ms", 7, ".0f"),
            Column("close ms min", 12, ".0f"),
            Column("median", 7, ".0f"),
            Column("x numpy", 7, ".2f"),
            Column("peak RSS MB", 11, ".0f"),
            Column("/ model", 7, ".2f"),
            Column("peak anon MB", 12, ".0f"),
            Column("/ model", 7, ".2f"),
            Column("/ numpy", 7, ".2f"),
            Column("  note", 0),
        )
        verdicts: dict[tuple[str, int], str] = {}
        for sites in args.sizes:
            base = run_child(directory, NUMPY, sites, args.repeat, args.timeout)
            if isinstance(base, str):
                sys.exit(f"the NumPy baseline at N={sites} {base}")
            row(table, NUMPY, sites, base, base, model_bytes)
            for label in args.strategies:
                missing = STRATEGIES[label].unavailable()
                case = missing or run_child(directory, label, sites, args.repeat, args.timeout)
                if isinstance(case, str):
                    table.row(label, str(sites), *["-"] * 9, f"  {case}")
                    verdicts[label, sites] = case
                else:
                    anon = row(table, label, sites, case, base, model_bytes)
                    verdicts[label, sites] = f"peak anon {anon:.2f} x model: {'meets' if anon <= BAR else 'misses'} the bar (<= {BAR:g} x model)"
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    for (label, sites), verdict in verdicts.items():
        if label in BARRED:
            print(f"{label} N={sites}: {verdict}")
    print(f"({time.perf_counter() - started:.0f} s)")


def row(table: Table, label: str, sites: int, case: dict[str, Any], base: dict[str, Any], model_bytes: int) -> float:
    """Print one case's figures, as ratios to the model and to the baseline; its peak anon / model."""
    close, anon, rss = statistics.median(case["close_s"]), max(case["anon_kb"]) * 1000, max(case["rss_kb"]) * 1000
    note = "(anon: loading + mean)" if label == NUMPY else ""
    table.row(
        label,
        str(sites),
        1000 * statistics.median(case["add_s"]),
        1000 * min(case["close_s"]),
        1000 * close,
        close / statistics.median(base["close_s"]),
        rss / MB,
        rss / model_bytes,
        anon / MB,
        anon / model_bytes,
        anon / (max(base["anon_kb"]) * 1000),
        f"  {note}",
    )
    return anon / model_bytes


if __name__ == "__main__":
    main()
