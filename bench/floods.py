"""Honest rounds per minute while one peer floods the aggregator, against the quiet rate of the same run.

A real `fx aggregator start` process serves a workspace over mutual TLS on 127.0.0.1 with
real certificates; honest `fx collaborator start` processes train a small model round
after round. A third enrolled site, which runs no collaborator, and a revoked certificate
flood the aggregator from this process, one flood per window:

- 200 SendResult streams from the enrolled site, half header-less, half stalled after a valid
  header (the round's model digest, from one GetModel per round);
- 64 such streams from the revoked certificate;
- 200 GetModel streams from the enrolled site that never read a chunk;
- 2,000 long polls from the enrolled site.

Each repeat measures a quiet window, then each flood's window; a flood's rate is divided by
that repeat's quiet rate. The aggregator's resident memory and thread count are sampled
through every window (the highest is shown). Every loop here is bounded and stops by itself;
the processes are stopped at the end.

    .venv/bin/python bench/floods.py [--window 20] [--repeats 3] [--collaborators 2]
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from flooding import Flood, process_reading, run_flood

SMALL = {  # 38k parameters (150 KB): more than an unread stream's flow-control window
    "task_runner.settings.model_kwargs": {"in_features": 64, "hidden": 512, "num_classes": 10},
    "tasks.settings.train.kwargs": {"epochs": 1},
}
MIB = 1024 * 1024
FLOODS = [("stalled_results", 200, "site"), ("stalled_results", 64, "revoked"), ("unread_models", 200, "site"), ("long_polls", 2000, "site")]


@dataclass
class Window:
    """One measured window: honest rounds per minute, the aggregator's highest RSS and threads, the flood's outcomes."""

    rate: float
    rss: int
    threads: int
    codes: Counter[str] = field(default_factory=Counter)


class Federation:
    """The aggregator and honest collaborators of a fresh workspace, as processes."""

    def __init__(self, root: Path, honest: int, cpus: tuple[set[int], set[int]] | None) -> None:
        from accord.experiment.local import fx_command, prepare_workspace
        from accord.pki import certify, revoke

        names = honest + 1  # the last enrolled site runs no collaborator: it floods
        policy = {"policy": "percentage", "percentage": honest / names, "min_reports": honest}
        self.plan = prepare_workspace(
            root / "ws", names, 1_000_000, overrides={**SMALL, "straggler_handling_policy.settings": policy}
        )
        cert_dir = self.plan.resolve_path(self.plan.model.network.settings.cert_dir)
        certify(cert_dir, "collaborator", "outsider")
        revoke(cert_dir, "outsider", "bench: a revoked site")
        self.site = f"collaborator{names}"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        logs = self.plan.workspace / "logs"
        logs.mkdir(exist_ok=True)
        self.log = logs / "aggregator.out"
        with self.log.open("w") as out:
            self.aggregator = subprocess.Popen(
                fx_command("aggregator", "start", "-w", str(self.plan.workspace)),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=_pinned(cpus and cpus[0]),
            )
        self._wait_listening()
        self.collaborators = []
        for i in range(1, honest + 1):
            with (logs / f"collaborator{i}.out").open("w") as out:
                self.collaborators.append(
                    subprocess.Popen(
                        fx_command("collaborator", "start", "-n", f"collaborator{i}", "-w", str(self.plan.workspace)),
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        env=env,
                        preexec_fn=_pinned(cpus and cpus[1]),
                    )
                )

    @property
    def address(self) -> str:
        return f"localhost:{self.plan.model.network.settings.agg_port}"

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("localhost", self.plan.model.network.settings.agg_port), timeout=1).close()
                return
            except OSError:
                if self.aggregator.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the aggregator did not start:\n{self.log.read_text()}") from None
                time.sleep(0.1)

    def round(self) -> int:
        """The round the aggregator's saved state names (its commit point)."""
        from accord.aggregator.status import read_status
        from accord.errors import AccordError

        for _ in range(50):
            try:
                return int(read_status(self.plan)["round"])
            except (OSError, ValueError, KeyError, AccordError):
                time.sleep(0.02)
        raise SystemExit("the aggregator's saved round cannot be read")

    def tls(self, who: str):  # -> ClientTLS
        from accord.pki.layout import CertLayout
        from accord.transport.tls import ClientTLS

        layout = CertLayout(self.plan.resolve_path(self.plan.model.network.settings.cert_dir))
        name = self.site if who == "site" else "outsider"
        return name, ClientTLS(layout.collaborator_cert(name), layout.collaborator_key(name), layout.chain)

    def measure(self, seconds: float, flood: Flood | None, reopen: float) -> Window:
        """Honest rounds per minute over ``seconds``, with ``flood`` running (or quiet)."""
        samples: list[tuple[int, int]] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.25):
                samples.append(process_reading(self.aggregator.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        start_round, started = self.round(), time.monotonic()
        sampler.start()
        codes: Counter[str] = Counter()
        if flood is None:
            time.sleep(seconds)
        else:
            codes = run_flood(self.address, flood, seconds, reopen)
        rounds, elapsed = self.round() - start_round, time.monotonic() - started
        stop.set()
        sampler.join()
        if self.aggregator.poll() is not None:
            raise SystemExit(f"the aggregator exited:\n{self.log.read_text()[-4000:]}")
        return Window(60.0 * rounds / elapsed, max(s[0] for s in samples), max(s[1] for s in samples), codes)

    def close(self) -> None:
        for proc in [*self.collaborators, self.aggregator]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in [*self.collaborators, self.aggregator]:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def cpu_plan() -> tuple[set[int], set[int]] | None:
    """With several CPUs: the aggregator alone on the first, the honest sites and the flooder on the others.

    The flooder (this process) runs niced there, so it takes only CPU the honest sites leave:
    it stands for an attacker's own machine, which cannot slow the sites' training. The
    aggregator pays for every flood call on its own CPU, as on its own host.
    """
    cpus = sorted(os.sched_getaffinity(0))
    return ({cpus[0]}, set(cpus[1:])) if len(cpus) > 1 else None


def _pinned(cpus: set[int] | None) -> Callable[[], None] | None:
    return None if cpus is None else functools.partial(os.sched_setaffinity, 0, cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=20.0, help="seconds per measured window")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--collaborators", type=int, default=2, help="honest collaborators")
    parser.add_argument("--reopen", type=float, default=1.0, help="seconds a flood waits before replacing an ended or refused call")
    args = parser.parse_args()
    plan = cpu_plan()
    if plan is not None:
        print(f"aggregator on CPU {sorted(plan[0])}; honest sites and the (niced) flooder on CPUs {sorted(plan[1])}", file=sys.stderr)

    federation = Federation(Path(tempfile.mkdtemp(prefix="accord-floods-")), args.collaborators, plan)
    if plan is not None:
        os.sched_setaffinity(0, plan[1])
        os.nice(10)
    try:
        while federation.round() < 2:  # joined, and past the first round's start-up
            time.sleep(0.2)
        quiet: list[Window] = []
        flooded: dict[int, list[Window]] = {i: [] for i in range(len(FLOODS))}
        for repeat in range(args.repeats):
            quiet.append(federation.measure(args.window, None, args.reopen))
            for index, (kind, count, who) in enumerate(FLOODS):
                sender, tls = federation.tls(who)
                flood = Flood(kind, count, tls, sender, federation.plan.hash, federation.plan.workspace_hash())
                flooded[index].append(federation.measure(args.window, flood, args.reopen))
            print(f"repeat {repeat + 1}/{args.repeats} done", file=sys.stderr, flush=True)
    finally:
        federation.close()
    report(args, quiet, flooded, federation)


def report(args: argparse.Namespace, quiet: list[Window], flooded: dict[int, list[Window]], federation: Federation) -> None:
    rates = [w.rate for w in quiet]
    print(
        f"{args.collaborators} honest collaborators, {args.window:g} s windows, {args.repeats} repeats, "
        f"flood calls replaced after {args.reopen:g} s"
    )
    print(f"{'condition':58} {'rounds/min min/median':>22} {'ratio min/median':>17} {'RSS MiB':>8} {'threads':>8}")
    print(
        f"{'quiet':58} {min(rates):>10.1f} / {statistics.median(rates):<9.1f} {'1.00':>17} "
        f"{max(w.rss for w in quiet) / MIB:>8.0f} {max(w.threads for w in quiet):>8}"
    )
    for index, (kind, count, who) in enumerate(FLOODS):
        windows = flooded[index]
        ratios = [w.rate / q.rate if q.rate else 0.0 for w, q in zip(windows, quiet)]
        label = Flood(kind, count, None, "revoked certificate" if who == "revoked" else "enrolled site", "").label  # type: ignore[arg-type]
        print(
            f"{label:58} {min(w.rate for w in windows):>10.1f} / {statistics.median(w.rate for w in windows):<9.1f} "
            f"{min(ratios):>7.2f} / {statistics.median(ratios):<7.2f} "
            f"{max(w.rss for w in windows) / MIB:>8.0f} {max(w.threads for w in windows):>8}"
        )
        codes = sum((w.codes for w in windows), Counter())
        seconds = args.window * len(windows)
        print(
            f"{'':4}flood calls ended ({sum(codes.values()) / seconds:.0f}/s): "
            + ", ".join(f"{code} {n}" for code, n in codes.most_common())
        )
    log = federation.log.read_text()
    print(f"aggregator log: {federation.log} ({sum('refused' in line for line in log.splitlines())} refusal lines)")


if __name__ == "__main__":
    main()
