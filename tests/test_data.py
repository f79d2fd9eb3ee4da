"""Data loaders and sharding: coverage, determinism, skew, built-in sets, .npz files."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from accord.data import (
    ArrayDataLoader,
    BreastCancerDataLoader,
    DataLoader,
    DigitsDataLoader,
    NpzDataLoader,
    load_full,
    shard_indices,
    split_train_valid,
)
from accord.errors import AccordError

LABELS = np.repeat(np.arange(10), 50)  # 500 samples, 10 balanced classes


@pytest.mark.parametrize("partition", ["iid", "dirichlet"])
@pytest.mark.parametrize("count", [1, 3, 8])
def test_shards_cover_every_index_once_and_are_non_empty(partition: str, count: int) -> None:
    shards = [shard_indices(LABELS, count, i, partition, alpha=0.3, seed=7) for i in range(count)]
    assert all(len(s) > 0 for s in shards)
    joined = np.concatenate(shards)
    assert len(joined) == len(LABELS)
    assert np.array_equal(np.sort(joined), np.arange(len(LABELS)))


@pytest.mark.parametrize("partition", ["iid", "dirichlet"])
def test_shards_are_deterministic_per_seed(partition: str) -> None:
    first = shard_indices(LABELS, 4, 2, partition, seed=3)
    assert np.array_equal(first, shard_indices(LABELS, 4, 2, partition, seed=3))
    assert not np.array_equal(first, shard_indices(LABELS, 4, 2, partition, seed=4))


def test_iid_shards_are_near_equal() -> None:
    sizes = [len(shard_indices(LABELS, 3, i)) for i in range(3)]
    assert max(sizes) - min(sizes) <= 1


def test_dirichlet_tiny_alpha_still_gives_non_empty_shards() -> None:
    labels = np.array([0] * 5 + [1] * 5)
    for seed in range(20):
        shards = [shard_indices(labels, 5, i, "dirichlet", alpha=0.01, seed=seed) for i in range(5)]
        assert all(len(s) for s in shards)
        assert np.array_equal(np.sort(np.concatenate(shards)), np.arange(10))


def _skew(partition: str) -> float:
    """Mean over shards of the share of the shard's most frequent label."""
    shares = []
    for i in range(5):
        shard = shard_indices(LABELS, 5, i, partition, alpha=0.1, seed=0)
        hist = np.bincount(LABELS[shard], minlength=10)
        shares.append(hist.max() / hist.sum())
    return float(np.mean(shares))


def test_dirichlet_small_alpha_skews_labels_more_than_iid() -> None:
    assert _skew("iid") < 0.25
    assert _skew("dirichlet") > 2 * _skew("iid")


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"count": 3, "index": 3}, "shard index"),
        ({"count": 3, "index": -1}, "shard index"),
        ({"count": 0, "index": 0}, "collaborator_count"),
        ({"count": 3, "index": 0, "partition": "dirichlet", "alpha": 0.0}, "alpha"),
        ({"count": 3, "index": 0, "partition": "pathological"}, "partition"),
        ({"count": 501, "index": 0}, "non-empty"),
    ],
)
def test_bad_shard_arguments_raise_accord_error(kwargs: dict, word: str) -> None:
    with pytest.raises(AccordError, match=word) as info:
        shard_indices(LABELS, **kwargs)
    assert info.value.fix


def test_split_train_valid_is_stratified_and_deterministic() -> None:
    x = np.arange(len(LABELS), dtype=np.float32)[:, None]
    xt, _yt, xv, yv = split_train_valid(x, LABELS, 0.2, seed=1)
    assert len(xv) == 100 and len(xt) == 400
    assert np.array_equal(np.bincount(yv), np.full(10, 10))
    assert set(xt[:, 0]).isdisjoint(set(xv[:, 0]))
    again = split_train_valid(x, LABELS, 0.2, seed=1)
    assert np.array_equal(again[2], xv)
    with pytest.raises(AccordError, match="valid_fraction"):
        split_train_valid(x, LABELS, 1.5, seed=1)


def test_array_loader_batches() -> None:
    x = np.random.default_rng(0).normal(size=(70, 3))
    y = np.arange(70) % 4
    loader = ArrayDataLoader(x, y, x[:9], y[:9], batch_size=32)
    assert isinstance(loader, DataLoader)
    sizes = (loader.train_size, loader.valid_size, loader.num_classes, loader.feature_shape)
    assert sizes == (70, 9, 4, (3,))
    batches = list(loader.train_batches(seed=5))
    assert [len(b[1]) for b in batches] == [32, 32, 6]
    assert batches[0][0].dtype == np.float32 and batches[0][1].dtype == np.int64
    seen = np.sort(np.concatenate([b[1] for b in batches]))
    assert np.array_equal(seen, np.sort(y))
    again = list(loader.train_batches(seed=5))
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(batches, again))
    other = list(loader.train_batches(seed=6))
    assert not np.array_equal(batches[0][0], other[0][0])
    valid = list(loader.valid_batches())
    assert len(valid) == 1 and np.array_equal(valid[0][1], y[:9])


