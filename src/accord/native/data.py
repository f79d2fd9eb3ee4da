"""FederatedDataSet: train and validation arrays that split into one shard per collaborator."""

from __future__ import annotations

import numpy as np

from accord.data.arrays import ArrayDataLoader
from accord.data.sharding import shard_indices
from accord.errors import AccordError


class FederatedDataSet(ArrayDataLoader):
    """An ArrayDataLoader over the whole data set; ``split`` cuts it into collaborator shards.

    ``num_classes`` defaults to max label + 1 and is kept by every shard, so a shard that
    misses a class still builds the same model as the others. Labels are class indices, or
    one-hot rows (OpenFL's idiom: a 2-D 0/1 array, one 1 per row), each split in either form;
    they are served as indices, and with one-hot training labels ``one_hot`` is True and a
    FederatedModel's loss gets its targets one-hot again. ``X_train``, ``y_train``,
    ``X_valid``, ``y_valid`` are the arrays (labels as indices), under OpenFL's names.
    """

    def __init__(
        self,
        x_train: np.ndarray,
        y_train: np.ndarray,
        x_valid: np.ndarray,
        y_valid: np.ndarray,
        batch_size: int = 32,
        num_classes: int | None = None,
    ) -> None:
        train, train_width = _indices(y_train, "train")
        valid, valid_width = _indices(y_valid, "valid")
        if None not in (train_width, valid_width) and train_width != valid_width:
            raise AccordError(
                f"y_train is one-hot with {train_width} columns but y_valid with {valid_width}",
                "give both one column per class",
            )
        #: True when the training labels came one-hot (OpenFL's idiom): losses get one-hot targets
        self.one_hot = train_width is not None
        width = train_width if train_width is not None else valid_width
        if width is not None and num_classes is not None and int(num_classes) != width:
            raise AccordError(
                f"num_classes is {num_classes} but the one-hot labels have {width} columns",
                f"pass num_classes={width} or leave it out",
            )
        super().__init__(x_train, train, x_valid, valid, batch_size, width if num_classes is None else num_classes)

    @property
    def X_train(self) -> np.ndarray:
        """The training samples (float32)."""
        return self._x_train

    @property
    def y_train(self) -> np.ndarray:
        """The training labels, as class indices."""
        return self._y_train

    @property
    def X_valid(self) -> np.ndarray:
        """The validation samples (float32)."""
        return self._x_valid

    @property
    def y_valid(self) -> np.ndarray:
        """The validation labels, as class indices."""
        return self._y_valid

    def split(
        self, num_collaborators: int, partition: str = "iid", alpha: float = 0.5, seed: int = 0
    ) -> list[FederatedDataSet]:
        """``num_collaborators`` shards of both the training and the validation arrays.

        ``partition`` is ``iid`` or ``dirichlet`` (non-IID labels, skew set by ``alpha``);
        the shards cover every sample exactly once and are the same for the same ``seed``.
        """
        shards = []
        for index in range(num_collaborators):
            train = shard_indices(self._y_train, num_collaborators, index, partition, alpha, seed)
            valid = shard_indices(self._y_valid, num_collaborators, index, partition, alpha, seed)
            shards.append(self._subset(train, valid))
        return shards

    def _subset(self, train: np.ndarray, valid: np.ndarray) -> FederatedDataSet:
        shard = FederatedDataSet(
            self._x_train[train],
            self._y_train[train],
            self._x_valid[valid],
            self._y_valid[valid],
            batch_size=self.batch_size,
            num_classes=self.num_classes,
        )
        shard.one_hot = self.one_hot
        return shard


def _indices(y: np.ndarray, split: str) -> tuple[np.ndarray, int | None]:
    """Class indices from ``y``, and the one-hot width if ``y`` was one-hot (None if 1-D already)."""
    labels = np.asarray(y)
    if labels.ndim != 2:
        return labels, None  # 1-D labels are checked by ArrayDataLoader
    width = labels.shape[1]
    one_hot = (
        width >= 1
        and labels.dtype.kind in "biuf"
        and bool(np.isin(labels, (0, 1)).all())
        and bool((labels.sum(axis=1) == 1).all())
    )
    if not one_hot:
        raise AccordError(
            f"y_{split} has shape {labels.shape} but is not one-hot (each row a single 1, the rest 0)",
            "give one class index per sample (1-D), or one-hot rows",
        )
    return labels.argmax(axis=1).astype(np.int64), int(width)
