"""Built-in datasets that ship inside scikit-learn (no download): digits and breast cancer.

Every collaborator computes the same train/validation split of the whole set and then
takes its own shard of each, so the union of all validation shards is the validation split.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from accord.data.arrays import ArrayDataLoader
from accord.data.sharding import shard_indices, split_indices
from accord.errors import AccordError

BUILTIN_SETS: tuple[str, ...] = ("digits", "breast_cancer")


@cache
def _raw(name: str) -> tuple[np.ndarray, np.ndarray]:
    """The whole set as (x float64, y int64), read-only; digits x is (n, 8, 8) in [0, 1]."""
    from sklearn import datasets  # lazy: `import accord.data` stays light

    if name == "digits":
        bunch = datasets.load_digits()
        x = np.asarray(bunch.images, dtype=np.float64) / 16.0
    else:
        bunch = datasets.load_breast_cancer()
        x = np.asarray(bunch.data, dtype=np.float64)
    y = np.asarray(bunch.target, dtype=np.int64)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def _split(
    name: str, valid_fraction: float, seed: int, flatten: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    if name not in BUILTIN_SETS:
        raise AccordError(
            f"unknown built-in dataset {name!r}; expected one of {', '.join(BUILTIN_SETS)}",
            "use a built-in set's loader or NpzDataLoader for your own data",
        )
    x, y = _raw(name)
    train, valid = split_indices(y, valid_fraction, seed)
    xt, yt, xv, yv = x[train], y[train], x[valid], y[valid]
    if name == "digits":
        shape = (-1, 64) if flatten else (-1, 1, 8, 8)
        xt, xv = xt.reshape(shape), xv.reshape(shape)
    else:  # standardize with the train split's statistics (the same on every collaborator)
        mean = xt.mean(axis=0)
        std = xt.std(axis=0)
        std[std == 0] = 1.0
        xt, xv = (xt - mean) / std, (xv - mean) / std
    return (
        xt.astype(np.float32),
        yt.astype(np.int64),
        xv.astype(np.float32),
        yv.astype(np.int64),
    )


def load_full(
    name: str, valid_fraction: float = 0.2, seed: int = 0, flatten: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The un-sharded (x_train, y_train, x_valid, y_valid) of a built-in set."""
    return _split(name, valid_fraction, seed, flatten)


def parse_shard(data_path: str | int, collaborator_count: int) -> int:
    """The 1-based shard number a built-in set's data path names, checked against the count."""
    count_ok = isinstance(collaborator_count, (int, np.integer)) and not isinstance(
        collaborator_count, bool
    )
    if not count_ok or collaborator_count < 1:
        raise AccordError(
            f"collaborator_count is {collaborator_count!r}; it must be an integer >= 1",
            "set data_loader.settings.collaborator_count in the plan to the collaborator count",
        )
    text = str(data_path).strip()
    shard: int | None = None
    if not isinstance(data_path, bool) and text.lstrip("+").isdigit():
        shard = int(text)
    if shard is None or not 1 <= shard <= int(collaborator_count):
        raise AccordError(
            f"data path {data_path!r} is not a shard number 1..{collaborator_count}; "
            "for built-in datasets the data path is the collaborator's shard number",
            "set this collaborator's entry in plan/data.yaml to an integer 1..collaborator_count",
        )
    return shard


class _BuiltinDataLoader(ArrayDataLoader):
    """One collaborator's shard of a built-in set (train and validation sharded alike)."""

    dataset: str = ""

    def __init__(
        self,
        data_path: str | int = 1,
        collaborator_count: int = 1,
        batch_size: int = 32,
        valid_fraction: float = 0.2,
        partition: str = "iid",
        alpha: float = 0.5,
        seed: int = 0,
        flatten: bool = True,
    ) -> None:
        self.shard = parse_shard(data_path, collaborator_count)
        self.collaborator_count = int(collaborator_count)
        xt, yt, xv, yv = _split(self.dataset, valid_fraction, seed, flatten)
        picked = {
            split: shard_indices(
                labels,
                count=self.collaborator_count,
                index=self.shard - 1,
                partition=partition,
                alpha=alpha,
                seed=seed,
            )
            for split, labels in (("train", yt), ("valid", yv))
        }
        train, valid = picked["train"], picked["valid"]
        num_classes = int(max(yt.max(initial=-1), yv.max(initial=-1))) + 1
        super().__init__(
            xt[train],
            yt[train],
            xv[valid],
            yv[valid],
            batch_size=batch_size,
            num_classes=num_classes,
        )


class DigitsDataLoader(_BuiltinDataLoader):
    """scikit-learn's 8x8 handwritten digits (1,797 samples, 10 classes), pixels in [0, 1].

    ``flatten=True`` gives samples of shape (64,); ``False`` gives (1, 8, 8) for CNNs.
    """

    dataset = "digits"


class BreastCancerDataLoader(_BuiltinDataLoader):
    """scikit-learn's Wisconsin breast cancer set (569 samples, 30 features, 2 classes).

    Features are standardized with the train split's mean and std of the whole set.
    """

    dataset = "breast_cancer"
