"""Accord against OpenFL 1.9 and Flower 1.42 on one workload, run interleaved in the same session.

    .venv/bin/python bench/peers.py [--sites 2 8] [--rounds 5] [--repeats 2] [--frameworks accord openfl flower]

The workload (bench/_peer_workload.py): the torch_digits template's MLP (64-128-128-10) on
scikit-learn's 8x8 digits, Accord's stratified 80/20 split and IID shards (the same arrays for
every framework), every run from the same initial model; ``epochs`` local epochs of a fresh
Adam (lr 0.003) per round in batches of 32 (opt_treatment RESET), sample-weighted FedAvg of
every site each round, ``rounds`` rounds. The aggregator and each site are separate processes
on 127.0.0.1:
- Accord: ``accord.experiment.local`` (what ``fx quickstart`` runs): ``fx aggregator start``
  and ``fx collaborator start`` per site, mutual TLS (bench/peers.py).
- OpenFL: its TaskRunner workspace and ``fx`` CLI, its PKI, mutual TLS (bench/_peer_openfl.py).
- Flower: ``flower-superlink`` (TLS) + ``flower-supernode`` per site (node authentication by
  registered keys) + ``flwr run`` (bench/_peer_flower.py).
The peers run in their own venvs (bench/_peer_envs.py, made on first use from PyPI); if one
cannot be made the bench stops with one line saying which and why. Frameworks are
interleaved (Accord, OpenFL, Flower, Accord, ...) and repeated.

Figures per run, then min / median per framework and the peer/Accord ratio of medians:
- round s: the median time between consecutive round ends (rounds 2..R; the first round holds
  the sites' start-up); a round end is Accord's "round N of R done" line, OpenFL's "Saving
  round N model" line, the time Flower's FedAvg calls its evaluate_fn after the round.
- wall s: the first process started -> Accord's/OpenFL's processes all exited, Flower's
  ServerApp wrote its results (its SuperLink and SuperNodes are long-running services); it
  holds every process's start-up (imports of torch and the framework), which on a loaded
  machine can outweigh the rounds.
- setup s: the workspace, plan and PKI before that (OpenFL: 4 + 2 x sites ``fx`` commands,
  the sites' four at a time; not part of wall s).
- agg MB: the aggregator's peak memory: the sum of VmHWM over the aggregator process and its
  descendants (Accord's and OpenFL's: one process; Flower's: the superlink, its SuperExec and
  the flwr-serverapp process), read every 50 ms.
- accuracy: the final global model's, evaluated by this script on the whole held-out split.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _peer_envs import PeerInstallError, peer_python
from _peer_flower import run_flower
from _peer_openfl import run_openfl
from _peer_procs import BenchError, TreePeak, children_matching
from _peer_workload import Run, Workload, accuracy_of, write_data
from _table import Column, Table

from accord.errors import AccordError
from accord.experiment.local import prepare_workspace, run_processes
from accord.tensors.state import load_state

FRAMEWORKS = ("accord", "openfl", "flower")
ROUND_DONE = re.compile(r"round \d+ of \d+ done")


def run_accord(work: Workload, data: Path, root: Path, timeout: float) -> Run:
    """One Accord federation of ``work`` through accord.experiment.local."""
    run = Run("accord", work.sites)
    began = time.time()
    plan = prepare_workspace(root / "ws", work.sites, work.rounds, overrides=work.plan_overrides())
    run.setup_seconds = time.time() - began
    ends: list[float] = []
    peak = TreePeak(lambda: children_matching(os.getpid(), f"aggregator start --workspace {plan.workspace}"))

    def on_line(line: str) -> None:
        if ROUND_DONE.search(line):
            ends.append(time.time())

    try:
        report = run_processes(plan, on_line=on_line, timeout=timeout)
    except AccordError as exc:
        raise BenchError(f"{exc.message}; {exc.fix}") from exc
    finally:
        run.memory_mb = peak.stop()
    if not report.ok:
        raise BenchError(f"exit codes {report.returncodes}; see the logs in {plan.workspace / 'logs'}")
    run.wall_seconds, run.round_ends = report.seconds, ends
    run.accuracy = accuracy_of(load_state(plan.resolve_path(plan.model.aggregator.settings.last_state_path)), data)
    return run


RUNNERS: dict[str, Callable[[Workload, Path, Path, float], Run]] = {"accord": run_accord, "openfl": run_openfl, "flower": run_flower}


def shared_data(work: Workload, root: Path) -> Path:
    """The sites' shards, the held-out split and the initial model of ``work``, as .npz files."""
    plan = prepare_workspace(root / "init-ws", work.sites, work.rounds, overrides=work.plan_overrides())
    return write_data(work, root / "data", plan.resolve_path(plan.model.aggregator.settings.init_state_path))


