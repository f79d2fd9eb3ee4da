"""Flower 1.42 on the peer bench's workload, with its deployment engine in its own venv.

The bench copies the ServerApp/ClientApp of bench/peers/flower (over bench/peers/digits_mlp.py)
into a temp folder and runs what a Flower operator runs: ``flower-superlink`` (its Fleet,
Control and Runtime APIs on one HTTPS port, TLS with a server certificate for localhost made
by Accord's PKI code, ``--enable-supernode-auth``), one ``flower-supernode`` per site, each
authenticating with its own P-384 key registered beforehand by ``flwr supernode register``
(Flower's client authentication: it has no client certificates, so this is the closest to
mutual TLS its CLI offers), then ``flwr run``. Every process is on 127.0.0.1; ``FLWR_HOME``
is a temp folder, so ~/.flwr is left alone.
A bench script imports this as ``from _peer_flower import run_flower``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

import numpy as np
from _peer_envs import peer_python
from _peer_procs import BenchError, TreePeak, run_step, start, stop
from _peer_workload import PEERS_DIR, Run, Workload, accuracy_of
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from accord.experiment.local import free_port
from accord.pki import make_federation_pki

TEMPLATE = PEERS_DIR / "flower"


def _node_key(folder: Path, site: int) -> tuple[Path, Path]:
    """A SuperNode's P-384 key pair in OpenSSH format (what Flower's node authentication reads)."""
    key = ec.generate_private_key(ec.SECP384R1())
    private, public = folder / f"node{site}", folder / f"node{site}.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))
    private.chmod(0o600)
    return private, public


def _wait_listening(port: int, proc, deadline: float, log: Path) -> None:
    while time.time() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"flower-superlink exited with {proc.returncode}; see {log}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise BenchError(f"flower-superlink did not listen on port {port}; see {log}")


def run_flower(work: Workload, data: Path, root: Path, timeout: float) -> Run:
    """One Flower federation of ``work``; ``root`` is an empty temp folder for it."""
    run = Run("flower", work.sites)
    python = peer_python("flower")
    bin_dir = python.parent
    app, logs, home, certs, keys = (root / name for name in ("app", "logs", "flwr-home", "cert", "keys"))
    for folder in (logs, home, keys):
        folder.mkdir()
    began = time.time()
    shutil.copytree(TEMPLATE, app, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PEERS_DIR / "digits_mlp.py", app / "digitsbench" / "digits_mlp.py")
    make_federation_pki(certs, "localhost", [])
    chain, server_cert, server_key = certs / "cert_chain.crt", certs / "server" / "agg_localhost.crt", certs / "server" / "agg_localhost.key"
    port = free_port()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "bench"\n\n[superlink.bench]\naddress = "localhost:{port}"\nroot-certificates = "{chain}"\n', encoding="utf-8"
    )
    env = {"FLWR_HOME": str(home), "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": ""}
    node_keys = [_node_key(keys, site) for site in range(1, work.sites + 1)]
    started = time.time()
    run.setup_seconds = started - began
    superlink, _ = start(
        [str(bin_dir / "flower-superlink"), "--ssl-ca-certfile", str(chain), "--ssl-certfile", str(server_cert), "--ssl-keyfile", str(server_key),
         "--enable-supernode-auth", "--disable-runtime-dependency-installation", "--host", "127.0.0.1", "--port", str(port),
         "--health-server-address", f"127.0.0.1:{free_port()}"],
        root, logs / "superlink.log", env,
    )
    peak = TreePeak(lambda: [superlink.pid])
    procs = [superlink]
    try:
        _wait_listening(port, superlink, started + 60.0, logs / "superlink.log")
        for _, public in node_keys:
            run_step([str(bin_dir / "flwr"), "supernode", "register", str(public), "bench"], root, logs / "register.log", env, timeout=120.0)
        for site, (private, _) in enumerate(node_keys, start=1):
            node, _ = start(
                [str(bin_dir / "flower-supernode"), "--superlink", f"localhost:{port}", "--root-certificates", str(chain),
                 "--auth-supernode-private-key", str(private), "--node-config", f"site={site}", "--port", str(free_port()),
                 "--health-server-address", f"127.0.0.1:{free_port()}"],
                root, logs / f"supernode{site}.log", env,
            )
            procs.append(node)
        config = f'sites={work.sites} rounds={work.rounds} epochs={work.epochs} batch-size={work.batch_size} lr={work.lr} data-dir="{data}" out-dir="{root}"'
        run_step([str(bin_dir / "flwr"), "run", str(app), "bench", "--run-config", config], root, logs / "run.log", env, timeout=120.0)
        deadline = started + timeout
        while not (root / "rounds.json").exists():
            dead = [p for p in procs if p.poll() is not None]
            if dead:
                raise BenchError(f"a Flower process exited with {dead[0].returncode}; see the logs in {logs}")
            if time.time() > deadline:
                raise BenchError(f"the Flower run did not finish within {timeout:.0f} s; see the logs in {logs}")
            time.sleep(0.05)
        run.wall_seconds = time.time() - started
    finally:
        run.memory_mb = peak.stop()
        stop(procs)
    run.round_ends = json.loads((root / "rounds.json").read_text())
    with np.load(root / "final.npz", allow_pickle=False) as arrays:
        run.accuracy = accuracy_of({k: arrays[k] for k in arrays.files}, data)
    return run
