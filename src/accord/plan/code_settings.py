"""Which code a plan's settings may name, checked before anything is imported.

The companion of templates.py. A setting that names a function or class by dotted path (a
model builder, a loss, an estimator, an optimizer builder, a task function, a data
interface) runs at every site, so it may name only the workspace's own ``src`` package
(``src.module.name``, identifiers only, as for templates) or, where a framework object is a
natural value, one name directly under the narrow namespaces listed here, which build
models, losses, optimizers or estimators. Nothing else: not ``os``, ``subprocess``,
``builtins``, ``importlib``, ``pickle``, ``torch.hub`` or ``keras.utils``.

A value that is not a string (an object passed in Python by the native or interactive API)
is not a path. Where a setting also takes built-in names (a loss ``cross_entropy``, an
estimator ``SGDClassifier``), a value without a dot is such a name, left to the runner.

The plan schema checks every such setting when the plan loads (``fx plan initialize``,
``fx aggregator start``, ``fx collaborator start`` refuse before importing anything), and
``import_code`` checks again where the runners import them.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accord.errors import PlanError
from accord.imports import import_dotted
from accord.plan.templates import WORKSPACE_TEMPLATE
from accord.plan.workspace_code import active_workspace


@dataclass(frozen=True)
class Allowed:
    """What one setting may name besides the workspace's ``src`` package."""

    #: ``ns``: ``ns.<name>``, exactly one public identifier below it (``torch.nn.Linear``, not
    #: ``torch.nn.utils.x`` or ``torch.nn._x``), defined in the framework itself (checked on import).
    namespaces: tuple[str, ...] = ()
    #: a value without a dot is a built-in name the runner knows, not an import path.
    builtin_names: bool = False


#: Every plan setting that names code, and what it may name (besides ``src.module.name``).
CODE_SETTINGS: dict[str, Allowed] = {
    # a model builder (torch or Keras runner, and the interactive ones)
    "task_runner.settings.model": Allowed(("accord.runners.torch_models", "torch.nn", "keras.applications")),
    # the torch runner's loss: cross_entropy, bce_with_logits, mse, or a function (out, y) -> loss
    "task_runner.settings.loss": Allowed(("torch.nn.functional",), builtin_names=True),
    # the scikit-learn runner's estimator: a short name of sklearn.linear_model, or a path
    "task_runner.settings.estimator": Allowed(("sklearn.linear_model",), builtin_names=True),
    # the interactive torch runner's optimizer builder, called with the model's parameters
    "task_runner.settings.optimizer": Allowed(("torch.optim",)),
    # the interactive runners' task functions: the notebook's own, written to src/experiment.py
    "task_runner.settings.functions.train.function": Allowed(),
    "task_runner.settings.functions.validate.function": Allowed(),
    # the interactive data loader's DataInterface subclass
    "data_loader.settings.interface": Allowed(),
}


def _allowed_here(rule: Allowed, value: str) -> bool:
    if WORKSPACE_TEMPLATE.fullmatch(value):
        return True
    namespace, _, name = value.rpartition(".")
    return name.isidentifier() and name.isascii() and not name.startswith("_") and namespace in rule.namespaces


def code_problem(setting: str, value: Any) -> str | None:
    """Why ``value`` may not be the code ``setting`` names, or None if it may (or is no path).

    A setting not listed in CODE_SETTINGS may name only the workspace's ``src`` package.
    """
    rule = CODE_SETTINGS.get(setting, Allowed())
    if not isinstance(value, str) or (rule.builtin_names and "." not in value) or _allowed_here(rule, value):
        return None
    allowed = [f"{namespace}.<name>" for namespace in rule.namespaces] + ["src.module.name (the workspace's src package)"]
    return f"{setting} is {value!r}, which is not allowed: it may name {', '.join(allowed)}"


def check_code(setting: str, value: Any) -> None:
    """PlanError naming the setting, the value and what is allowed, unless ``value`` may be named."""
    why = code_problem(setting, value)
    if why:
        raise PlanError(why, f"set {setting} to an allowed name, or put the code in the workspace's src/ package")


def named_code(section: str, settings: Any) -> Iterator[tuple[str, Any]]:
    """``(setting, value)`` for each setting of ``section`` that names code and is present."""
    prefix = f"{section}.settings."
    for setting in CODE_SETTINGS:
        if not setting.startswith(prefix):
            continue
        value: Any = settings
        for key in setting[len(prefix) :].split("."):
            value = value.get(key) if isinstance(value, Mapping) else None
        if value is not None:
            yield setting, value


def import_code(setting: str, value: str, fix: str | None = None) -> Any:
    """The object ``value`` names, checked against ``setting``'s allowed names before importing.

    A name under a framework namespace must also be the framework's own (not, say, a function
    of ``os`` that the namespace happens to import); a ``src.*`` name must be an object defined
    in a source file of the workspace in use (plan/workspace_code.py), and only then is imported.
    """
    check_code(setting, value)
    root = value.split(".")[0]
    workspace = active_workspace()
    if root == "src" and workspace is None:
        raise PlanError(
            f"{setting} is {value!r}, workspace code, but no workspace is in use",
            "build the plan's objects with accord.plan.objects.build, which uses its workspace",
        )
    found = import_dotted(value, setting, fix)
    home = str(getattr(found, "__module__", None) or "")
    if home != root and not home.startswith(f"{root}."):
        raise PlanError(
            f"{setting} is {value!r}, which is not allowed: it is {home or 'no module'}'s, not {root}'s",
            f"set {setting} to an allowed name, or put the code in the workspace's src/ package",
        )
    module_file = getattr(sys.modules.get(home), "__file__", None)
    if workspace is not None and root == "src" and not (
        module_file and Path(module_file).resolve().is_relative_to(workspace / "src")
    ):
        raise PlanError(
            f"{setting} is {value!r}, but {home} is not a file of the workspace's src package ({workspace})",
            f"put {home.replace('.', '/')}.py under {workspace / 'src'} or fix {setting}",
        )
    return found