def test_digits_shards_union_is_the_full_validation_split() -> None:
    xt, yt, xv, yv = load_full("digits")
    loaders = [DigitsDataLoader(str(i), collaborator_count=3) for i in (1, 2, 3)]
    assert sum(loader.valid_size for loader in loaders) == len(yv)
    assert sum(loader.train_size for loader in loaders) == len(yt)
    union = np.concatenate([np.concatenate([b[0] for b in loader.valid_batches()]) for loader in loaders])
    key = lambda a: np.lexsort(a.T[::-1])  # noqa: E731 - sort rows for a set comparison
    assert np.array_equal(union[key(union)], xv[key(xv)])
    assert loaders[0].feature_shape == (64,) and loaders[0].num_classes == 10
    assert float(xt.max()) <= 1.0 and float(xt.min()) >= 0.0


def test_digits_unflattened_and_dirichlet() -> None:
    loader = DigitsDataLoader(
        2, collaborator_count=4, flatten=False, partition="dirichlet", alpha=0.2
    )
    assert loader.feature_shape == (1, 8, 8)
    x, _ = next(loader.train_batches(seed=0))
    assert x.shape[1:] == (1, 8, 8)
    assert loader.num_classes == 10


def test_breast_cancer_loader() -> None:
    loader = BreastCancerDataLoader(1, collaborator_count=2, batch_size=64)
    assert loader.feature_shape == (30,) and loader.num_classes == 2
    xt, _, _, _ = load_full("breast_cancer")
    assert np.allclose(xt.mean(axis=0), 0, atol=1e-4) and np.allclose(xt.std(axis=0), 1, atol=1e-3)
    total = loader.train_size + BreastCancerDataLoader(2, collaborator_count=2).train_size
    assert total == len(xt)


@pytest.mark.parametrize("data_path", ["0", "4", "one", "", 2.5, True])
def test_bad_builtin_data_path(data_path: object) -> None:
    with pytest.raises(AccordError, match="shard number") as info:
        DigitsDataLoader(data_path, collaborator_count=3)  # type: ignore[arg-type]
    assert "data.yaml" in str(info.value)


def test_bad_builtin_partition() -> None:
    with pytest.raises(AccordError, match="partition"):
        DigitsDataLoader(1, collaborator_count=2, partition="by_writer")


def _save_npz(path, **overrides) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.normal(size=(20, 5)).astype(np.float64),
        "y_train": np.arange(20) % 3,
        "x_valid": rng.normal(size=(6, 5)),
        "y_valid": np.arange(6) % 3,
    }
    arrays.update(overrides)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})


def test_npz_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "site.npz"
    _save_npz(path)
    loader = NpzDataLoader(str(path), batch_size=8, collaborator_count=5, seed=1, partition="iid")
    sizes = (loader.train_size, loader.valid_size, loader.num_classes, loader.feature_shape)
    assert sizes == (20, 6, 3, (5,))
    with np.load(path) as raw:
        x_valid = np.concatenate([b[0] for b in loader.valid_batches()])
        assert np.allclose(x_valid, raw["x_valid"].astype(np.float32))


def test_npz_missing_file_and_key(tmp_path) -> None:  # type: ignore[no-untyped-def]
    missing = tmp_path / "nowhere.npz"
    with pytest.raises(AccordError, match=r"plan/data.yaml") as info:
        NpzDataLoader(str(missing))
    assert str(missing) in str(info.value)
    path = tmp_path / "partial.npz"
    _save_npz(path, y_valid=None)
    with pytest.raises(AccordError, match="y_valid") as info:
        NpzDataLoader(str(path))
    assert str(path) in str(info.value)


def test_npz_object_array_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "pickled.npz"
    ragged = np.empty(20, dtype=object)
    ragged[:] = [[1, 2]] * 20
    _save_npz(path, x_train=ragged)
    with pytest.raises(AccordError, match="unpickling"):
        NpzDataLoader(str(path))


def test_npz_not_a_zip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "junk.npz"
    path.write_bytes(b"not a zip file at all")
    with pytest.raises(AccordError, match="not a readable"):
        NpzDataLoader(str(path))


def test_import_stays_light() -> None:
    code = (
        "import sys, accord, accord.data, accord.runners; "
        "bad = [m for m in ('torch', 'sklearn') if m in sys.modules]; "
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
