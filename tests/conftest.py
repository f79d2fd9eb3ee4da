"""Shared fixtures: workspaces made from the packaged template."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from accord.plan.loader import Plan, load_plan, update_plan_file
from accord.workspace.create import create_workspace

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
