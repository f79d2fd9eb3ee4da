"""Accord's simulation against Flower 1.42's, on the same workload, interleaved and repeated.

    .venv/bin/python bench/simulation.py [--clients 10000] [--flower-clients 10000] [--rounds 2]
        [--accord-rounds 1] [--repeats 3] [--flower-cpus 1] [--cohorts 1000,2000,5000,10000]
        [--registered 1000000] [--sampled 1000]

The workload (bench/_digits_workload.py): a torch MLP (64-128-10) on scikit-learn's digits;
client ``cid`` trains 1 epoch on its own 16 samples (batches of 8, SGD) and evaluates on 8,
every client every round, FedAvg. Each worker (an Accord thread, a Flower Ray actor) builds the
model once and loads each client's weights into it. Accord runs ``accord.simulation.run_simulation`` with a
NumpyClient on the threads backend (one thread per core); Flower runs ``flwr.simulation.
run_simulation`` in its own venv (bench/_peer_envs.py) on its Ray backend with
``--flower-cpus`` CPUs per client (bench/_flower_sim.py; default 1: one actor per core, the
faster here of 1 and 0.5; Flower's own default is 2). Each run is a child process, both with ``MALLOC_ARENA_MAX=2``
(glibc's per-thread arenas otherwise fragment under many short-lived clients, in both); its
memory is the peak of the proportional set size (PSS) summed over the child's whole process
tree (Ray's workers too), sampled every 0.25 s. PSS divides a library's pages among every
process on the machine that maps them: on a machine where other processes use Accord's venv's
torch (and none Flower's, a venv of its own), Accord's PSS is lower than it would be alone. Its
run is one process, so its peak RSS is what its PSS would be alone: the ratio of that to Flower's
PSS is the sharing-free figure (conservative: Flower's own processes still share its pages among
themselves, as they would alone). A round's clients/s is its clients over its
seconds; a run's is its best round's (Flower's first round also starts its Ray workers).

Figures:
- per framework and repeat: clients/s, round seconds, CPU ms per client (the CPU time the
  run's whole process tree spent during its best round, over that round's clients: robust to
  other load on the machine, where wall time is not), peak memory (MB); then min and median
  over the repeats and the ratios Accord/Flower of each repeat (clients/s: higher is better;
  memory: lower is better). ``--flower-clients`` may be smaller than ``--clients`` so that
  Flower's runs finish in reasonable time (then Flower holds fewer results in memory than it
  would at Accord's count: the memory ratio is conservative);
- cohort scaling (Accord): a round's seconds per client and its CPU ms per client at
  each cohort size, and the CPU figure's ratio to the smallest cohort's (1.0 = linear);
- registered (Accord): ``--registered`` clients registered, ``--sampled`` of them sampled a
  round: round seconds, setup seconds (the engine over every name), peak memory; beside the
  same cohort with only ``--sampled`` registered (ratio 1.0 = nothing per round grows with
  the registered clients).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))


def _tree_sample(pid: int, cpu: dict[int, float]) -> tuple[float, float]:
    """The PSS and the RSS (MB) summed over ``pid``'s process tree; notes each process's CPU
    seconds in ``cpu``."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0, 0.0
    pss = rss = 0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            info = proc.memory_full_info()
            pss, rss = pss + info.pss, rss + info.rss
            times = proc.cpu_times()
            cpu[proc.pid] = times.user + times.system
    return pss / 2**20, rss / 2**20


