"""Virtual environments of the peer frameworks a bench measures Accord against.

Each peer gets a venv of its own (never Accord's .venv: their pins differ), made once under
``$ACCORD_PEER_ENVS`` (default ``~/.cache/accord-peers``) and reused while its package list
is unchanged. torch is pinned by scripts/constraints.txt to the CPU build on this disk, so
no peer pulls a CUDA build. A bench script imports this module as
``from _peer_envs import peer_python`` (its own folder is on ``sys.path``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONSTRAINTS = REPO / "scripts" / "constraints.txt"

#: peer -> the packages its venv installs (the workloads train a torch MLP on scikit-learn's digits)
PEERS: dict[str, tuple[str, ...]] = {
    "flower": ("flwr[simulation]==1.42.0", "torch==2.13.0", "scikit-learn", "psutil"),
    # OpenFL 1.9 calls np.reshape(..., newshape=...), which NumPy 2.4 removed
    "openfl": ("openfl==1.9", "numpy<2.4", "torch==2.13.0", "scikit-learn", "psutil"),
}


class PeerInstallError(RuntimeError):
    """A peer's venv could not be made; the message names the peer, the step and the error."""


def envs_root() -> Path:
    """Where the peers' venvs live."""
    return Path(os.environ.get("ACCORD_PEER_ENVS", Path.home() / ".cache" / "accord-peers"))


def peer_python(peer: str) -> Path:
    """The Python of ``peer``'s venv, made (or remade, when its package list changed) first."""
    packages = PEERS[peer]
    stamp_value = hashlib.sha256("\n".join(packages).encode() + CONSTRAINTS.read_bytes()).hexdigest()[:16]
    venv = envs_root() / peer
    python = venv / "bin" / "python"
    stamp = venv / ".accord-peer"
    if python.exists() and stamp.is_file() and stamp.read_text() == stamp_value:
        return python
    if venv.exists():
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    print(f"making the {peer} venv in {venv} ({', '.join(packages)}) ...", file=sys.stderr, flush=True)
    base = shutil.which("python3.11") or sys.executable
    steps = (
        [base, "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"],
        [str(python), "-m", "pip", "install", "-q", "-c", str(CONSTRAINTS), *packages],
    )
    for step in steps:
        try:
            subprocess.run(step, check=True, timeout=1800)
        except (OSError, subprocess.SubprocessError) as exc:
            shutil.rmtree(venv, ignore_errors=True)
            raise PeerInstallError(
                f"could not make the {peer} venv in {venv}: `{' '.join([Path(step[0]).name, *step[1:]])}` failed ({exc}); its output is above"
            ) from exc
    stamp.write_text(stamp_value)
    return python
