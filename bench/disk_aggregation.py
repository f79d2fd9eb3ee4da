"""A round of a model larger than the aggregator's memory budget, aggregated from disk.

    .venv/bin/python bench/disk_aggregation.py [--size-mb 1000] [--sites 3] [--repeats 3]
    .venv/bin/python bench/disk_aggregation.py --size-mb 8 --repeats 5 --modes memory   # the small in-RAM path

Each mode runs in a child process of its own, on one workspace (a float32 model of
``--size-mb`` MB in 4 large tensors and a bias; ``--sites`` sites; the count and norm bounds
off, so the result is the plain sample-weighted mean). The child's anonymous memory
(/proc/self/status RssAnon: the pages of mapped files, page cache, are not in it) is sampled
every 2 ms over the work, and the figure is its peak above its value before the work:

- ``disk``: ``AggregatorRuntime`` with ``aggregator.settings.in_memory_limit_mb: 0`` (the model
  is mapped from its file, each round computes in files on disk): its start (round 0's files
  written), then each site's result written, chunk by chunk as the gRPC receiver writes it,
  into the file the runtime receives uploads in (``runtime.receiving``) and submitted; the last
  closes the round; then the committer's files (the next model renamed into place).
- ``memory``: the same with the model in memory (``in_memory_limit_mb`` above its size).
- ``numpy``: the baseline: the global model and the sites' updates held in RAM as NumPy arrays
  (as they arrive), their sample-weighted mean in float64, tensor by tensor.

Printed per mode: peak anonymous MB (min/median of ``--repeats`` runs, interleaved), as a
ratio to the model's size and to numpy's peak of the same run, and the seconds of the close
(the submit that closes the round: the mean, under the runtime's lock; min/median). After the
runs, ``disk``'s last model is checked against the same mean in NumPy, block by block, bit for
bit ("exact: OK"), and against the naive float64 mean (max relative difference).
``--child MODE WORKSPACE`` is the mode the script starts itself in.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

MB = 1_000_000
TENSORS = 4
BIAS = 1000
CHUNK = 1 << 20  # bytes a site writes at a time (the wire's chunk)
BLOCK = 1 << 20  # elements the checks read at a time


def weight(index: int) -> int:
    """The sample count site ``index`` (1-based) reports."""
    return 100 + 7 * index


def update_block(index: int, name_index: int, values: np.ndarray) -> np.ndarray:
    """Site ``index``'s values of a block whose global values are ``values`` (float32)."""
    return values * np.float32(1 + 0.01 * index) + np.float32(0.001 * index * (1 + name_index))


def anon_kb() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    raise RuntimeError("/proc/self/status has no RssAnon")


