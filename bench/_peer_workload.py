"""The one workload the peer bench runs on every framework, and what a run of it measured.

The data are Accord's: each site's shard and the held-out split come from
``accord.data.builtin.DigitsDataLoader`` (scikit-learn's digits, the plan's stratified 80/20
split, IID shards) and are written as .npz files that the peers' code reads; the initial
model is the torch_digits template's (seed 0), written the same way. Every framework's final
model is evaluated here, by one function, on the whole held-out split.
A bench script imports this as ``from _peer_workload import ...``.
"""

from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from accord.data.builtin import DigitsDataLoader
from accord.tensors.state import load_state

PEERS_DIR = Path(__file__).resolve().parent / "peers"
sys.path.insert(0, str(PEERS_DIR))
import digits_mlp  # noqa: E402  (bench/peers/digits_mlp.py: the peers' model and training)


@dataclass(frozen=True)
class Workload:
    """What every framework runs: sites, rounds, local epochs, batch size, Adam's learning rate."""

    sites: int
    rounds: int
    epochs: int = 2
    batch_size: int = 32
    lr: float = 0.003
    valid_fraction: float = 0.2
    seed: int = 0

    def plan_overrides(self) -> dict[str, object]:
        """The same workload as overrides of Accord's torch_digits plan."""
        return {
            "collaborator.settings.opt_treatment": "RESET",
            "data_loader.settings.batch_size": self.batch_size,
            "data_loader.settings.valid_fraction": self.valid_fraction,
            "data_loader.settings.seed": self.seed,
            "task_runner.settings.optimizer": {"name": "Adam", "lr": self.lr},
            "tasks.settings.train.kwargs.epochs": self.epochs,
        }


def _arrays(loader: DigitsDataLoader, split: str) -> tuple[np.ndarray, np.ndarray]:
    batches = list(loader.train_batches(seed=0) if split == "train" else loader.valid_batches())
    return np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches])


def write_data(work: Workload, folder: Path, init_state: Path) -> Path:
    """site<i>.npz for i in 1..sites, valid.npz (the whole held-out split) and init.npz
    (the model in ``init_state``) in ``folder``; returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for site in range(1, work.sites + 1):
        loader = DigitsDataLoader(site, work.sites, work.batch_size, work.valid_fraction, "iid", seed=work.seed)
        (xt, yt), (xv, yv) = _arrays(loader, "train"), _arrays(loader, "valid")
        np.savez(folder / f"site{site}.npz", x_train=xt, y_train=yt, x_valid=xv, y_valid=yv)
    whole = DigitsDataLoader(1, 1, work.batch_size, work.valid_fraction, "iid", seed=work.seed)
    x, y = _arrays(whole, "valid")
    np.savez(folder / "valid.npz", x=x, y=y)
    init = load_state(init_state)
    np.savez(folder / "init.npz", **{name: np.asarray(init[name], dtype=np.float32) for name in digits_mlp.NAMES})
    return folder


def accuracy_of(weights: dict[str, np.ndarray], data: Path) -> float:
    """Accuracy of a final model on the whole held-out split; its tensors are matched to the
    MLP's by the end of their names (``model.0.weight`` is ``0.weight``)."""
    ordered = []
    for name in digits_mlp.NAMES:
        hits = [key for key in weights if key == name or key.endswith("." + name)]
        if len(hits) != 1:
            raise ValueError(f"the final model has {len(hits)} tensors named like {name!r}: {sorted(weights)}")
        ordered.append(weights[hits[0]])
    net = digits_mlp.build_mlp()
    digits_mlp.set_weights(net, ordered)
    held_out = digits_mlp.load_npz(str(data / "valid.npz"))
    return digits_mlp.accuracy(net, held_out["x"], held_out["y"])


@dataclass
class Run:
    """One framework's run of the workload."""

    framework: str
    sites: int
    round_ends: list[float] = field(default_factory=list)  #: time.time() at which each round ended
    setup_seconds: float = 0.0  #: workspace, plan, PKI: before the first process starts
    wall_seconds: float = 0.0  #: first process started -> every process exited
    memory_mb: float = 0.0  #: the aggregator's peak (see TreePeak)
    accuracy: float = 0.0
    error: str = ""

    @property
    def round_seconds(self) -> float:
        """Median time between consecutive round ends, after the first round (nan if < 2 rounds)."""
        gaps = np.diff(self.round_ends)
        return float(statistics.median(gaps)) if len(gaps) else float("nan")
