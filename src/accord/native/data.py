"""FederatedDataSet: train and validation arrays that split into one shard per collaborator."""

from __future__ import annotations

import numpy as np

from accord.data.arrays import ArrayDataLoader
from accord.data.sharding import shard_indices


class FederatedDataSet(ArrayDataLoader):
    """An ArrayDataLoader over the whole data set; ``split`` cuts it into collaborator shards.

    ``num_classes`` defaults to max label + 1 and is kept by every shard, so a shard that
    misses a class still builds the same model as the others.
    """

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
        return FederatedDataSet(
            self._x_train[train],
            self._y_train[train],
            self._x_valid[valid],
            self._y_valid[valid],
            batch_size=self.batch_size,
            num_classes=self.num_classes,
        )
