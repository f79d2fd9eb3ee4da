"""TaskInterface: the data scientist's task functions, registered with two decorators.

```python
TI = TaskInterface()

@TI.add_kwargs(epochs=2)
@TI.register_fl_task(model="net_model", data_loader="train_loader", device="device", optimizer="optimizer")
def train(net_model, train_loader, optimizer, device, epochs=1):
    ...                       # trains net_model in place
    return {"loss": loss}     # a dict of metrics

@TI.register_fl_task(model="net_model", data_loader="val_loader", device="device")
def validate(net_model, val_loader, device):
    return {"accuracy": accuracy}
```

``register_fl_task`` maps the runner's objects (model, data loader, device, optimizer) onto
the function's parameter names. The **kind** of a task: ``train`` when an optimizer is
mapped, ``validate`` otherwise; ``kind="train"`` says it for a training function that takes
no optimizer (a Keras model carries its own). A train task's model is sent back to the
aggregator; a validation's only metrics. ``add_kwargs`` adds fixed keyword arguments, which
go into the plan's tasks section (hashed, so every site agrees on them).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from accord.errors import AccordError

F = TypeVar("F", bound=Callable[..., Any])
KINDS = ("train", "validate")
#: what a runner can pass a task function, by the name register_fl_task uses for it.
RUNNER_OBJECTS = ("model", "data_loader", "device", "optimizer")
#: task kwargs Accord itself uses (``apply``: which model a validation task sees).
RESERVED_KWARGS = frozenset({"apply"})


@dataclass(frozen=True)
class FLTask:
    """A registered task: its function, runner object -> parameter name, kind and fixed kwargs."""

    function: Callable[..., Any]
    params: dict[str, str]
    kind: str
    kwargs: dict[str, Any]

    @property
    def name(self) -> str:
        return self.function.__name__


class TaskInterface:
    """The registry of task functions of one experiment (one train and one validate task)."""

    def __init__(self) -> None:
        self._registered: dict[str, tuple[Callable[..., Any], dict[str, str], str]] = {}
        self._kwargs: dict[Callable[..., Any], dict[str, Any]] = {}

    def register_fl_task(
        self,
        model: str,
        data_loader: str,
        device: str | None = None,
        optimizer: str | None = None,
        kind: str | None = None,
    ) -> Callable[[F], F]:
        """Register a task function; the arguments name its parameters that get the runner's objects."""
        mapped = {"model": model, "data_loader": data_loader, "device": device, "optimizer": optimizer}
        params = {obj: name for obj, name in mapped.items() if name is not None}
        chosen = kind or ("train" if optimizer is not None else "validate")
        if chosen not in KINDS:
            raise AccordError(
                f"register_fl_task: kind {kind!r} is not one of {KINDS}", "use kind='train' or 'validate'"
            )
        bad = [name for name in params.values() if not (isinstance(name, str) and name.isidentifier())]
        if bad or len(set(params.values())) != len(params):
            raise AccordError(
                f"register_fl_task: parameter names {list(params.values())} must be distinct identifiers",
                "name one parameter of the function for each of model, data_loader, device, optimizer",
            )

        def register(function: F) -> F:
            _check_accepts(function, params.values(), "register_fl_task")
            self._registered[function.__name__] = (function, params, chosen)
            return function

        return register

    def add_kwargs(self, **kwargs: Any) -> Callable[[F], F]:
        """Fixed keyword arguments for a task function (plain values: numbers, strings, lists, dicts)."""
        reserved = sorted(RESERVED_KWARGS & set(kwargs))
        if reserved:
            raise AccordError(f"add_kwargs: {reserved} are reserved for Accord's tasks", "rename the parameter")
        plain = {key: plain_value(value, f"add_kwargs({key}=...)") for key, value in kwargs.items()}

        def add(function: F) -> F:
            _check_accepts(function, plain, "add_kwargs")
            self._kwargs[function] = {**self._kwargs.get(function, {}), **plain}
            return function

        return add

    @property
    def tasks(self) -> dict[str, FLTask]:
        """Every registered task by function name, with its kwargs; checked to be callable as mapped."""
        found = {}
        for name, (function, params, kind) in self._registered.items():
            task = FLTask(function, dict(params), kind, dict(self._kwargs.get(function, {})))
            _check_complete(task)
            found[name] = task
        return found

    def task(self, kind: str) -> FLTask:
        """The one registered task of ``kind``; AccordError if there is none or more than one."""
        matching = [task for task in self.tasks.values() if task.kind == kind]
        if len(matching) != 1:
            names = [task.name for task in matching] or "none"
            raise AccordError(
                f"the TaskInterface has {len(matching)} {kind} tasks ({names}); an experiment needs exactly one",
                f"register one {kind} function (kind is 'train' when an optimizer is mapped, or say kind=...); "
                "after renaming one, create a new TaskInterface() and register again",
            )
        return matching[0]


def _check_accepts(function: Callable[..., Any], names: Any, decorator: str) -> None:
    """Refuse parameter names the function does not take (unless it takes **kwargs)."""
    if not callable(function):
        raise AccordError(f"{decorator} decorates {function!r}, which is not a function", "decorate a def")
    parameters = inspect.signature(function).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    unknown = [name for name in names if name not in parameters]
    if unknown:
        raise AccordError(
            f"{decorator}: {function.__name__}() has no parameter {', '.join(map(repr, unknown))}",
            f"add it to {function.__name__}'s parameters, or fix the name in @{decorator}(...)",
        )


def _check_complete(task: FLTask) -> None:
    """Every required parameter gets a value: a runner object or a fixed kwarg, never both."""
    clash = sorted(set(task.params.values()) & set(task.kwargs))
    if clash:
        raise AccordError(
            f"{task.name}: {clash} given both by register_fl_task and add_kwargs", "remove them from add_kwargs"
        )
    given = set(task.params.values()) | set(task.kwargs)
    missing = [
        p.name
        for p in inspect.signature(task.function).parameters.values()
        if p.default is inspect.Parameter.empty
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        and p.name not in given
    ]
    if missing:
        raise AccordError(
            f"{task.name}() needs {missing}, which nothing gives it",
            f"map them in register_fl_task ({', '.join(RUNNER_OBJECTS)}), give them with add_kwargs, or a default",
        )


def plain_value(value: Any, where: str) -> Any:
    """``value`` as plan data (tuples become lists); AccordError for anything but plain values."""
    if isinstance(value, bool) or value is None or type(value) in (int, float, str):
        return value
    if isinstance(value, (list, tuple)):
        return [plain_value(item, where) for item in value]
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        return {key: plain_value(item, where) for key, item in value.items()}
    raise AccordError(
        f"{where}: {value!r} ({type(value).__name__}) is not a plain value; the plan can hold only "
        "numbers, strings, booleans, None, and lists and dicts (string keys) of them",
        "pass a plain value, or build the object inside the task function",
    )
