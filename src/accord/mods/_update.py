"""The update a training reply carries, for mods that change it: its change from the global
model (trained - global, or the delta itself) over float tensors other than optimizer state."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

import numpy as np

from accord.messages import TaskResult
from accord.mods.base import Instruction
from accord.runners.base import OPTIMIZER_PREFIX


def update_names(result: TaskResult) -> list[str]:
    """The tensors of the reply that make up its update: floating point, not ``__opt__.*``."""
    tensors = result.tensors or {}
    return [n for n, v in tensors.items() if not n.startswith(OPTIMIZER_PREFIX) and np.asarray(v).dtype.kind == "f"]


def changes(instruction: Instruction, result: TaskResult) -> Iterator[tuple[str, np.ndarray]]:
    """Each update tensor's change from the global model, in float64, one tensor at a time."""
    assert result.tensors is not None
    for name in update_names(result):
        value = np.asarray(result.tensors[name], dtype=np.float64)
        yield name, value if result.is_delta else value - instruction.global_model[name]


def with_changes(instruction: Instruction, result: TaskResult, new: Iterable[tuple[str, np.ndarray]]) -> TaskResult:
    """The reply with the ``new`` (name, change) of those tensors (in their own dtypes), the rest
    as they were; taken one at a time, so a generator keeps one float64 tensor alive at most."""
    assert result.tensors is not None
    tensors = dict(result.tensors)
    for name, change in new:
        value = change if result.is_delta else instruction.global_model[name] + change
        tensors[name] = np.asarray(value).astype(np.asarray(result.tensors[name]).dtype)
    return dataclasses.replace(result, tensors=tensors)
