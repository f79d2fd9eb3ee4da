"""The narrow entry point between Accord's runtime and a framework's training code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from accord.data.base import DataLoader
from accord.tensors.state import ModelState

#: tensor-name prefix of optimizer state in a ModelState (CONTINUE_GLOBAL ships it).
OPTIMIZER_PREFIX = "__opt__."


@dataclass
class TaskOutput:
    """What a runner function returns: metrics and the number of samples they cover."""

    metrics: dict[str, float]
    sample_count: int


@runtime_checkable
class TaskRunner(Protocol):
    """A model, its optimizer and loss, and the train/validate functions over a DataLoader.

    Model weights cross this boundary as NumPy arrays (a ModelState), so the rest of
    Accord never imports the framework.
    """

    def get_weights(self, with_optimizer: bool = False) -> ModelState:
        """The model's tensors by name; with optimizer state under OPTIMIZER_PREFIX if asked."""

    def set_weights(self, state: ModelState, with_optimizer: bool = False) -> None:
        """Load tensors by name (optimizer state too if asked and present)."""

    def reset_optimizer(self) -> None:
        """Forget optimizer state (opt_treatment RESET)."""

    def train(self, data: DataLoader, **kwargs: Any) -> TaskOutput:
        """Train on ``data.train_batches`` (kwargs: epochs, ...); metrics e.g. {'loss': ...}."""

    def validate(self, data: DataLoader, **kwargs: Any) -> TaskOutput:
        """Evaluate on ``data.valid_batches``; metrics e.g. {'accuracy': ..., 'loss': ...}."""
