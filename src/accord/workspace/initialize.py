"""Write the plan's initial model: build the task runner once and save its weights."""

from __future__ import annotations

from pathlib import Path

from accord.plan.loader import Plan
from accord.runners.from_plan import build_runner
from accord.tensors.state import save_state


def initialize_model(plan: Plan) -> Path:
    """Save the initial global model (with optimizer state for CONTINUE_GLOBAL) to init_state_path."""
    runner = build_runner(plan)
    with_optimizer = plan.model.collaborator.settings.opt_treatment == "CONTINUE_GLOBAL"
    path = plan.resolve_path(plan.model.aggregator.settings.init_state_path)
    return save_state(path, runner.get_weights(with_optimizer=with_optimizer))
