"""The DataLoader protocol: a collaborator's local train and validation data as NumPy batches."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class DataLoader(Protocol):
    """A shard of data local to one collaborator."""

    batch_size: int

    @property
    def train_size(self) -> int: ...

    @property
    def valid_size(self) -> int: ...

    @property
    def num_classes(self) -> int: ...

    @property
    def feature_shape(self) -> tuple[int, ...]: ...

    def train_batches(self, seed: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Shuffled (x, y) batches of the training shard; ``seed`` fixes the order."""

    def valid_batches(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(x, y) batches of the validation shard, in a fixed order."""
