"""ArrayDataLoader: the DataLoader protocol over in-memory NumPy arrays."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from accord.errors import AccordError


class ArrayDataLoader:
    """Train and validation arrays served as (x float32, y int64) batches."""

    def __init__(
        self,
        x_train: np.ndarray,
        y_train: np.ndarray,
        x_valid: np.ndarray,
        y_valid: np.ndarray,
        batch_size: int = 32,
        num_classes: int | None = None,
    ) -> None:
        if not _is_positive_int(batch_size):
            raise AccordError(
                f"batch_size is {batch_size!r}; it must be an integer >= 1",
                "set data_loader.settings.batch_size in the plan",
            )
        self.batch_size = int(batch_size)
        self._x_train, self._y_train = _pair(x_train, y_train, "train")
        self._x_valid, self._y_valid = _pair(x_valid, y_valid, "valid")
        if self._x_train.shape[1:] != self._x_valid.shape[1:]:
            raise AccordError(
                f"train samples have shape {self._x_train.shape[1:]} but validation samples "
                f"{self._x_valid.shape[1:]}",
                "give x_train and x_valid the same per-sample shape",
            )
        if num_classes is None:
            labels = np.concatenate([self._y_train, self._y_valid])
            num_classes = int(labels.max()) + 1 if labels.size else 0
        self._num_classes = int(num_classes)

    @property
    def train_size(self) -> int:
        """Number of training samples in this shard."""
        return len(self._y_train)

    @property
    def valid_size(self) -> int:
        """Number of validation samples in this shard."""
        return len(self._y_valid)

    @property
    def num_classes(self) -> int:
        """Number of classes (given, or max label + 1 over both splits)."""
        return self._num_classes

    @property
    def feature_shape(self) -> tuple[int, ...]:
        """Shape of one sample (x.shape[1:])."""
        return tuple(int(d) for d in self._x_train.shape[1:])

    def train_batches(self, seed: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Training batches in an order shuffled by ``np.random.default_rng(seed)``."""
        order = np.random.default_rng(seed).permutation(self.train_size)
        for start in range(0, self.train_size, self.batch_size):
            chosen = order[start : start + self.batch_size]
            yield self._x_train[chosen], self._y_train[chosen]

    def valid_batches(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Validation batches in their stored order."""
        for start in range(0, self.valid_size, self.batch_size):
            stop = start + self.batch_size
            yield self._x_valid[start:stop], self._y_valid[start:stop]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(train_size={self.train_size}, valid_size={self.valid_size}, "
            f"feature_shape={self.feature_shape}, num_classes={self.num_classes})"
        )


def _is_positive_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and bool(value >= 1)


def _pair(x: np.ndarray, y: np.ndarray, split: str) -> tuple[np.ndarray, np.ndarray]:
    xs = np.ascontiguousarray(x, dtype=np.float32)
    ys = np.asarray(y)
    if ys.ndim != 1:
        raise AccordError(
            f"y_{split} must be a 1-D array of class labels, got shape {ys.shape}",
            "store one integer label per sample",
        )
    if ys.size and ys.dtype.kind == "f" and not np.array_equal(ys, np.round(ys)):
        raise AccordError(f"y_{split} holds non-integer labels", "store integer class labels")
    ys = np.ascontiguousarray(ys, dtype=np.int64)
    if xs.ndim < 1 or len(xs) != len(ys):
        raise AccordError(
            f"x_{split} has {len(xs) if xs.ndim else 0} samples but y_{split} has {len(ys)}",
            f"give x_{split} and y_{split} the same number of samples",
        )
    return xs, ys
