"""The plan's task runner and data loader, built from its sections as every end builds them."""

from __future__ import annotations

from typing import Any

from accord.data.base import DataLoader
from accord.plan.loader import Plan
from accord.plan.objects import build
from accord.runners.base import TaskRunner


def build_data_loader(plan: Plan, data_path: str | None) -> DataLoader:
    """The plan's data loader for ``data_path``; None builds it without data, as OpenFL builds
    the aggregator's, unchecked against DataLoader (its sizes are not there to read yet)."""
    section = plan.model.data_loader
    expect = DataLoader if data_path is not None else None
    return build("data_loader", section.template, dict(section.settings), plan.workspace, expect=expect, data_path=data_path)


def build_runner(plan: Plan, data: DataLoader | None = None) -> TaskRunner:
    """The plan's task runner (same seed everywhere, so every site builds the same model).

    A runner that takes its data loader when built (OpenFL's, compat/openfl/runner.py) gets
    ``data``, or the plan's data loader built without data (``data_path=None``)."""
    section = plan.model.task_runner

    def data_loader_for(factory: Any) -> dict[str, Any]:
        if not getattr(factory, "needs_data_loader", False):
            return {}
        return {"data_loader": data if data is not None else build_data_loader(plan, None)}

    return build(
        "task_runner", section.template, dict(section.settings), plan.workspace, expect=TaskRunner, extra_for=data_loader_for
    )
