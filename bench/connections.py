"""The real aggregator at N concurrent mutual-TLS collaborators: rounds per minute, memory, CPU.

One real aggregator process (``fx aggregator start``, unchanged) serves a torch_digits plan
listing N collaborators, each with its own certificate signed by the federation's CA; a few
swarm processes (bench/_swarm.py) hold N gRPC channels between them, one per site, and run
the real protocol on 127.0.0.1 (Join, GetTasks long polls, GetModel, a SendResult per task:
validation of the global model, training, validation of the local model). Each run is one
federation of ``--rounds`` rounds; the sizes are interleaved and repeated.

    .venv/bin/python bench/connections.py [--sizes 10,100,300,1000] [--rounds 4] [--repeat 3]

Figures per N (min / median over the repeats), read from outside the aggregator process
(/proc/PID) each time a round's record reaches its logs/metrics.jsonl:
- first round s: round 0, which includes N TLS handshakes and joins (connections open at
  random over ``--connect-seconds``);
- round s, rounds/min: the rounds after the first (every site connected), as the aggregator
  times them (round_seconds), and 60 / that;
- CPU s/round and CPU ms/result: the aggregator's user+system CPU over those rounds, per
  round and per result taken (3 a site a round);
- RSS MB at the end, peak MB (VmHWM), baseline MB (RSS once it listens).
Each federation also runs against bench/_bare_aggregator.py, a bare grpc.aio server on the
same protocol and TLS that only answers (no checks, journal or aggregation), interleaved
with Accord's. Ratios, all to figures of the same run: rpm/base and CPU/res/base, Accord's
rounds/min and CPU per result at N over Accord's at the smallest N (default 10 connections):
per-result work flat in N shows as CPU/res/base near 1, and rounds/min then falls as 1/N
(a round has N times the work); CPU/res/bare, Accord's CPU per result over the bare
server's at the same N (what the framework costs above gRPC's own per-call work).
``--set KEY=YAML`` sets a plan setting for every federation (e.g. network.settings.max_workers=8);
``--profile`` runs Accord's aggregator of the largest N under ``py-spy record --gil``
(``--py-spy PATH``) and prints its top functions.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from _swarm import make_certificates, write_model
from fedavg_memory import listening

from accord.experiment.local import free_port
from accord.plan.loader import load_plan, update_plan_file
from accord.workspace.create import create_workspace

MB = 1_000_000
TASKS_PER_SITE = 3  # the template's task group: global validation, train, local validation
HERE = Path(__file__).resolve().parent


def proc_kb(pid: int, field_name: str) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no {field_name}")


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (all its threads)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def workspace_for(
    root: Path, names: list[str], rounds: int, cert_dir: Path, long_poll: float, overrides: dict[str, Any] | None = None
) -> Path:
    """A torch_digits workspace for ``names`` with a copy of the certificates in ``cert_dir``, and an init model."""
    workspace = create_workspace(root, "torch_digits")
    shutil.copytree(cert_dir, workspace / "cert", dirs_exist_ok=True)
    update_plan_file(
        workspace / "plan" / "plan.yaml",
        {
            "collaborators": names,
            "aggregator.settings.rounds_to_train": rounds,
            "aggregator.settings.final_validation": False,
            "data_loader.settings.collaborator_count": len(names),
            "task_runner.settings.model_kwargs": {"in_features": 64, "hidden": 64, "num_classes": 10},
            "network.settings.agg_addr": "localhost",
            "network.settings.agg_port": free_port(),
            "network.settings.long_poll_seconds": long_poll,
            **(overrides or {}),
        },
    )
    plan = load_plan(workspace / "plan" / "plan.yaml", workspace=workspace)
    write_model(plan.resolve_path(plan.model.aggregator.settings.init_state_path), hidden=64)
    return workspace


@dataclass
class Run:
    """One federation's figures."""

    sites: int
    round_seconds: list[float] = field(default_factory=list)
    cpu_at_close: list[float] = field(default_factory=list)
    rss_at_close: list[int] = field(default_factory=list)
    baseline_kb: int = 0
    hwm_kb: int = 0
    swarm: list[str] = field(default_factory=list)
    ok: bool = False

    @property
    def steady(self) -> list[float]:
        return self.round_seconds[1:]

    @property
    def cpu_per_round(self) -> float:
        rounds = len(self.cpu_at_close) - 1
        return (self.cpu_at_close[-1] - self.cpu_at_close[0]) / rounds if rounds > 0 else float("nan")

    @property
    def cpu_ms_per_result(self) -> float:
        return 1000 * self.cpu_per_round / (self.sites * TASKS_PER_SITE)

    @property
    def rounds_per_minute(self) -> float:
        return 60.0 / statistics.median(self.steady) if self.steady else float("nan")


