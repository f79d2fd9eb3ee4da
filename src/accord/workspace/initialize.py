"""Write the plan's initial model: build the task runner once and save its weights."""

from __future__ import annotations

from pathlib import Path

from accord.plan.loader import Plan
from accord.plan.objects import build
from accord.runners.base import TaskRunner
from accord.tensors.state import save_state


def build_runner(plan: Plan) -> TaskRunner:
    """The plan's task runner (same seed everywhere, so every site builds the same model)."""
    section = plan.model.task_runner
    return build("task_runner", section.template, dict(section.settings), plan.workspace, expect=TaskRunner)


def initialize_model(plan: Plan) -> Path:
    """Save the initial global model (with optimizer state for CONTINUE_GLOBAL) to init_state_path."""
    runner = build_runner(plan)
    with_optimizer = plan.model.collaborator.settings.opt_treatment == "CONTINUE_GLOBAL"
    path = plan.resolve_path(plan.model.aggregator.settings.init_state_path)
    return save_state(path, runner.get_weights(with_optimizer=with_optimizer))
