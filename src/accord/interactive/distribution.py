"""Write an interactive experiment into the federation's workspace, freeze its plan, export it.

What is written: ``src/experiment.py`` (the notebook's code, as source), ``plan/plan.yaml``
(what the decorators and interfaces said, the rounds and the network), ``requirements.txt``
(the third-party packages that code imports, pinned to this machine's versions) and
``save/init.safetensors`` (the initial model, built by the generated code with the plan's
seed). The archive carries the first three; nothing is ever pickled.
"""

from __future__ import annotations

import stat
import sys
from collections.abc import Iterable, Mapping
from importlib.metadata import packages_distributions, version
from pathlib import Path
from typing import Any

import yaml

from accord.errors import AccordError
from accord.interactive.data import DataInterface, creation_kwargs
from accord.interactive.model import ModelInterface
from accord.interactive.source import collect_module, import_path
from accord.interactive.tasks import FLTask, TaskInterface, plain_value
from accord.plan.code_settings import code_problem, import_code, named_code
from accord.plan.freeze import freeze_plan
from accord.plan.loader import apply_overrides, load_plan, read_yaml
from accord.workspace.archive import ExportResult, export_workspace
from accord.workspace.initialize import initialize_model

MODULE = "src.experiment"
CODE_FILE = "src/experiment.py"
PLAN_FILE = "plan/plan.yaml"
DATA_TEMPLATE = "accord.interactive.data.site_data"


def write_distribution(
    workspace: Path,
    experiment: str,
    model: ModelInterface,
    tasks: TaskInterface,
    data: DataInterface,
    network: Mapping[str, Any],
    settings: Mapping[str, Any],
    output: Path,
) -> ExportResult:
    """Write code, plan, requirements and initial model into ``workspace``; freeze; export to ``output``.

    ``settings``: rounds_to_train, opt_treatment, delta_updates, device, seed, overrides.
    """
    _expect(model, ModelInterface, "model_provider", "ModelInterface(model=..., optimizer=..., framework=...)")
    _expect(tasks, TaskInterface, "task_keeper", "a TaskInterface() with registered task functions")
    train, validate = tasks.task("train"), tasks.task("validate")
    data_kwargs = plain_value(creation_kwargs(data), f"{type(data).__name__}(...)")
    roots = [*model.builders(), train.function, validate.function, type(data)]
    code = collect_module(roots, f"Code of the Accord experiment {experiment!r}, written from the notebook.\n\n"
                          "Edit the notebook and prepare the workspace again rather than this file.\n")
    (workspace / "src").mkdir(parents=True, exist_ok=True)
    (workspace / "src" / "__init__.py").touch()
    (workspace / CODE_FILE).write_text(code.text, encoding="utf-8")
    (workspace / "requirements.txt").write_text(requirements(code.packages), encoding="utf-8")

    plan_path = workspace / PLAN_FILE
    raw = {
        "collaborators": list(read_yaml(plan_path).get("collaborators") or []) if plan_path.is_file() else [],
        "aggregator": {"settings": {"rounds_to_train": settings["rounds_to_train"]}},
        "collaborator": {"settings": {k: settings[k] for k in ("opt_treatment", "delta_updates")}},
        "data_loader": {
            "template": DATA_TEMPLATE,
            "settings": {"interface": import_path(type(data), MODULE), "kwargs": data_kwargs},
        },
        "task_runner": {
            "template": model.runner_template,
            "settings": _runner_settings(model, train, validate, settings),
        },
        "network": {"settings": dict(network)},
        "tasks": {"settings": _standard_tasks(train, validate)},
    }
    raw = apply_overrides(raw, settings.get("overrides") or {})
    _check_named_code(raw)
    _write_plan(plan_path, raw, experiment)
    plan = load_plan(plan_path, workspace=workspace)
    initialize_model(plan)  # imports the generated code: a missing import fails here, not at the sites
    import_code("data_loader.settings.interface", plan.model.data_loader.settings["interface"])
    freeze_plan(plan_path, workspace)
    return export_workspace(workspace, output, force=True)


def requirements(packages: Iterable[str]) -> str:
    """requirements.txt lines for the third-party packages among ``packages``, at this machine's versions."""
    distributions = packages_distributions()
    lines = {
        f"{name}=={version(name).split('+')[0]}"
        for package in packages
        if package not in sys.stdlib_module_names and package != "accord"
        for name in distributions.get(package, [])
    }
    header = "# Packages the experiment's code imports (install them at each site), as on the operator's machine.\n"
    return header + "".join(f"{line}\n" for line in sorted(lines))


def _expect(value: Any, cls: type, argument: str, expected: str) -> None:
    if not isinstance(value, cls):
        raise AccordError(f"{argument} is a {type(value).__name__}, not a {cls.__name__}", f"pass {expected}")


def _runner_settings(
    model: ModelInterface, train: FLTask, validate: FLTask, settings: Mapping[str, Any]
) -> dict[str, Any]:
    """The runner's settings: builders and task functions by dotted path, device (torch), seed."""
    runner: dict[str, Any] = {"model": import_path(model.model, MODULE)}
    if model.optimizer is not None:
        runner["optimizer"] = import_path(model.optimizer, MODULE)
    runner["functions"] = {
        task.kind: {"function": import_path(task.function, MODULE), "params": dict(task.params)}
        for task in (train, validate)
    }
    if model.framework == "torch":  # Keras places the model itself
        runner["device"] = settings["device"]
    runner["seed"] = settings["seed"]
    return runner


def _check_named_code(raw: Mapping[str, Any]) -> None:
    """The sites will import only the workspace's code and plan/code_settings.py's framework names."""
    for section in ("data_loader", "task_runner"):
        for setting, value in named_code(section, raw[section].get("settings")):
            why = code_problem(setting, value)
            if why:
                raise AccordError(why, "define it in the notebook: its code is then written to the workspace's src/")


def _standard_tasks(train: FLTask, validate: FLTask) -> dict[str, Any]:
    """The plan's three standard tasks on the registered train and validate functions."""
    return {
        "aggregated_model_validation": {"function": "validate", "kwargs": {"apply": "global", **validate.kwargs}},
        "train": {"function": "train", "kwargs": dict(train.kwargs)},
        "locally_tuned_model_validation": {"function": "validate", "kwargs": {"apply": "local", **validate.kwargs}},
    }


def _write_plan(path: Path, raw: dict[str, Any], experiment: str) -> None:
    """(Re)write the plan file, even over an earlier frozen one of this experiment."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.chmod(path.stat().st_mode | stat.S_IWUSR)
    header = (
        f"# The FL plan of the Accord experiment {experiment!r}, written by accord.interactive from the\n"
        "# notebook; every site runs with it. Its code is src/experiment.py.\n"
    )
    path.write_text(header + yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