def run_one(
    root: Path, cert_dir: Path, names: list[str], args: argparse.Namespace, profile: Path | None, bare: bool = False
) -> Run:
    """A federation of ``names`` against one real aggregator process (``bare``: the bare gRPC floor)."""
    workspace = workspace_for(root, names, args.rounds, cert_dir, args.long_poll, dict(args.set))
    plan = load_plan(workspace / "plan" / "plan.yaml", workspace=workspace)
    port = plan.model.network.settings.agg_port
    metrics = plan.resolve_path(plan.model.aggregator.settings.metrics_path)
    command = [sys.executable, "-m", "accord.cli.main", "aggregator", "start", "-w", str(workspace)]
    if bare:
        command = [sys.executable, str(HERE / "_bare_aggregator.py"), str(workspace)]
    if profile is not None:
        command = [args.py_spy, "record", "--threads", "--gil", "-f", "raw", "-r", "50", "-o", str(profile), "--", *command]
    with (root / "aggregator.log").open("wb") as log:  # the child holds its own copy
        aggregator = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    run = Run(len(names))
    swarms: list[subprocess.Popen[bytes]] = []
    try:
        deadline = time.monotonic() + 120
        while not listening(port):
            if aggregator.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the aggregator did not listen:\n{(root / 'aggregator.log').read_text()[-3000:]}")
            time.sleep(0.05)
        pid = _python_pid(aggregator.pid, profile is not None)
        run.baseline_kb = proc_kb(pid, "VmRSS")
        processes = max(1, min(args.swarm_processes, len(names) // 25 or 1))
        share = -(-len(names) // processes)
        for first in range(0, len(names), share):
            count = min(share, len(names) - first)
            swarm_cmd = [sys.executable, str(HERE / "_swarm.py"), str(workspace), str(first), str(count),
                         "--connect-seconds", str(args.connect_seconds), "--seed", str(first)]
            swarms.append(subprocess.Popen(swarm_cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        _watch(run, pid, aggregator, metrics, args.timeout)
        for swarm in swarms:
            out, _ = swarm.communicate(timeout=120)
            run.swarm += [line for line in out.decode().splitlines() if line.startswith(("SWARM", "ERROR"))]
        run.ok = aggregator.wait(timeout=60) == 0 and all(s.returncode == 0 for s in swarms) and len(run.round_seconds) == args.rounds
    finally:
        for process in [aggregator, *swarms]:
            if process.poll() is None:
                process.kill()
                process.wait()
    if not run.ok:
        print(f"  FAILED at N={len(names)}: {run.swarm}\n{(root / 'aggregator.log').read_text()[-3000:]}", flush=True)
    return run


def _python_pid(pid: int, profiled: bool) -> int:
    """The aggregator's own pid (under py-spy, py-spy's child)."""
    if not profiled:
        return pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return int(children[0])


def _watch(run: Run, pid: int, aggregator: subprocess.Popen[bytes], metrics: Path, timeout: float) -> None:
    """Sample the aggregator's CPU and memory each time a round's record reaches metrics.jsonl."""
    seen = 0
    deadline = time.monotonic() + timeout
    while aggregator.poll() is None:
        try:
            run.hwm_kb = proc_kb(pid, "VmHWM")
            cpu, rss = proc_cpu(pid), proc_kb(pid, "VmRSS")
        except (OSError, RuntimeError):
            break
        lines = metrics.read_text().splitlines() if metrics.exists() else []
        for line in lines[seen:]:
            record = json.loads(line)
            if record.get("task") == "round" and record.get("metric") == "round_seconds":
                run.round_seconds.append(float(record["value"]))
                run.cpu_at_close.append(cpu)
                run.rss_at_close.append(rss)
        seen = len(lines)
        if time.monotonic() > deadline:
            raise RuntimeError(f"the federation of {run.sites} did not finish within {timeout:.0f} s")
        time.sleep(0.05)


def mm(values: list[float], spec: str) -> str:
    return f"{format(min(values), spec)} / {format(statistics.median(values), spec)}" if values else "-"


def _median(runs: list[Run], figure: str) -> float:
    values = [getattr(r, figure) for r in runs if r.ok and r.steady]
    return statistics.median(values) if values else float("nan")


def report(runs: dict[tuple[str, int], list[Run]], baseline: int) -> None:
    """One row per server and N; the ratios to Accord at the baseline N and to the bare floor at the same N."""
    base_rpm = _median(runs[("accord", baseline)], "rounds_per_minute")
    base_cpu = _median(runs[("accord", baseline)], "cpu_ms_per_result")
    print()
    print(f"{'server':>7} {'N':>5} {'first round s':>14} {'round s':>13} {'rounds/min':>13} {'CPU s/round':>13} "
          f"{'CPU ms/result':>14} {'RSS MB':>9} {'peak MB':>9} {'base MB':>8} {'rpm/base':>9} {'CPU/res/base':>13} "
          f"{'CPU/res/bare':>13}")
    for (server, sites), all_runs in sorted(runs.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        done = [r for r in all_runs if r.ok and r.steady]
        if not done:
            print(f"{server:>7} {sites:>5}  FAILED ({len(all_runs)} runs)")
            continue
        per = _median(done, "cpu_ms_per_result")
        bare = _median(runs.get(("bare", sites), []), "cpu_ms_per_result")
        print(
            f"{server:>7} {sites:>5} {mm([r.round_seconds[0] for r in done], '.2f'):>14} "
            f"{mm([statistics.median(r.steady) for r in done], '.2f'):>13} {mm([r.rounds_per_minute for r in done], '.1f'):>13} "
            f"{mm([r.cpu_per_round for r in done], '.2f'):>13} {mm([r.cpu_ms_per_result for r in done], '.2f'):>14} "
            f"{mm([r.rss_at_close[-1] * 1024 / MB for r in done], '.0f'):>9} {mm([r.hwm_kb * 1024 / MB for r in done], '.0f'):>9} "
            f"{statistics.median([r.baseline_kb * 1024 / MB for r in done]):>8.0f} "
            f"{_median(done, 'rounds_per_minute') / base_rpm:>9.3f} {per / base_cpu:>13.2f} {per / bare:>13.2f}"
        )
    print(f"(min / median over the repeats; rpm/base and CPU/res/base: over Accord at N={baseline}; CPU/res/bare: "
          "over the bare gRPC server at the same N; medians, all measured in this run)")


def profile_top(path: Path, rows: int = 25) -> None:
    """The functions most often on the aggregator's stacks (py-spy raw samples, own + total)."""
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or "(idle)" in stack:
            continue
        frames = stack.split(";")
        n = int(count)
        samples += n
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for frame in set(frames[1:]):
            total[frame] = total.get(frame, 0) + n
    print(f"\naggregator profile: {samples} busy samples (py-spy, 50 Hz, every thread); top by own time:")
    for frame, n in sorted(own.items(), key=lambda kv: -kv[1])[:rows]:
        print(f"  {100 * n / samples:5.1f}% own  {100 * total.get(frame, n) / samples:5.1f}% total  {frame[:150]}")


def _setting(text: str) -> tuple[str, Any]:
    key, _, value = text.partition("=")
    return key, yaml.safe_load(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,300,1000", help="numbers of collaborators; the first is the baseline")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--swarm-processes", type=int, default=4)
    parser.add_argument("--connect-seconds", type=float, default=5.0)
    parser.add_argument("--long-poll", type=float, default=30.0, help="network.settings.long_poll_seconds")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds one federation may take")
    parser.add_argument("--profile", action="store_true", help="profile the aggregator of the largest N (py-spy)")
    parser.add_argument("--py-spy", default=shutil.which("py-spy") or "py-spy")
    parser.add_argument("--set", action="append", default=[], type=_setting, metavar="KEY=YAML",
                        help="a plan setting for every federation, e.g. network.settings.max_workers=8 (repeatable)")
    parser.add_argument("--no-bare", action="store_true", help="skip the bare gRPC server (bench/_bare_aggregator.py)")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    root = Path(tempfile.mkdtemp(prefix="accord-connections-"))
    names = [f"site{i:05d}" for i in range(max(sizes))]
    try:
        started = time.perf_counter()
        make_certificates(root / "cert", "localhost", names)
        print(f"{len(names)} collaborator certificates (own EC keys, signed by the federation's CA) in "
              f"{time.perf_counter() - started:.1f} s; {args.rounds} rounds a federation, 3 tasks a site a round, "
              f"mutual TLS on 127.0.0.1, swarm of up to {args.swarm_processes} processes", flush=True)
        servers = ["accord"] + ([] if args.no_bare else ["bare"])
        runs: dict[tuple[str, int], list[Run]] = {(server, n): [] for server in servers for n in sizes}
        for repeat in range(args.repeat):
            for n in sizes:
                for server in servers:
                    profiled = root / "profile.txt" if args.profile and server == "accord" and repeat == 0 and n == max(sizes) else None
                    run = run_one(root / f"r{repeat}-{server}-n{n}", root / "cert", names[:n], args, profiled, server == "bare")
                    runs[(server, n)].append(run)
                    shown = "  ".join(f"{s:.2f}" for s in run.round_seconds)
                    print(f"  repeat {repeat + 1} {server} N={n}: rounds {shown} s; CPU {run.cpu_per_round:.2f} s/round; "
                          f"peak {run.hwm_kb * 1024 / MB:.0f} MB; {' | '.join(run.swarm[:1])}", flush=True)
        report(runs, sizes[0])
        if args.profile and (root / "profile.txt").exists():
            profile_top(root / "profile.txt")
        print(f"total {time.perf_counter() - started:.0f} s")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
