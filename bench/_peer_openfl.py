"""OpenFL 1.9 on the peer bench's workload, driven through its own ``fx`` CLI in its own venv.

The bench generates a TaskRunner-API workspace in a temp folder from bench/peers/openfl (a
plan, a data loader of one digits shard, a PyTorchTaskRunner over bench/peers/digits_mlp.py),
then does what an OpenFL operator does on one machine: ``fx plan initialize``, the PKI
(``fx workspace certify`` makes the CA; ``fx aggregator generate-cert-request/certify`` and
``fx collaborator generate-cert-request/certify`` per site, four sites at a time (each writes
its own files; cols.yaml already lists them all): mutual TLS, OpenFL's default
``use_tls: True, require_client_auth: True``), then ``fx aggregator start`` and one
``fx collaborator start`` per site, each its own process on 127.0.0.1 (``localhost``).
A bench script imports this as ``from _peer_openfl import run_openfl``.
"""

from __future__ import annotations

import os
import re
import shutil
import string
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from _peer_envs import peer_python
from _peer_procs import TreePeak, run_step, start, stop, wait_all
from _peer_workload import PEERS_DIR, Run, Workload, accuracy_of

from accord.experiment.local import free_port

TEMPLATE = PEERS_DIR / "openfl"


def _workspace(work: Workload, data: Path, ws: Path) -> list[str]:
    """The generated workspace in ``ws``; its collaborators' names."""
    shutil.copytree(TEMPLATE / "src", ws / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PEERS_DIR / "digits_mlp.py", ws / "src" / "digits_mlp.py")
    (ws / "plan").mkdir()
    for sub in ("save", "logs", "cert", "local_state"):
        (ws / sub).mkdir()
    plan = string.Template((TEMPLATE / "plan" / "plan.yaml").read_text(encoding="utf-8")).substitute(
        rounds=work.rounds, batch_size=work.batch_size, data_dir=data, sites=work.sites,
        init_weights=data / "init.npz", lr=work.lr, port=free_port(), epochs=work.epochs,
    )
    (ws / "plan" / "plan.yaml").write_text(plan, encoding="utf-8")
    names = [f"collaborator{i}" for i in range(1, work.sites + 1)]
    (ws / "plan" / "cols.yaml").write_text("collaborators:\n" + "".join(f"- {n}\n" for n in names), encoding="utf-8")
    (ws / "plan" / "data.yaml").write_text("".join(f"{n},{i}\n" for i, n in enumerate(names, 1)), encoding="utf-8")
    (ws / ".workspace").write_text("current_plan_name: default\n", encoding="utf-8")
    return names


def _is_round_end(line: str) -> bool:
    """The aggregator's line that closes a round: OpenFL 1.9 logs it when every site's tasks
    are in and it saves the round's aggregated model."""
    return re.search(r"Saving round \d+ model", line) is not None


def run_openfl(work: Workload, data: Path, root: Path, timeout: float) -> Run:
    """One OpenFL federation of ``work``; ``root`` is an empty temp folder for it."""
    run = Run("openfl", work.sites)
    python = peer_python("openfl")
    fx = str(python.parent / "fx")
    env = {"PATH": f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": ""}
    ws, logs = root / "workspace", root / "logs"
    ws.mkdir()
    logs.mkdir()
    began = time.time()
    names = _workspace(work, data, ws)
    setup_log = logs / "setup.log"
    run_step([fx, "plan", "initialize"], ws, setup_log, env)
    run_step([fx, "workspace", "certify"], ws, setup_log, env)
    run_step([fx, "aggregator", "generate-cert-request", "--fqdn", "localhost"], ws, setup_log, env)
    run_step([fx, "aggregator", "certify", "--fqdn", "localhost", "--silent"], ws, setup_log, env)

    def certify(name: str) -> None:  # one site's key, request and certificate; sites in parallel
        log = logs / f"setup-{name}.log"
        run_step([fx, "collaborator", "generate-cert-request", "-n", name, "--silent", "--skip-package"], ws, log, env)
        run_step([fx, "collaborator", "certify", "-n", name, "--silent"], ws, log, env)

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(certify, names))
    started = time.time()
    run.setup_seconds = started - began
    aggregator, agg_lines = start([fx, "aggregator", "start"], ws, logs / "aggregator.log", env)
    peak = TreePeak(lambda: [aggregator.pid])
    procs = {"aggregator": aggregator}
    try:
        for name in names:
            procs[name], _ = start([fx, "collaborator", "start", "-n", name], ws, logs / f"{name}.log", env)
        wait_all(procs, started + timeout, logs, "aggregator")
        run.wall_seconds = time.time() - started
    finally:
        run.memory_mb = peak.stop()
        stop(list(procs.values()))
    run.round_ends = agg_lines.stamps(_is_round_end)
    final = root / "final.npz"
    run_step([str(python), str(TEMPLATE / "export_last.py"), str(final)], ws, logs / "export.log", env)
    with np.load(final, allow_pickle=False) as arrays:
        run.accuracy = accuracy_of({k: arrays[k] for k in arrays.files}, data)
    return run

