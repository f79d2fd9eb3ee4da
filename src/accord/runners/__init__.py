"""Framework adapters: the TaskRunner protocol and its torch implementation.

``import accord.runners`` does not import torch; ``TorchTaskRunner`` is loaded on first use.
"""

from typing import Any

from accord.runners.base import OPTIMIZER_PREFIX, TaskOutput, TaskRunner

__all__ = ["OPTIMIZER_PREFIX", "TaskOutput", "TaskRunner", "TorchTaskRunner"]


def __getattr__(name: str) -> Any:
    if name == "TorchTaskRunner":
        from accord.runners.torch_runner import TorchTaskRunner

        return TorchTaskRunner
    raise AttributeError(f"module 'accord.runners' has no attribute {name!r}")
