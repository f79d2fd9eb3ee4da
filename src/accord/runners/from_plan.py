"""The plan's task runner, built from its section as every end builds it."""

from __future__ import annotations

from typing import Any

from accord.data.base import DataLoader
from accord.plan.loader import Plan
from accord.plan.objects import build
from accord.runners.base import TaskRunner


def build_runner(plan: Plan, data: DataLoader | None = None) -> TaskRunner:
    """The plan's task runner (same seed everywhere, so every site builds the same model).

    A runner that takes its data loader when built (OpenFL's, compat/openfl/runner.py) gets
    ``data``, or the plan's data loader built without data (``data_path=None``)."""
    section = plan.model.task_runner

    def data_loader_for(factory: Any) -> dict[str, Any]:
        if not getattr(factory, "needs_data_loader", False):
            return {}
        if data is not None:
            return {"data_loader": data}
        loader = plan.model.data_loader
        return {"data_loader": build("data_loader", loader.template, dict(loader.settings), plan.workspace, data_path=None)}

    return build(
        "task_runner", section.template, dict(section.settings), plan.workspace, expect=TaskRunner, extra_for=data_loader_for
    )
