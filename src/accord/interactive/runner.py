"""The task half of the interactive runners: call the data scientist's task functions.

A site's plan names the workspace's generated code (``src.experiment.train``) and says
which runner object goes to which parameter; ``UserTasks.train`` / ``validate`` take the
DataInterface the plan's data loader built, call the function with the model, the loader,
the device, the optimizer and the task's kwargs, and turn its dict into metrics. The
weights half comes from ``accord.runners`` (TorchWeights, KerasWeights), so opt_treatment
and delta updates work as for every runner.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from accord.errors import AccordError
from accord.interactive.data import DataInterface
from accord.interactive.tasks import KINDS, RUNNER_OBJECTS
from accord.plan.code_settings import import_code
from accord.runners.base import TaskOutput

_PREPARE_FIX = "prepare the workspace again from the notebook (FLExperiment.prepare_workspace_distribution)"


def resolve(value: Any, setting: str) -> Callable[..., Any]:
    """A callable given as itself or as a dotted path from the plan."""
    found = import_code(setting, value) if isinstance(value, str) else value
    if not callable(found):
        raise AccordError(f"{setting} is {found!r}, which is not callable", _PREPARE_FIX)
    return found


@dataclass(frozen=True)
class UserTask:
    """One task function, which parameters get the runner's objects, and which kwargs it takes."""

    function: Callable[..., Any]
    params: dict[str, str]
    takes: frozenset[str] | None  # None: it takes **kwargs, so every task kwarg

    @classmethod
    def from_setting(cls, setting: Mapping[str, Any], where: str) -> UserTask:
        """From the plan's ``{function: dotted.path, params: {model: net_model, ...}}``."""
        if not isinstance(setting, Mapping) or set(setting) - {"function", "params"}:
            raise AccordError(f"{where} must be a mapping of function and params", _PREPARE_FIX)
        function = resolve(setting.get("function"), f"{where}.function")
        params = dict(setting.get("params") or {})
        unknown = sorted(set(params) - set(RUNNER_OBJECTS))
        if unknown:
            raise AccordError(f"{where}.params names {unknown}; expected some of {RUNNER_OBJECTS}", _PREPARE_FIX)
        parameters = inspect.signature(function).parameters.values()
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
            return cls(function, params, None)
        return cls(function, params, frozenset(p.name for p in parameters))

    def __call__(self, objects: dict[str, Any], kwargs: Mapping[str, Any]) -> dict[str, float]:
        """Call the function; a task kwarg it does not take (Accord's default ``epochs``) is left out."""
        arguments = {k: v for k, v in kwargs.items() if self.takes is None or k in self.takes}
        arguments.update({name: objects[obj] for obj, name in self.params.items()})
        return metrics_of(self.function(**arguments), self.function.__name__)


def metrics_of(result: Any, task: str) -> dict[str, float]:
    """The task function's dict as ``{name: float}``; AccordError naming what is wrong."""
    fix = f"make {task} return a dict of numbers, e.g. {{'accuracy': 0.93}}"
    if not isinstance(result, Mapping):
        raise AccordError(f"task function {task} returned a {type(result).__name__}, not a dict of metrics", fix)
    metrics: dict[str, float] = {}
    for key, value in result.items():
        try:
            metrics[str(key)] = float(value.item() if hasattr(value, "item") else value)  # tensors, NumPy scalars
        except (TypeError, ValueError) as exc:
            raise AccordError(f"task function {task}: metric {key!r} is {value!r}, not a number", fix) from exc
    return metrics


class UserTasks:
    """train / validate of the TaskRunner protocol, by the user's functions; mixed into a runner."""

    model: Any
    optimizer: Any

    def use_functions(self, functions: Mapping[str, Mapping[str, Any]], device: str | None) -> None:
        """Resolve the plan's ``{train: {...}, validate: {...}}``; ``device`` goes to the functions as given.

        ``device=None``: the framework places the model itself (Keras), so no function may ask for it.
        """
        if not isinstance(functions, Mapping) or set(functions) != set(KINDS):
            raise AccordError(f"task_runner.settings.functions must name exactly {KINDS}", _PREPARE_FIX)
        self._train_task = UserTask.from_setting(functions["train"], "task_runner.settings.functions.train")
        self._validate_task = UserTask.from_setting(functions["validate"], "task_runner.settings.functions.validate")
        asking = [t.function.__name__ for t in (self._train_task, self._validate_task) if "device" in t.params]
        if device is None and asking:
            raise AccordError(
                f"task functions {asking} map device, but this framework places the model itself",
                "leave device= out of register_fl_task for a Keras model",
            )
        self.device_name = device

    def train(self, data: DataInterface, **kwargs: Any) -> TaskOutput:
        """Run the train function on ``data.get_train_loader()``; the model is trained in place."""
        metrics = self._train_task(self._objects(_checked(data).get_train_loader()), kwargs)
        return TaskOutput(metrics, int(data.get_train_data_size()))

    def validate(self, data: DataInterface, **kwargs: Any) -> TaskOutput:
        """Run the validate function on ``data.get_valid_loader()``."""
        metrics = self._validate_task(self._objects(_checked(data).get_valid_loader()), kwargs)
        return TaskOutput(metrics, int(data.get_valid_data_size()))

    def _objects(self, loader: Any) -> dict[str, Any]:
        return {"model": self.model, "data_loader": loader, "device": self.device_name, "optimizer": self.optimizer}


def _checked(data: Any) -> DataInterface:
    if not isinstance(data, DataInterface):
        raise AccordError(
            f"the plan's data loader gave a {type(data).__name__}, not a DataInterface",
            "keep data_loader.template: accord.interactive.data.site_data (" + _PREPARE_FIX + ")",
        )
    return data
