"""OpenFL's ``TaskRunner`` base: the data loader and its shape, the optimizer treatment, and the
two tasks of Accord's TaskRunner protocol (runners/base.py) over OpenFL's ``train_`` /
``validate_`` methods.

Accord builds the runner with ``data_loader=`` (workspace/initialize.py: the site's loader,
or, where there is no data, the plan's loader built with ``data_path=None``, as OpenFL does)
and gives each task its loader, which becomes ``self.data_loader`` for that task. Each
subclass's ``__init__`` runs with the model-building seed fixed (``model_seed``), so every
participant builds the same model (and, for Keras, the same variable names).
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from accord.errors import AccordError
from accord.runners.base import TaskOutput

#: the optimizer treatments (collaborator.settings.opt_treatment)
OPT_TREATMENTS = ("RESET", "CONTINUE_LOCAL", "CONTINUE_GLOBAL")

_building = threading.local()

#: the package of Accord's own OpenFL classes, whose methods are not a workspace's overrides
_HOME = __name__.rsplit(".", 1)[0]

#: OpenFL's TensorKey-level methods: they take the round's ``input_tensor_dict`` (TensorKey ->
#: array) and return (global, local) TensorKey dictionaries, or declare which TensorKeys a task
#: needs. Accord's collaborator sends every task the whole model by tensor name and calls the
#: per-epoch ``train_`` / ``validate_`` instead, so an override of one of these would never run.
TENSORKEY_METHODS = (
    "train_task", "validate_task", "train_batches", "rebuild_model", "get_tensor_dict", "set_tensor_dict",
    "get_required_tensorkeys_for_function", "set_required_tensorkeys_for_function",
    "update_tensorkeys_for_functions", "initialize_tensorkeys_for_functions",
)
#: parameters that mark OpenFL's TensorKey-level ``train`` / ``validate`` (OpenFL 1.0-1.5, Keras 1.9)
TENSORKEY_PARAMETERS = ("col_name", "round_num", "input_tensor_dict")
#: OpenFL's other names of the per-epoch hook that Accord calls as ``train_``: torch's in 1.0-1.5,
#: Keras's in 1.6-1.9 (``train_iteration(batch_generator, metrics)``, "override this for custom training")
EPOCH_ALIASES = {"train_epoch": "train_", "train_iteration": "train_"}


class TaskRunner:
    """What every OpenFL runner has: ``data_loader``, ``feature_shape``, ``num_classes`` and
    ``opt_treatment`` (Accord's collaborator applies the treatment; the attribute says which).
    A framework's runner adds ``train_`` / ``validate_`` (one epoch; a Metric or a list)."""

    #: workspace/initialize.py gives a runner of this kind its data loader when it builds it
    needs_data_loader = True

    def __init__(self, data_loader: Any = None, tensor_dict_split_fn_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self.data_loader = data_loader
        self.feature_shape = None if data_loader is None else data_loader.get_feature_shape()
        self.num_classes = None if data_loader is None else data_loader.get_num_classes()
        self.tensor_dict_split_fn_kwargs = dict(tensor_dict_split_fn_kwargs or {})
        self.opt_treatment = "RESET"
        self.training_round_completed = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _check_overrides(cls)
        if "__init__" in cls.__dict__:
            cls.__init__ = _seeded(cls.__init__, cls._model_seed)  # type: ignore[method-assign]

    @classmethod
    def _model_seed(cls) -> AbstractContextManager[None]:
        """The framework's seed (and fresh names) while a runner builds its model."""
        return _no_seed()

    # -- OpenFL's methods -------------------------------------------------------------

    def set_optimizer_treatment(self, opt_treatment: str) -> None:
        """RESET, CONTINUE_LOCAL or CONTINUE_GLOBAL."""
        if opt_treatment not in OPT_TREATMENTS:
            raise AccordError(f"opt_treatment {opt_treatment!r} is not one of {OPT_TREATMENTS}")
        self.opt_treatment = opt_treatment

    def get_data_loader(self) -> Any:
        """The data loader of the current task."""
        return self.data_loader

    def set_data_loader(self, data_loader: Any) -> None:
        """Use ``data_loader`` from now on."""
        self.data_loader = data_loader

    def get_train_data_size(self) -> int:
        """The number of training samples (weights the site's update)."""
        return int(self._loader().get_train_data_size())

    def get_valid_data_size(self) -> int:
        """The number of validation samples."""
        return int(self._loader().get_valid_data_size())

    def initialize_tensorkeys_for_functions(self, with_opt_vars: bool = False) -> None:
        """Nothing to do: Accord sends every task the whole model by name (a subclass may not override it)."""

    # -- the tasks (Accord's protocol) ----------------------------------------------------

    def _use(self, data: Any) -> None:
        if data is not None:
            self.data_loader = data

    def _loader(self) -> Any:
        if self.data_loader is None:
            raise AccordError(
                f"the task runner {type(self).__name__} has no data loader",
                "give this site a data path in plan/data.yaml",
            )
        return self.data_loader

    def _train_output(self, metrics: dict[str, float]) -> TaskOutput:
        self.training_round_completed = True
        return TaskOutput(metrics=metrics, sample_count=self.get_train_data_size())

    def _valid_output(self, metrics: dict[str, float]) -> TaskOutput:
        return TaskOutput(metrics=metrics, sample_count=self.get_valid_data_size())


def _check_overrides(cls: type) -> None:
    """Refuse a subclass's TensorKey-level methods (TENSORKEY_METHODS, or ``train`` / ``validate``
    taking TENSORKEY_PARAMETERS), naming them and what to write instead; take EPOCH_ALIASES as ``train_``."""
    own = cls.__dict__
    found = []
    for name in (*TENSORKEY_METHODS, "train", "validate"):
        owner = next((base for base in cls.__mro__ if name in base.__dict__), None)
        if owner is None or owner.__module__.startswith(_HOME):
            continue  # Accord's own (a mixin's or a parent's override counts as the class's)
        method = owner.__dict__[name]
        if name in TENSORKEY_METHODS or (
            callable(method) and set(TENSORKEY_PARAMETERS) & set(inspect.signature(method).parameters)
        ):
            found.append(name if owner is cls else f"{name} (from {owner.__qualname__})")
    if found:
        raise AccordError(
            f"{cls.__qualname__} overrides {', '.join(found)}, OpenFL's TensorKey-level task code, which Accord "
            "never calls: each task gets the whole model by tensor name, not an input_tensor_dict of TensorKeys",
            "put the per-epoch work in train_(batches) / validate_(batches) returning a Metric, and the model in "
            "self.model; or write an Accord TaskRunner (docs/runners.md) for control over the whole task",
        )
    for old, new in EPOCH_ALIASES.items():
        if old in own and new not in own:
            setattr(cls, new, own[old])


def check_epochs(epochs: Any) -> int:
    """The task's ``epochs`` as an int >= 1."""
    count = int(epochs)
    if count < 1:
        raise AccordError(f"epochs is {count}; it must be >= 1", "set the train task's epochs in the plan")
    return count


@contextmanager
def _no_seed() -> Iterator[None]:
    yield


def _seeded(init: Callable[..., None], seed: Callable[[], AbstractContextManager[None]]) -> Callable[..., None]:
    """``init`` run under ``seed()``, unless a runner's ``__init__`` is already running under it."""

    @functools.wraps(init)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
        if getattr(_building, "depth", 0):
            init(self, *args, **kwargs)
            return
        _building.depth = 1
        try:
            with seed():
                init(self, *args, **kwargs)
        finally:
            _building.depth = 0

    return wrapper
