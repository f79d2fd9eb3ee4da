"""OpenFL data loader of one digits site: the shard the bench wrote as ``<data_dir>/site<N>.npz``."""

from pathlib import Path

import numpy as np
from openfl.federated import PyTorchDataLoader

from src.digits_mlp import load_npz


class DigitsShard(PyTorchDataLoader):
    """``data_path`` is the site's shard number (plan/data.yaml); None only builds the model."""

    def __init__(self, data_path=None, batch_size=32, data_dir=".", seed=0, **kwargs):
        super().__init__(batch_size, random_seed=seed, **kwargs)
        self.rng = np.random.default_rng(seed + int(data_path or 0))
        self.X_train = self.y_train = self.X_valid = self.y_valid = np.zeros(0)
        if data_path is not None:
            shard = load_npz(str(Path(data_dir) / f"site{int(data_path)}.npz"))
            self.X_train, self.y_train = shard["x_train"], shard["y_train"]
            self.X_valid, self.y_valid = shard["x_valid"], shard["y_valid"]

    def get_feature_shape(self):
        return [64]

    def get_num_classes(self):
        return 10

    def get_train_loader(self, batch_size=None, num_batches=None):
        return self.X_train, self.y_train

    def get_valid_loader(self, batch_size=None):
        return self.X_valid, self.y_valid