class AnonPeak(threading.Thread):
    """Samples RssAnon every 2 ms until ``stop``; ``stop`` returns the peak above the start (kB)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.start_kb = anon_kb()
        self.peak_kb = self.start_kb
        self._halt = threading.Event()
        self.start()

    def run(self) -> None:
        while not self._halt.is_set():
            self.peak_kb = max(self.peak_kb, anon_kb())
            self._halt.wait(0.002)

    def stop(self) -> int:
        self._halt.set()
        self.join()
        return max(self.peak_kb, anon_kb()) - self.start_kb


def make_workspace(root: Path, size_mb: float, sites: int, strategy: str) -> Path:
    """A workspace of ``sites`` sites and a float32 model of ``size_mb`` MB (written block by block)."""
    from accord.plan.loader import load_plan, update_plan_file
    from accord.tensors.space import DiskSpace
    from accord.workspace.create import create_workspace

    workspace = create_workspace(root, "torch_digits")
    plan_path = workspace / "plan" / "plan.yaml"
    update_plan_file(
        plan_path,
        {
            "collaborators": [f"c{i}" for i in range(1, sites + 1)],
            "aggregator.settings.rounds_to_train": 1,
            "aggregator.settings.final_validation": False,
            "aggregator.settings.best_metric": "train/loss",
            "aggregator.settings.best_direction": "minimize",
            "aggregator.settings.update_bounds.sample_count_multiple": None,
            "aggregator.settings.update_bounds.norm_multiple": None,
            "aggregator.settings.strategy": {"template": f"accord.strategies.{strategy}", "settings": {}},
            "assigner.settings.task_groups": [{"name": "train_only", "percentage": 1.0, "tasks": ["train"]}],
        },
    )
    plan = load_plan(plan_path, workspace=workspace)
    init = plan.resolve_path(plan.model.aggregator.settings.init_state_path)
    elements = max(int(size_mb * MB / 4 / TENSORS), 1)
    specs = {f"layer{i}.weight": ("float32", (elements,)) for i in range(TENSORS)} | {"head.bias": ("float32", (BIAS,))}
    space = DiskSpace(init.parent)  # written block by block: the parent holds no model either
    model = space.new_model(specs)
    rng = np.random.default_rng(0)
    for name in specs:
        out = model.tensor(name)
        for at in range(0, out.size, BLOCK):
            out[at : at + BLOCK] = rng.standard_normal(min(BLOCK, out.size - at), dtype=np.float32)
    space.adopt(model.state(), init)
    return workspace


def child(mode: str, workspace: Path) -> int:
    """One measured run (see the module docstring); prints ``RESULT anon_kb=... close_s=...``."""
    if mode == "numpy":
        return numpy_child(workspace)
    import gc

    from accord.aggregator.runtime import AggregatorRuntime
    from accord.messages import TaskResult
    from accord.plan.loader import load_plan

    overrides = {"aggregator.settings.in_memory_limit_mb": 0 if mode == "disk" else 1 << 20}
    plan = load_plan(workspace / "plan" / "plan.yaml", overrides, workspace=workspace)
    gc.collect()
    peak = AnonPeak()
    runtime = AggregatorRuntime(plan, fresh=True)
    close_s = 0.0
    for index, name in enumerate(plan.model.collaborators, start=1):
        staged = runtime.receiving(name, 0, "train")
        for name_index, (tensor, array) in enumerate(runtime.engine.model.items()):
            buffer, flat = staged.allocate(tensor, array.dtype, array.shape), array.reshape(-1)
            step = CHUNK // array.itemsize
            for at in range(0, flat.size, step):
                buffer.write(at * array.itemsize, update_block(index, name_index, flat[at : at + step]).data)
        result = TaskResult(
            collaborator=name,
            round_number=0,
            task="train",
            sample_count=weight(index),
            metrics={"loss": 1.0 / index},
            tensors=staged.finish(list(runtime.engine.model)),
            model_digest=runtime.engine.model_digest,
        )
        started = time.perf_counter()
        runtime.submit(result, plan.hash)
        close_s = time.perf_counter() - started  # the last one closes the round
    runtime.wait_until_done(quit_grace=0.0)
    runtime.close()
    print(f"RESULT anon_kb={peak.stop()} close_s={close_s:.4f}", flush=True)
    return 0


def numpy_child(workspace: Path) -> int:
    """The baseline: the global and the updates in RAM, the float64 weighted mean per tensor."""
    from accord.tensors.state import load_state

    sites = count_sites(workspace)
    peak = AnonPeak()
    global_model = load_state(workspace / "save" / "init.safetensors")
    updates = [{n: update_block(i, k, a) for k, (n, a) in enumerate(global_model.items())} for i in range(1, sites + 1)]
    started = time.perf_counter()
    total = sum(weight(i) for i in range(1, sites + 1))
    mean = {}
    for name in global_model:
        acc = np.zeros(global_model[name].shape, np.float64)
        for i, update in enumerate(updates, start=1):
            acc += update[name] * (weight(i) / total)
        mean[name] = acc.astype(np.float32)
    close_s = time.perf_counter() - started
    print(f"RESULT anon_kb={peak.stop()} close_s={close_s:.4f} tensors={len(mean)}", flush=True)
    return 0


def count_sites(workspace: Path) -> int:
    from accord.plan.loader import load_plan

    return len(load_plan(workspace / "plan" / "plan.yaml", workspace=workspace).model.collaborators)


def check_last(workspace: Path, sites: int) -> tuple[bool, float]:
    """Is ``save/last.safetensors`` FedAvg's mean bit for bit (the same float64 sums, block by
    block, in NumPy), and its largest relative difference from the naive float64 mean."""
    from accord.tensors.state import StateView

    global_model, last = StateView(workspace / "save" / "init.safetensors"), StateView(workspace / "save" / "last.safetensors")
    total = sum(weight(i) for i in range(1, sites + 1))
    exact, worst = list(last) == list(global_model), 0.0
    for name_index, name in enumerate(global_model):
        g, got = global_model.mapped(name).reshape(-1), last.mapped(name).reshape(-1)
        for at in range(0, g.size, BLOCK):
            ref = g[at : at + BLOCK]
            acc = np.zeros(ref.size, np.float64)
            naive = np.zeros(ref.size, np.float64)
            for i in range(1, sites + 1):
                values = update_block(i, name_index, ref)
                acc += np.subtract(values, ref, dtype=np.float64) * (weight(i) / total)
                naive += values.astype(np.float64) * weight(i)
            expected = (acc + ref).astype(np.float32)
            exact = exact and np.array_equal(got[at : at + BLOCK], expected)
            naive /= total
            worst = max(worst, float(np.max(np.abs(got[at : at + BLOCK] - naive) / np.maximum(np.abs(naive), 1e-30))))
    return exact, worst


def run_child(mode: str, workspace: Path) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(workspace)], capture_output=True, text=True, timeout=3600
    )
    line = next((row for row in done.stdout.splitlines() if row.startswith("RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise SystemExit(f"the {mode} run failed:\n{done.stdout}\n{done.stderr[-3000:]}")
    return {key: float(value) for key, value in (field.split("=") for field in line.split()[1:])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=float, default=1000.0)
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--modes", nargs="+", default=["numpy", "disk", "memory"], choices=["numpy", "disk", "memory"])
    parser.add_argument("--strategy", default="FedAvg", help="accord.strategies.<name> (the exact check is FedAvg's)")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "WORKSPACE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        raise SystemExit(child(args.child[0], Path(args.child[1])))
    with tempfile.TemporaryDirectory(prefix="accord-disk-") as root:
        workspace = make_workspace(Path(root), args.size_mb, args.sites, args.strategy)
        model_mb = sum(f.stat().st_size for f in [workspace / "save" / "init.safetensors"]) / MB
        print(
            f"model {model_mb:.0f} MB, {args.sites} sites, strategy {args.strategy}, {args.repeats} repeats (modes interleaved)"
        )
        runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in args.modes}
        for _ in range(args.repeats):
            for mode in args.modes:
                runs[mode].append(run_child(mode, workspace))
        numpy_mb = min(r["anon_kb"] for r in runs["numpy"]) * 1024 / MB if "numpy" in runs else None
        for mode, rows in runs.items():
            anon = sorted(r["anon_kb"] * 1024 / MB for r in rows)
            close = sorted(r["close_s"] for r in rows)
            vs_numpy = f", {anon[0] / numpy_mb:.3f}x numpy's" if numpy_mb else ""
            print(
                f"{mode:>6}: peak anonymous {anon[0]:.1f} / {statistics.median(anon):.1f} MB (min/median) = "
                f"{anon[0] / model_mb:.3f}x the model{vs_numpy}; close {close[0]:.3f} / {statistics.median(close):.3f} s"
            )
        if "disk" in runs and args.strategy == "FedAvg":
            run_child("disk", workspace)  # the last run's model is checked
            exact, worst = check_last(workspace, args.sites)
            print(
                f"disk's last model is FedAvg's mean: exact: {'OK' if exact else 'FAILED'}; max relative difference from the naive float64 mean {worst:.2e}"
            )
            if not exact:
                raise SystemExit(1)


if __name__ == "__main__":
    main()
