"""OpenFL's data loaders (``DataLoader``, ``PyTorchDataLoader``, ``KerasDataLoader``) that are
also Accord DataLoaders (data/base.py).

A subclass sets ``X_train``, ``y_train``, ``X_valid``, ``y_valid`` (NumPy arrays or torch
tensors), ``feature_shape`` and ``num_classes``, as OpenFL's own loaders do. OpenFL's methods
keep their meaning: ``get_train_loader`` / ``get_valid_loader`` give a generator of shuffled
``(X, y)`` batches (the valid one shuffled too, as in OpenFL), ``get_*_data_size`` the sizes.
Accord's runners read ``train_batches(seed)`` and ``valid_batches()`` (NumPy, in order).
"""

from __future__ import annotations

from collections.abc import Iterator
from math import ceil
from typing import Any

import numpy as np

from accord.errors import AccordError


class DataLoader:
    """OpenFL's data-loader base: what a loader tells a runner about its data."""

    #: set by the subclass (OpenFL's loaders do, in ``__init__``)
    feature_shape: Any = None
    num_classes: Any = None

    def __init__(self, **kwargs: Any) -> None:
        pass

    def get_feature_shape(self) -> Any:
        """The shape of one sample (``feature_shape``)."""
        return self._declared("feature_shape")

    def get_num_classes(self) -> Any:
        """The number of classes (``num_classes``)."""
        return self._declared("num_classes")

    def get_train_data_size(self) -> int:
        """The number of training samples."""
        raise NotImplementedError

    def get_valid_data_size(self) -> int:
        """The number of validation samples."""
        raise NotImplementedError

    def _declared(self, name: str) -> Any:
        value = getattr(self, name, None)
        if value is None:
            raise AccordError(
                f"the data loader {type(self).__name__} sets no {name}",
                f"set self.{name} in {type(self).__name__}.__init__ or define get_{name}()",
            )
        return value


class PyTorchDataLoader(DataLoader):
    """In-memory arrays served in batches of ``batch_size``, shuffled by ``random_seed`` if given."""

    def __init__(self, batch_size: int, random_seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.batch_size = int(batch_size)
        self.X_train: Any = None
        self.y_train: Any = None
        self.X_valid: Any = None
        self.y_valid: Any = None
        self.random_seed = random_seed

    # -- OpenFL's methods -------------------------------------------------------------

    def get_train_loader(self, batch_size: int | None = None, num_batches: int | None = None) -> Iterator[tuple[Any, Any]]:
        """Shuffled ``(X, y)`` batches of the training data."""
        return self._get_batch_generator(self._part("X_train"), self._part("y_train"), batch_size, num_batches)

    def get_valid_loader(self, batch_size: int | None = None) -> Iterator[tuple[Any, Any]]:
        """Shuffled ``(X, y)`` batches of the validation data."""
        return self._get_batch_generator(self._part("X_valid"), self._part("y_valid"), batch_size)

    def get_train_data_size(self) -> int:
        """The number of training samples."""
        return int(self._part("X_train").shape[0])

    def get_valid_data_size(self) -> int:
        """The number of validation samples."""
        return int(self._part("X_valid").shape[0])

    def _get_batch_generator(self, X: Any, y: Any, batch_size: int | None, num_batches: int | None = None) -> Iterator[tuple[Any, Any]]:
        size = int(self.batch_size if batch_size is None else batch_size)
        rng = np.random.default_rng(self.random_seed)
        order = rng.permutation(X.shape[0])
        count = ceil(X.shape[0] / size) if num_batches is None else int(num_batches)
        return _batches(X, y, order, size, count)

    # -- Accord's DataLoader protocol ---------------------------------------------------

    @property
    def train_size(self) -> int:
        return self.get_train_data_size()

    @property
    def valid_size(self) -> int:
        return self.get_valid_data_size()

    def train_batches(self, seed: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Shuffled NumPy batches of the training data; ``seed`` fixes the order."""
        X, y = self._part("X_train"), self._part("y_train")
        order = np.random.default_rng(seed).permutation(X.shape[0])
        for X_batch, y_batch in _batches(X, y, order, self.batch_size, ceil(X.shape[0] / self.batch_size)):
            yield _numpy(X_batch), _numpy(y_batch)

    def valid_batches(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """NumPy batches of the validation data, in order."""
        X, y = self._part("X_valid"), self._part("y_valid")
        for start in range(0, X.shape[0], self.batch_size):
            yield _numpy(X[start : start + self.batch_size]), _numpy(y[start : start + self.batch_size])

    def _part(self, name: str) -> Any:
        value = getattr(self, name, None)
        if value is None:
            raise AccordError(
                f"the data loader {type(self).__name__} has no {name} (it was built without data)",
                "give this site a data path in plan/data.yaml",
            )
        return value


class KerasDataLoader(PyTorchDataLoader):
    """OpenFL's Keras loader: the same in-memory batches (NumPy arrays) as PyTorchDataLoader."""

    def __init__(self, batch_size: int, **kwargs: Any) -> None:
        super().__init__(batch_size, **kwargs)


def _batches(X: Any, y: Any, order: np.ndarray, size: int, count: int) -> Iterator[tuple[Any, Any]]:
    for i in range(count):
        chosen = order[i * size : (i + 1) * size]
        yield X[chosen], y[chosen]


def _numpy(value: Any) -> np.ndarray:
    """A NumPy view of a batch (a torch tensor is brought to the CPU first)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)
