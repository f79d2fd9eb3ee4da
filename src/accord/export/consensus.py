"""The federation's saved model (best or last), its optimizer tensors left out, in the workspace's own model.

Building the model runs the workspace's code: only at the operator's own workspace, imported
from its hashed source files (plan/workspace_code.py), as the runner builds it at every site.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

from accord.errors import AccordError
from accord.plan.loader import Plan
from accord.runners.base import OPTIMIZER_PREFIX
from accord.runners.from_plan import build_runner
from accord.tensors.state import ModelState, load_state

Which = Literal["best", "last"]


def saved_model_path(plan: Plan, which: Which) -> Path:
    """Where the aggregator saves the ``best`` or ``last`` global model; AccordError if there is none yet."""
    settings = plan.model.aggregator.settings
    path = plan.resolve_path(settings.best_state_path if which == "best" else settings.last_state_path)
    if not path.is_file():
        needs = f" (the best model needs {settings.best_metric} among the validation metrics)" if which == "best" else ""
        raise AccordError(
            f"no {which} model yet: {path} does not exist",
            f"run the federation first (fx aggregator start){needs}, or export --last",
        )
    return path


def model_tensors(plan: Plan, which: Which) -> ModelState:
    """The saved model's own tensors: every ``__opt__.*`` (optimizer state) tensor left out."""
    state = load_state(saved_model_path(plan, which))
    return {name: array for name, array in state.items() if not name.startswith(OPTIMIZER_PREFIX)}


def consensus_model(plan: Plan, which: Which) -> Any:
    """The framework's model (an ``nn.Module`` or ``keras.Model``) built by the workspace's code,
    holding the saved weights (strictly: every name and shape must match)."""
    state = model_tensors(plan, which)
    runner = build_runner(plan)
    model = getattr(runner, "model", None)
    if model is None or not (is_torch_module(model) or is_keras_model(model)):
        raise AccordError(
            f"the task runner {plan.model.task_runner.template} holds no torch or Keras model to export",
            "export its tensors with --format safetensors",
        )
    runner.set_weights(state)
    return model


def is_torch_module(model: Any) -> bool:
    """Whether ``model`` is a torch ``nn.Module`` (without importing torch when it was never loaded)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(model, torch.nn.Module)


def is_keras_model(model: Any) -> bool:
    """Whether ``model`` is a ``keras.Model`` (without importing Keras when it was never loaded)."""
    keras = sys.modules.get("keras")
    return keras is not None and isinstance(model, keras.Model)
