"""Accord's native Python API: a federation from a notebook or a script, in one process.

```python
import accord.native as fx
fx.init("torch_digits")
fl_data = fx.FederatedDataSet(x_train, y_train, x_valid, y_valid, batch_size=32, num_classes=10)
fl_model = fx.FederatedModel(build_model, optimizer={"name": "Adam", "lr": 3e-3}, data_loader=fl_data)
collaborators = fx.setup(num_collaborators=2)
fx.update_plan({"aggregator.settings.rounds_to_train": 5})   # or run_experiment's override_config
final_model = fx.run_experiment(collaborators)
fx.last_run.final("aggregated_model_validation/accuracy")
```

Importing it needs NumPy alone; torch, Keras or scikit-learn load when a model asks.
See docs/native-api.md.
"""

from __future__ import annotations

from typing import Any

from accord.native.data import FederatedDataSet
from accord.native.experiment import SESSION, ExperimentResult, build_plan, init, run_experiment, setup
from accord.native.model import FederatedModel
from accord.native.plan_view import get_plan, update_plan

__all__ = [
    "ExperimentResult",
    "FederatedDataSet",
    "FederatedModel",
    "build_plan",
    "get_plan",
    "init",
    "last_run",
    "run_experiment",
    "setup",
    "update_plan",
]


def __getattr__(name: str) -> Any:
    """``last_run``: the ExperimentResult of the latest run_experiment (None before one)."""
    if name == "last_run":
        return SESSION.last_run
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
