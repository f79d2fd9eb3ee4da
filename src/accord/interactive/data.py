"""DataInterface: how a site's data reaches the task functions; ``site_data``: the plan's loader.

The data scientist subclasses DataInterface in the notebook and creates one with keyword
arguments (``DigitsShards(batch_size=32)``). Those keyword arguments go into the plan; at
each site the class is built again as ``cls(data_path=<the site's path>, **kwargs)``, the
path coming from the site's ``plan/data.yaml`` (``fx collaborator generate-cert-request
--data-path``). The loaders it returns can be anything the task functions accept (a torch
DataLoader, NumPy arrays, a tf.data.Dataset).
"""

from __future__ import annotations

import inspect
from typing import Any

from accord.errors import AccordError
from accord.plan.code_settings import import_code

_PATH_FIX = "accept data_path in __init__ and pass it on: super().__init__(data_path, **kwargs)"


class DataInterface:
    """A site's train and validation data; subclass it and override the four ``get_*`` methods.

    ``data_path`` is the site's data path (None in the notebook unless given, e.g. to try
    the functions on a local file); ``kwargs`` are the keyword arguments it was created with.
    """

    _accord_call: tuple[tuple[Any, ...], dict[str, Any]]

    def __new__(cls, *args: Any, **kwargs: Any) -> DataInterface:
        instance = super().__new__(cls)
        instance._accord_call = (args, kwargs)  # what it was created with, whatever __init__ keeps
        return instance

    def __init__(self, data_path: str | None = None, **kwargs: Any) -> None:
        self.data_path = data_path
        self.kwargs = kwargs

    def get_train_loader(self, **kwargs: Any) -> Any:
        """The training data in the form the train task function takes."""
        raise NotImplementedError(f"{type(self).__name__} must define get_train_loader")

    def get_valid_loader(self, **kwargs: Any) -> Any:
        """The validation data in the form the validation task function takes."""
        raise NotImplementedError(f"{type(self).__name__} must define get_valid_loader")

    def get_train_data_size(self) -> int:
        """Number of training samples (FedAvg weights this site's update by it)."""
        raise NotImplementedError(f"{type(self).__name__} must define get_train_data_size")

    def get_valid_data_size(self) -> int:
        """Number of validation samples (metrics are averaged weighted by it)."""
        raise NotImplementedError(f"{type(self).__name__} must define get_valid_data_size")


def creation_kwargs(data: DataInterface) -> dict[str, Any]:
    """The keyword arguments ``data`` was created with, ``data_path`` left out (each site has its own)."""
    cls = type(data)
    if not isinstance(data, DataInterface):
        raise AccordError(
            f"data_loader is a {cls.__name__}, not a DataInterface",
            "subclass accord.interactive.DataInterface and pass an instance of it",
        )
    signature = inspect.signature(cls.__init__)
    parameters = list(signature.parameters.values())[1:]  # after self
    if not any(p.name == "data_path" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        raise AccordError(f"{cls.__name__}.__init__ does not accept data_path", _PATH_FIX)
    args, kwargs = data._accord_call
    try:
        bound = signature.bind(data, *args, **kwargs).arguments
    except TypeError as exc:
        raise AccordError(f"{cls.__name__}'s arguments do not match its __init__: {exc}", _PATH_FIX) from exc
    named: dict[str, Any] = {}
    for parameter in parameters:
        value = bound.get(parameter.name)
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            named.update(value or {})
        elif parameter.kind is inspect.Parameter.VAR_POSITIONAL and value:
            raise AccordError(f"{cls.__name__} was given extra positional arguments {value}", "pass keyword arguments")
        elif parameter.name in bound and parameter.kind is not inspect.Parameter.VAR_POSITIONAL:
            named[parameter.name] = value
    named.pop("data_path", None)
    return named


def site_data(data_path: str, interface: str, kwargs: dict[str, Any] | None = None) -> DataInterface:
    """The plan's data loader at a site: ``interface(data_path=data_path, **kwargs)``."""
    cls = import_code("data_loader.settings.interface", interface)
    if not (isinstance(cls, type) and issubclass(cls, DataInterface)):
        raise AccordError(
            f"data_loader.settings.interface {interface!r} is not a DataInterface subclass",
            "prepare the workspace again from the notebook (FLExperiment.prepare_workspace_distribution)",
        )
    return cls(data_path=data_path, **(kwargs or {}))

