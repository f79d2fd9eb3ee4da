"""Deterministic train/validation splits and collaborator shards (IID or Dirichlet non-IID)."""

from __future__ import annotations

import numpy as np

from accord.errors import AccordError

PARTITIONS: tuple[str, ...] = ("iid", "dirichlet")

#: how many times a Dirichlet draw is repeated before empty shards are filled by moving samples.
_DIRICHLET_REDRAWS = 20


def split_indices(y: np.ndarray, valid_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, valid) of a split stratified by label; sorted, deterministic for ``seed``."""
    labels = _labels(y)
    if not 0.0 < float(valid_fraction) < 1.0:
        raise AccordError(
            f"valid_fraction is {valid_fraction!r}; it must lie strictly between 0 and 1",
            "set data_loader.settings.valid_fraction in the plan to e.g. 0.2",
        )
    rng = np.random.default_rng(seed)
    train_parts: list[np.ndarray] = []
    valid_parts: list[np.ndarray] = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_valid = round(len(members) * float(valid_fraction))
        if len(members) >= 2:  # keep at least one sample of a class on each side
            n_valid = min(max(n_valid, 1), len(members) - 1)
        valid_parts.append(members[:n_valid])
        train_parts.append(members[n_valid:])
    train = np.sort(np.concatenate(train_parts)) if train_parts else np.empty(0, np.int64)
    valid = np.sort(np.concatenate(valid_parts)) if valid_parts else np.empty(0, np.int64)
    return train.astype(np.int64), valid.astype(np.int64)


def split_train_valid(
    x: np.ndarray, y: np.ndarray, valid_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split (x, y) into (x_train, y_train, x_valid, y_valid), stratified by label."""
    if len(x) != len(y):
        raise AccordError(
            f"x has {len(x)} samples but y has {len(y)}", "pass arrays of equal length"
        )
    train, valid = split_indices(y, valid_fraction, seed)
    return x[train], y[train], x[valid], y[valid]


def shard_indices(
    y: np.ndarray,
    count: int,
    index: int,
    partition: str = "iid",
    alpha: float = 0.5,
    seed: int = 0,
) -> np.ndarray:
    """Sorted indices of shard ``index`` (0-based) of ``count`` shards over labels ``y``.

    ``iid``: a seeded permutation cut into ``count`` near-equal parts. ``dirichlet``: each
    class's shuffled samples are cut by proportions drawn from Dirichlet(alpha * ones(count)).
    Every shard is non-empty and the shards together cover each index exactly once.
    """
    labels = _labels(y)
    _check_shard_args(len(labels), count, index, partition, alpha)
    rng = np.random.default_rng(seed)
    if partition == "iid":
        shards = np.array_split(rng.permutation(len(labels)), count)
    else:
        shards = _dirichlet_shards(labels, count, float(alpha), rng)
    return np.sort(shards[index]).astype(np.int64)


def _labels(y: np.ndarray) -> np.ndarray:
    labels = np.asarray(y)
    if labels.ndim != 1:
        raise AccordError(
            f"labels must be a 1-D array, got shape {labels.shape}",
            "pass one integer class label per sample",
        )
    return labels


def _check_shard_args(n: int, count: int, index: int, partition: str, alpha: float) -> None:
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise AccordError(
            f"collaborator_count is {count!r}; it must be an integer >= 1",
            "set data_loader.settings.collaborator_count in the plan to the collaborator count",
        )
    if count > n:
        raise AccordError(
            f"cannot cut {n} samples into {count} non-empty shards",
            "use fewer collaborators or a larger dataset",
        )
    index_ok = isinstance(index, (int, np.integer)) and not isinstance(index, bool)
    if not index_ok or not 0 <= index < count:
        raise AccordError(
            f"shard index {index!r} is out of range for {count} shards (0..{count - 1})",
            "give each collaborator a shard number 1..collaborator_count in plan/data.yaml",
        )
    if partition not in PARTITIONS:
        raise AccordError(
            f"unknown partition {partition!r}; expected one of {', '.join(PARTITIONS)}",
            "set data_loader.settings.partition in the plan to 'iid' or 'dirichlet'",
        )
    if partition == "dirichlet" and not float(alpha) > 0.0:
        raise AccordError(
            f"Dirichlet alpha is {alpha!r}; it must be > 0",
            "set data_loader.settings.alpha in the plan to a positive number (e.g. 0.5)",
        )


def _dirichlet_shards(
    labels: np.ndarray, count: int, alpha: float, rng: np.random.Generator
) -> list[np.ndarray]:
    classes = np.unique(labels)
    shards: list[np.ndarray] = []
    for _ in range(_DIRICHLET_REDRAWS):
        # Draw all proportions first, so splits with the same classes get the same skew.
        proportions = rng.dirichlet(alpha * np.ones(count), size=len(classes))
        parts: list[list[np.ndarray]] = [[] for _ in range(count)]
        for row, label in zip(proportions, classes):
            members = rng.permutation(np.flatnonzero(labels == label))
            cuts = (np.cumsum(row)[:-1] * len(members)).astype(np.int64)
            for shard, piece in enumerate(np.split(members, cuts)):
                parts[shard].append(piece)
        shards = [np.concatenate(p).astype(np.int64) for p in parts]
        if all(len(s) for s in shards):
            return shards
    return _fill_empty(shards)


def _fill_empty(shards: list[np.ndarray]) -> list[np.ndarray]:
    """Give each empty shard one sample from the currently largest shard (deterministic)."""
    shards = [np.sort(s) for s in shards]
    for target in range(len(shards)):
        if len(shards[target]) == 0:
            donor = int(np.argmax([len(s) for s in shards]))
            shards[target] = shards[donor][-1:]
            shards[donor] = shards[donor][:-1]
    return shards