def summary(runs: list[Run], sizes: list[int], frameworks: list[str]) -> None:
    """Min / median of each figure per framework and site count, and the ratio of medians to Accord's."""
    figures = (("round s", lambda r: r.round_seconds, ".3f"), ("wall s", lambda r: r.wall_seconds, ".1f"),
               ("agg MB", lambda r: r.memory_mb, ".0f"), ("accuracy", lambda r: r.accuracy, ".4f"))
    columns = [Column("sites", 5), Column("framework", 9)]
    for name, _, number in figures:
        columns += [Column(f"min {name}", 10, number), Column(f"med {name}", 10, number), Column("x accord", 8, ".2f")]
    print()
    table = Table(*columns)
    for sites in sizes:
        base = {name: [get(r) for r in runs if r.framework == "accord" and r.sites == sites and not r.error] for name, get, _ in figures}
        for framework in frameworks:
            done = [r for r in runs if r.framework == framework and r.sites == sites and not r.error]
            if not done:
                table.row(str(sites), framework, "no run finished")
                continue
            cells: list[object] = [str(sites), framework]
            for name, get, _ in figures:
                values = [get(r) for r in done]
                median = statistics.median(values)
                cells += [min(values), median, median / statistics.median(base[name]) if base[name] else "-"]
            table.row(*cells)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, nargs="+", default=[2, 8])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--frameworks", nargs="+", choices=FRAMEWORKS, default=list(FRAMEWORKS))
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds one federation may run")
    parser.add_argument("--keep", action="store_true", help="keep the temp folders (workspaces, logs)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: every process group is killed at exit
    frameworks = [f for f in FRAMEWORKS if f in args.frameworks]
    for peer in frameworks[1:] if frameworks[0] == "accord" else frameworks:
        try:
            peer_python(peer)
        except PeerInstallError as exc:
            print(f"peers.py: {exc}; leave {peer} out with --frameworks", file=sys.stderr)
            return 2
    root = Path(tempfile.mkdtemp(prefix="accord-peers-bench-"))
    print(f"workload: digits MLP, {args.rounds} rounds, {args.epochs} local epochs, batch 32, Adam lr 0.003, FedAvg; "
          f"sites {args.sites}; {args.repeats} repeats; temp folder {root}")
    runs: list[Run] = []
    table = Table(Column("framework", 9), Column("sites", 5), Column("repeat", 6), Column("round s", 8, ".3f"), Column("wall s", 7, ".1f"),
                  Column("setup s", 7, ".1f"), Column("agg MB", 7, ".0f"), Column("accuracy", 8, ".4f"), Column("error", 0))
    try:
        data = {sites: shared_data(Workload(sites, args.rounds, args.epochs), root / f"shared-{sites}") for sites in args.sites}
        for repeat in range(1, args.repeats + 1):
            for sites in args.sites:
                work = Workload(sites, args.rounds, args.epochs)
                for framework in frameworks:
                    folder = root / f"{framework}-{sites}-{repeat}"
                    folder.mkdir()
                    try:
                        run = RUNNERS[framework](work, data[sites], folder, args.timeout)
                    except (BenchError, OSError, ValueError) as exc:
                        run = Run(framework, sites, error=str(exc))
                    runs.append(run)
                    table.row(framework, str(sites), str(repeat), run.round_seconds, run.wall_seconds, run.setup_seconds, run.memory_mb,
                              run.accuracy, run.error)
        summary(runs, args.sites, frameworks)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 1 if any(r.error for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
