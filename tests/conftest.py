"""Shared fixtures: workspaces made from the packaged template, notebook cells, digits shards."""

from __future__ import annotations

import itertools
import linecache
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from accord.plan.loader import Plan, load_plan, update_plan_file
from accord.workspace.create import create_workspace

_CELLS = itertools.count(1)


def run_cell(source: str, namespace: dict[str, Any]) -> None:
    """Run ``source`` as a Jupyter cell runs: in a ``__main__`` namespace, its lines kept in linecache."""
    namespace.setdefault("__name__", "__main__")
    filename = f"/tmp/ipykernel_0/{next(_CELLS)}.py"  # the kind of name ipykernel gives a cell
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    exec(compile(source, filename, "exec"), namespace)


def write_digits_shards(folder: Path, count: int) -> tuple[list[Path], np.ndarray, np.ndarray]:
    """Digits scaled to [0, 1], 80/20 split, IID shards as .npz files; returns them and the whole valid split."""
    x, y = load_digits(return_X_y=True)
    x_train, x_valid, y_train, y_valid = train_test_split(
        (x / 16.0).astype(np.float32), y, test_size=0.2, stratify=y, random_state=0
    )
    folder.mkdir()
    trains = np.array_split(np.arange(len(y_train)), count)
    valids = np.array_split(np.arange(len(y_valid)), count)
    paths = [folder / f"shard{i}.npz" for i in range(1, count + 1)]
    for path, train, valid in zip(paths, trains, valids):
        np.savez(path, x_train=x_train[train], y_train=y_train[train], x_valid=x_valid[valid], y_valid=y_valid[valid])
    return paths, x_valid, y_valid


FAST = {
    "task_runner.settings.model_kwargs": {"in_features": 64, "hidden": 32, "num_classes": 10},
    "tasks.settings.train.kwargs": {"epochs": 1},
}


def make_workspace(root: Path, names: list[str], rounds: int, overrides: dict[str, Any] | None = None) -> Plan:
    """A torch_digits workspace for ``names`` (shards 1..N), with a small model."""
    workspace = create_workspace(root, "torch_digits")
    plan_file = workspace / "plan" / "plan.yaml"
    update_plan_file(
        plan_file,
        {
            "collaborators": names,
            "aggregator.settings.rounds_to_train": rounds,
            "data_loader.settings.collaborator_count": len(names),
            **FAST,
            **(overrides or {}),
        },
    )
    (workspace / "plan" / "data.yaml").write_text(yaml.safe_dump({n: i for i, n in enumerate(names, 1)}))
    return load_plan(plan_file, workspace=workspace)


@pytest.fixture
def workspace_factory(tmp_path: Path):
    counter = iter(range(1000))

    def factory(names: list[str], rounds: int = 2, overrides: dict[str, Any] | None = None) -> Plan:
        return make_workspace(tmp_path / f"ws{next(counter)}", names, rounds, overrides)

    return factory


def wait_listening(port: int, proc: subprocess.Popen, log: Path | None = None, timeout: float = 60.0) -> None:
    """Block until a process started to serve on 127.0.0.1:``port`` accepts TCP connections."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"nothing listens on port {port}" + (f":\n{log.read_text()}" if log else "")) from None
            time.sleep(0.1)
