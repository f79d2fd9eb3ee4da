"""NumpyClients for the simulation tests (a module of its own: Ray's workers import it)."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from accord.plan.loader import Plan, apply_overrides, read_yaml, validate_plan
from accord.workspace.create import TEMPLATES_DIR


class Counted:
    """A client that adds 1 to ``w`` and counts how many of its kind are alive at once."""

    lock = threading.Lock()
    alive = 0
    most_alive = 0
    most_threads = 0
    seen: ClassVar[list[str]] = []

    def __init__(self, cid: str) -> None:
        self.cid = cid
        with Counted.lock:
            Counted.alive += 1
            Counted.most_alive = max(Counted.most_alive, Counted.alive)
            Counted.most_threads = max(Counted.most_threads, threading.active_count())

    def __del__(self) -> None:
        with Counted.lock:
            Counted.alive -= 1

    def get_parameters(self) -> dict[str, np.ndarray]:
        return {"w": np.zeros(4, np.float32)}

    def fit(self, parameters: Any, config: Any) -> tuple[dict[str, np.ndarray], int, dict[str, float]]:
        with Counted.lock:
            Counted.seen.append(self.cid)
        if self.cid == "bad":
            raise RuntimeError("disk on fire")
        return {"w": parameters["w"] + np.float32(1.0)}, 3, {"loss": 1.0, "pid": float(os.getpid())}

    def evaluate(self, parameters: Any, config: Any) -> tuple[int, dict[str, float]]:
        return 3, {"accuracy": float(parameters["w"][0])}


def tiny_plan(workspace: Path, rounds: int = 1, **overrides: Any) -> Plan:
    """The torch_digits plan (its tasks, FedAvg, bounds) for NumpyClients: ``rounds``, no final validation."""
    raw = read_yaml(TEMPLATES_DIR / "torch_digits" / "plan" / "plan.yaml")
    settings = {
        "aggregator.settings.rounds_to_train": rounds,
        "aggregator.settings.final_validation": False,
        "collaborator.settings.opt_treatment": "RESET",
        **overrides,
    }
    return validate_plan(apply_overrides(raw, settings), workspace)


class Slow(Counted):
    """A client whose training takes a while."""

    def fit(self, parameters: Any, config: Any) -> tuple[dict[str, np.ndarray], int, dict[str, float]]:
        import time

        time.sleep(0.5)
        return super().fit(parameters, config)
