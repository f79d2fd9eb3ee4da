"""Framework adapters: the TaskRunner protocol and its torch and Keras implementations.

``import accord.runners`` imports no framework; ``TorchTaskRunner`` and ``KerasTaskRunner``
are loaded on first use.
"""

from typing import Any

from accord.runners.base import OPTIMIZER_PREFIX, TaskOutput, TaskRunner

__all__ = ["OPTIMIZER_PREFIX", "KerasTaskRunner", "TaskOutput", "TaskRunner", "TorchTaskRunner"]


def __getattr__(name: str) -> Any:
    if name == "TorchTaskRunner":
        from accord.runners.torch_runner import TorchTaskRunner

        return TorchTaskRunner
    if name == "KerasTaskRunner":
        from accord.runners.keras_runner import KerasTaskRunner

        return KerasTaskRunner
    raise AttributeError(f"module 'accord.runners' has no attribute {name!r}")