def _measured(command: list[str], timeout: float) -> tuple[dict, float]:
    """Run ``command``; its last JSON line (with ``cpu_seconds``: the CPU time of its process
    tree, as last sampled, and ``peak_rss_mb``: the peak RSS summed over the tree) and the peak
    PSS of its process tree (MB)."""
    env = {**os.environ, "MALLOC_ARENA_MAX": "2"}  # the same for both frameworks' processes
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=BENCH, env=env)
    peak, peak_rss, cpu, timeline = [0.0], [0.0], {}, []
    halt = threading.Event()

    def sample() -> None:
        while not halt.is_set():
            pss, rss = _tree_sample(child.pid, cpu)
            peak[0], peak_rss[0] = max(peak[0], pss), max(peak_rss[0], rss)
            timeline.append((time.time(), sum(cpu.values())))
            halt.wait(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        out, _ = child.communicate(timeout=timeout)
    finally:
        halt.set()
        sampler.join()
        if child.poll() is None:
            child.kill()
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if child.returncode != 0 or not lines:
        raise SystemExit(f"{command[:3]} failed (exit {child.returncode}): {out[-2000:]}")
    result = json.loads(lines[-1])
    best = min(range(len(result["round_seconds"])), key=lambda r: result["round_seconds"][r])
    start, end = result["round_windows"][best]
    result["round_cpu_seconds"] = _cpu_at(timeline, end) - _cpu_at(timeline, start)
    result["peak_rss_mb"] = peak_rss[0]
    return result, peak[0]


def _cpu_at(timeline: list[tuple[float, float]], when: float) -> float:
    """The tree's CPU seconds at time ``when``, interpolated between the samples around it."""
    before = [(t, c) for t, c in timeline if t <= when] or timeline[:1]
    after = [(t, c) for t, c in timeline if t >= when] or timeline[-1:]
    (t0, c0), (t1, c1) = before[-1], after[0]
    return c0 if t1 <= t0 else c0 + (c1 - c0) * (when - t0) / (t1 - t0)


# -- the Accord child --------------------------------------------------------------------


class DigitsClient:
    """The workload as an Accord NumpyClient."""

    def __init__(self, cid: str) -> None:
        self.cid = int(cid)

    def fit(self, parameters, config):
        import _digits_workload as work

        weights, samples, loss = work.fit([parameters[n] for n in work.NAMES], self.cid)
        return dict(zip(work.NAMES, weights)), samples, {"loss": loss}

    def evaluate(self, parameters, config):
        import _digits_workload as work

        samples, loss, accuracy = work.evaluate([parameters[n] for n in work.NAMES], self.cid)
        return samples, {"loss": loss, "accuracy": accuracy}


def accord_child(clients: int, rounds: int, sampled: int | None) -> None:
    import logging

    import _digits_workload as work

    from accord.plan.loader import apply_overrides, read_yaml, validate_plan
    from accord.simulation import run_simulation
    from accord.workspace.create import TEMPLATES_DIR

    logging.basicConfig(level=logging.ERROR)
    overrides = {
        "aggregator.settings.rounds_to_train": rounds,
        "aggregator.settings.final_validation": False,
        "collaborator.settings.opt_treatment": "RESET",
        "assigner.settings.task_groups": [
            {"name": "fit_and_evaluate", "percentage": 1.0, "tasks": ["aggregated_model_validation", "train"]}
        ],
    }
    if sampled is not None:
        overrides["aggregator.settings.sampling"] = {"count": sampled}
    raw = read_yaml(TEMPLATES_DIR / "torch_digits" / "plan" / "plan.yaml")
    plan = validate_plan(apply_overrides(raw, overrides), Path(tempfile.mkdtemp(prefix="accord-sim-bench-")))
    started = time.perf_counter()
    result = run_simulation(plan, DigitsClient, clients, initial=dict(zip(work.NAMES, work.initial_weights())))
    wall, now = time.perf_counter() - started, time.time()
    rounds_s = [r.seconds for r in result.rounds]
    ends = [now - sum(rounds_s[i + 1 :]) for i in range(len(rounds_s))]  # the rounds ran back to back, then the end
    print(json.dumps({"framework": "accord", "clients": result.rounds[0].clients, "round_seconds": rounds_s,
                      "setup_seconds": wall - sum(rounds_s), "failed": result.failed_clients,
                      "round_windows": [[end - seconds, end] for end, seconds in zip(ends, rounds_s)],
                      "accuracy": [r.metrics.get("aggregated_model_validation/accuracy") for r in result.rounds]}), flush=True)


# -- the parent ------------------------------------------------------------------------------


def _accord(clients: int, rounds: int, sampled: int | None = None, timeout: float = 3600) -> tuple[dict, float]:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", "--clients", str(clients), "--rounds", str(rounds)]
    if sampled is not None:
        command += ["--sampled", str(sampled)]
    return _measured(command, timeout)


def _flower(clients: int, rounds: int, cpus: float, timeout: float = 3600) -> tuple[dict, float]:
    from _peer_envs import peer_python

    command = [str(peer_python("flower")), str(BENCH / "_flower_sim.py"), "--clients", str(clients), "--rounds", str(rounds),
               "--num-cpus", str(cpus)]
    return _measured(command, timeout)


def _rate(run: dict) -> float:
    return run["clients"] / min(run["round_seconds"])


def _seconds(run: dict) -> str:
    return " ".join(f"{s:.2f}" for s in run["round_seconds"])


def _line(label: str, values: list[float], unit: str) -> str:
    return f"  {label:<34} min {min(values):10.2f}  median {statistics.median(values):10.2f}  {unit}"


def compare(args: argparse.Namespace) -> None:
    print(f"Accord ({args.clients} clients, {args.accord_rounds} round(s)) vs Flower 1.42 ({args.flower_clients} clients, {args.rounds} rounds), "
          f"{args.repeats} repeats, interleaved")
    rates: dict[str, list[float]] = {"accord": [], "flower": []}
    memory: dict[str, list[float]] = {"accord": [], "flower": []}
    rss: dict[str, list[float]] = {"accord": [], "flower": []}
    cpu: dict[str, list[float]] = {"accord": [], "flower": []}
    runs = {"accord": lambda: _accord(args.clients, args.accord_rounds), "flower": lambda: _flower(args.flower_clients, args.rounds, args.flower_cpus)}
    for repeat in range(1, args.repeats + 1):
        for name, run in runs.items():
            result, peak = run()
            rates[name].append(_rate(result))
            memory[name].append(peak)
            rss[name].append(result["peak_rss_mb"])
            cpu[name].append(result["round_cpu_seconds"] / result["clients"] * 1e3)
            print(f"  repeat {repeat} {name:<7} {_rate(result):9.1f} clients/s  rounds {_seconds(result)} s  "
                  f"{cpu[name][-1]:7.2f} CPU ms/client  peak {peak:8.1f} MB (RSS {rss[name][-1]:8.1f})  accuracy {result['accuracy'][-1]}", flush=True)
    for name in rates:
        print(_line(f"{name} clients/s", rates[name], "clients/s"))
        print(_line(f"{name} CPU ms per client (best round)", cpu[name], "ms"))
        print(_line(f"{name} peak memory (process tree)", memory[name], "MB"))
        print(_line(f"{name} peak RSS (process tree)", rss[name], "MB"))
    speed = [a / f for a, f in zip(rates["accord"], rates["flower"])]
    work = [f / a for a, f in zip(cpu["accord"], cpu["flower"])]
    mem = [a / f for a, f in zip(memory["accord"], memory["flower"])]
    print(_line("ratio clients/s accord/flower", speed, "x (target >= 10)"))
    print(_line("ratio CPU per client flower/accord", work, "x"))
    print(_line("ratio memory accord/flower", mem, "x (target <= 0.25)"))
    alone = [a / f for a, f in zip(rss["accord"], memory["flower"])]
    print(_line("ratio accord RSS / flower PSS", alone, "x (sharing-free: see the docstring)"))


def cohorts(args: argparse.Namespace) -> None:
    sizes = [int(s) for s in args.cohorts.split(",") if s]
    print(f"Accord cohort scaling (1 round, every client sampled, {args.repeats} repeats)")
    base = None
    for size in sizes:
        runs = [_accord(size, 1)[0] for _ in range(args.repeats)]
        costs = [min(run["round_seconds"]) / size * 1e3 for run in runs]
        cpu = [run["round_cpu_seconds"] / size * 1e3 for run in runs]
        base = base or statistics.median(cpu)
        print(f"  cohort {size:>7}: round {min(costs):.3f} ms/client min, {statistics.median(costs):.3f} median; "
              f"CPU {min(cpu):.3f} ms/client min, {statistics.median(cpu):.3f} median, "
              f"{statistics.median(cpu) / base:.2f}x the smallest cohort's", flush=True)


def registered(args: argparse.Namespace) -> None:
    print(f"Accord: {args.registered} registered, {args.sampled} sampled a round, 3 rounds (vs {args.sampled} registered)")
    for count in (args.sampled, args.registered):
        result, peak = _accord(count, 3, args.sampled)
        print(f"  registered {count:>8}: rounds {_seconds(result)} s, setup "
              f"{result['setup_seconds']:.2f} s, peak {peak:.1f} MB, {result['clients']} clients a round", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--flower-clients", type=int, default=None, help="default: --clients")
    parser.add_argument("--rounds", type=int, default=2, help="Flower's rounds (its first starts its Ray workers)")
    parser.add_argument("--accord-rounds", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--flower-cpus", type=float, default=1.0, help="Flower's CPUs per client (Ray)")
    parser.add_argument("--cohorts", default="1000,2000,5000,10000")
    parser.add_argument("--registered", type=int, default=1_000_000)
    parser.add_argument("--sampled", type=int, default=None)
    parser.add_argument("--only", choices=["compare", "cohorts", "registered"], default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        accord_child(args.clients, args.rounds, args.sampled)
        return
    args.flower_clients = args.flower_clients or args.clients
    args.sampled = args.sampled or 1000
    for part in ("compare", "cohorts", "registered"):
        if args.only in (None, part):
            globals()[part](args)


if __name__ == "__main__":
    main()
