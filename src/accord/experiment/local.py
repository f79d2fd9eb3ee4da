"""A complete federation on this machine: a workspace, a CA, and one process per participant.

The aggregator and each collaborator run as separate ``fx`` processes talking gRPC over
mutual TLS on 127.0.0.1, exactly as they would across sites.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from accord.errors import AccordError
from accord.metric_records import MetricRecord, read_metrics
from accord.plan.loader import Plan, load_plan, update_plan_file
from accord.workspace.create import create_workspace
from accord.workspace.initialize import initialize_model

#: a local federation starts one process per site: at most this many (fx simulate runs more)
MAX_LOCAL_SITES = 64


def check_local_sites(count: int) -> None:
    """AccordError unless ``count`` sites (each a process of its own) fit a local federation."""
    if count < 1:
        raise AccordError(f"--collaborators is {count}; it must be at least 1", "pass e.g. --collaborators 2")
    if count > MAX_LOCAL_SITES:
        raise AccordError(
            f"a local federation of {count} collaborators would start {count} processes; at most {MAX_LOCAL_SITES} run here",
            "pass --collaborators 64 or fewer, or simulate many clients in one process with `fx simulate -w WS --clients N`",
        )


def check_timeout(seconds: float) -> None:
    """AccordError unless ``seconds`` is a timeout a local federation can run under (at least 1 s)."""
    if not math.isfinite(seconds) or seconds < 1:
        raise AccordError(f"--timeout is {seconds:g}; it must be a number of seconds, at least 1", "pass e.g. --timeout 600")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prepare_workspace(
    workspace: Path | None,
    collaborators: int,
    rounds: int,
    template: str = "torch_digits",
    overrides: Mapping[str, Any] | None = None,
) -> Plan:
    """Create the workspace from ``template``, write plan and data.yaml, the initial model and the PKI."""
    check_local_sites(collaborators)
    if rounds < 1:
        raise AccordError(f"--rounds is {rounds}; it must be at least 1", "pass e.g. --rounds 5")
    root = Path(workspace) if workspace else Path(tempfile.mkdtemp(prefix="accord-quickstart-"))
    root = create_workspace(root, template)
    names = [f"collaborator{i}" for i in range(1, collaborators + 1)]
    overrides = {
        "aggregator.settings.rounds_to_train": rounds,
        "data_loader.settings.collaborator_count": collaborators,
        **(overrides or {}),
    }
    return configure_federation(root, {name: i for i, name in enumerate(names, start=1)}, overrides)


def configure_federation(
    root: Path, data_paths: Mapping[str, str | int], overrides: Mapping[str, Any], initial_model: Path | None = None
) -> Plan:
    """Make the workspace at ``root`` a federation on 127.0.0.1 of the sites ``data_paths`` names:
    plan (members, address, a free port, the overrides), data.yaml, initial model (a copy of
    ``initial_model``, else built) and a fresh PKI."""
    from accord.pki import make_federation_pki

    names = list(data_paths)
    plan_file = root / "plan" / "plan.yaml"
    update_plan_file(
        plan_file,
        {
            "collaborators": names,
            "network.settings.agg_addr": "localhost",
            "network.settings.agg_port": free_port(),
            **overrides,
        },
    )
    plan = load_plan(plan_file, workspace=root)
    data_config = plan.resolve_path(plan.model.collaborator.settings.data_config_path)
    data_config.parent.mkdir(parents=True, exist_ok=True)
    data_config.write_text(yaml.safe_dump(dict(data_paths), sort_keys=False), encoding="utf-8")
    if initial_model is None:
        initialize_model(plan)
    else:
        target = plan.resolve_path(plan.model.aggregator.settings.init_state_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(initial_model, target)
    make_federation_pki(plan.resolve_path(plan.model.network.settings.cert_dir), "localhost", names)
    return plan


@dataclass
class FederationReport:
    """How a local federation ended: exit codes, metrics and model files."""

    workspace: Path
    returncodes: dict[str, int]
    records: list[MetricRecord] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(code == 0 for code in self.returncodes.values())

    def aggregated(self, key: str) -> list[float]:
        """Per-round aggregated values of ``task/metric``, in round order."""
        task, metric = key.split("/")
        rows = [r for r in self.records if r.origin == "aggregator" and r.task == task and r.metric == metric]
        return [r.value for r in sorted(rows, key=lambda r: r.round)]


def fx_command(*args: str) -> list[str]:
    """The command line that runs ``fx`` with this interpreter."""
    return [sys.executable, "-m", "accord.cli.main", *args]


def run_processes(
    plan: Plan, on_line: Callable[[str], None] | None = None, timeout: float = 600.0
) -> FederationReport:
    """Start the aggregator and every collaborator as processes; wait for all to exit."""
    root = plan.workspace
    logs = root / "logs"
    logs.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    aggregator = subprocess.Popen(
        fx_command("aggregator", "start", "--workspace", str(root)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    processes: dict[str, subprocess.Popen] = {"aggregator": aggregator}
    log_files = []
    try:
        for name in plan.model.collaborators:
            out = (logs / f"{name}.log").open("w", encoding="utf-8")
            log_files.append(out)
            processes[name] = subprocess.Popen(
                fx_command("collaborator", "start", "-n", name, "--workspace", str(root)),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        watchdog = threading.Thread(
            target=_watch, args=(processes, started + timeout), daemon=True, name="accord-watchdog"
        )
        watchdog.start()
        with (logs / "aggregator.log").open("w", encoding="utf-8") as agg_log:
            assert aggregator.stdout is not None
            for line in aggregator.stdout:
                agg_log.write(line)
                if on_line is not None:
                    on_line(line.rstrip("\n"))
        deadline = started + timeout
        try:
            codes = {name: proc.wait(timeout=max(deadline - time.perf_counter(), 1.0)) for name, proc in processes.items()}
        except subprocess.TimeoutExpired as exc:
            raise AccordError(f"the federation did not finish within {timeout:.0f} s", f"see the logs in {logs}") from exc
    finally:
        for proc in processes.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for out in log_files:
            out.close()
    records = read_metrics(plan.resolve_path(plan.model.aggregator.settings.metrics_path))
    return FederationReport(root, codes, records, time.perf_counter() - started)


def _watch(processes: dict[str, subprocess.Popen], deadline: float) -> None:
    """Stop everything if a collaborator dies with an error or the deadline passes."""
    aggregator = processes["aggregator"]
    while aggregator.poll() is None:
        failed = any(proc.poll() not in (None, 0) for name, proc in processes.items() if name != "aggregator")
        if failed or time.perf_counter() >= deadline:
            for proc in processes.values():
                if proc.poll() is None:
                    proc.terminate()
            return
        time.sleep(0.5)
