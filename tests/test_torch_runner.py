"""TorchTaskRunner: training, weights and optimizer state round trips, devices, errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from accord.data import (  # noqa: E402
    ArrayDataLoader,
    BreastCancerDataLoader,
    DigitsDataLoader,
    load_full,
)
from accord.errors import AccordError  # noqa: E402
from accord.runners import OPTIMIZER_PREFIX, TaskRunner, TorchTaskRunner  # noqa: E402
from accord.runners.torch_models import mlp  # noqa: E402

MLP_PATH = "accord.runners.torch_models.mlp"


@pytest.fixture(scope="module")
def digits() -> DigitsDataLoader:
    return DigitsDataLoader(1, collaborator_count=1)


@pytest.fixture(scope="module")
def digits_shard() -> DigitsDataLoader:
    return DigitsDataLoader(2, collaborator_count=4, batch_size=64)


def _runner(seed: int = 0, **kwargs) -> TorchTaskRunner:  # type: ignore[no-untyped-def]
    kwargs.setdefault("model_kwargs", {"hidden": 32})
    return TorchTaskRunner(MLP_PATH, seed=seed, progress=False, **kwargs)


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return list(a) == list(b) and all(np.array_equal(a[k], b[k]) for k in a)


def test_mlp_learns_digits(digits: DigitsDataLoader) -> None:
    runner = TorchTaskRunner(MLP_PATH, optimizer={"name": "Adam", "lr": 3e-3}, progress=False)
    assert isinstance(runner, TaskRunner)
    first = runner.train(digits, epochs=5, metrics=["loss", "accuracy"])
    assert first.sample_count == digits.train_size
    assert set(first.metrics) == {"loss", "accuracy"}
    result = runner.validate(digits)
    assert result.sample_count == digits.valid_size
    assert result.metrics["accuracy"] > 0.9
    assert result.metrics["loss"] < 0.5


def test_same_seed_builds_identical_weights() -> None:
    assert _same(_runner(seed=3).get_weights(), _runner(seed=3).get_weights())
    assert not _same(_runner(seed=3).get_weights(), _runner(seed=4).get_weights())


def test_weights_round_trip_exactly(digits_shard: DigitsDataLoader) -> None:
    source = _runner(seed=1)
    source.train(digits_shard)
    weights = source.get_weights()
    assert list(weights) == list(source.model.state_dict())
    assert all(isinstance(v, np.ndarray) for v in weights.values())
    target = _runner(seed=2)
    target.set_weights(weights)
    assert _same(target.get_weights(), weights)
    weights["net.1.bias"][:] = 123.0  # returned arrays are copies, not views of the model
    assert not np.any(source.get_weights()["net.1.bias"] == 123.0)


def test_set_weights_rejects_wrong_names() -> None:
    runner = _runner()
    weights = runner.get_weights()
    missing = dict(weights)
    missing.pop("net.1.bias")
    with pytest.raises(AccordError, match="missing"):
        runner.set_weights(missing)
    with pytest.raises(AccordError, match="unexpected"):
        runner.set_weights({**weights, "extra.weight": np.zeros(3, np.float32)})
    with pytest.raises(AccordError, match="does not fit"):
        runner.set_weights({**weights, "net.1.bias": np.zeros(5, np.float32)})


def test_optimizer_materialization_keeps_weights_and_names(digits_shard: DigitsDataLoader) -> None:
    runner = _runner()
    before = runner.get_weights()
    full = runner.get_weights(with_optimizer=True)
    assert _same({k: v for k, v in full.items() if not k.startswith(OPTIMIZER_PREFIX)}, before)
    assert _same(runner.get_weights(), before)
    assert "__opt__.net.1.weight.exp_avg" in full and "__opt__.net.1.weight.step" in full
    assert full["__opt__.net.1.weight.step"].shape == ()
    runner.train(digits_shard)
    assert list(runner.get_weights(with_optimizer=True)) == list(full)


@pytest.mark.parametrize(
    "optimizer",
    [
        {"name": "Adam", "lr": 1e-3, "weight_decay": 1e-2},
        {"name": "AdamW", "lr": 1e-3},
        {"name": "SGD", "lr": 0.05, "momentum": 0.9},
        {"name": "NAdam"},
        {"name": "Rprop"},
    ],
)
def test_materialized_optimizer_trains_like_a_fresh_one(
    digits_shard: DigitsDataLoader, optimizer: dict
) -> None:
    plain, materialized = _runner(optimizer=optimizer), _runner(optimizer=optimizer)
    materialized.get_weights(with_optimizer=True)
    plain.train(digits_shard)
    materialized.train(digits_shard)
    assert _same(plain.get_weights(), materialized.get_weights())


def test_set_weights_with_optimizer_restores_its_state(digits_shard: DigitsDataLoader) -> None:
    source = _runner(seed=5)
    source.train(digits_shard)
    state = source.get_weights(with_optimizer=True)
    # same runner seed (so the same batch order) but fresh optimizers of their own
    first, second, weights_only = _runner(seed=6), _runner(seed=6), _runner(seed=6)
    first.set_weights(state, with_optimizer=True)
    second.set_weights(state, with_optimizer=True)
    weights_only.set_weights(state)  # optimizer keys are ignored without with_optimizer
    assert _same(first.get_weights(with_optimizer=True), state)
    for runner in (first, second, weights_only):
        runner.train(digits_shard)
    assert _same(first.get_weights(with_optimizer=True), second.get_weights(with_optimizer=True))
    assert not _same(first.get_weights(), weights_only.get_weights())


def test_reset_optimizer_clears_state(digits_shard: DigitsDataLoader) -> None:
    runner = _runner(optimizer={"name": "SGD", "lr": 0.05, "momentum": 0.9})
    runner.train(digits_shard)
    assert len(runner.optimizer.state) > 0
    runner.reset_optimizer()
    assert len(runner.optimizer.state) == 0
    assert isinstance(runner.optimizer, torch.optim.SGD)
    assert runner.optimizer.param_groups[0]["momentum"] == 0.9


class _SeedRecorder(ArrayDataLoader):
    """Records the shuffle seed of every training epoch."""

    seeds: list

    def train_batches(self, seed=None):  # type: ignore[no-untyped-def, override]
        self.seeds.append(seed)
        return super().train_batches(seed)


def test_training_is_reproducible_and_reshuffles_each_epoch() -> None:
    xt, yt, xv, yv = load_full("digits")
    recorders = []
    for _ in range(2):
        recorder = _SeedRecorder(xt[:300], yt[:300], xv[:50], yv[:50], batch_size=64)
        recorder.seeds = []
        recorders.append(recorder)
    a, b = _runner(), _runner()
    a.train(recorders[0], epochs=2)
    b.train(recorders[1])
    b.train(recorders[1])
    assert _same(a.get_weights(), b.get_weights())
    assert recorders[0].seeds == recorders[1].seeds
    assert len(set(recorders[0].seeds)) == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_request_falls_back_to_cpu_with_one_warning(device: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runner = _runner(device=device)
    relevant = [w for w in caught if "CUDA is not available" in str(w.message)]
    assert len(relevant) == 1
    assert runner.device.type == "cpu"
    assert next(runner.model.parameters()).device.type == "cpu"


def test_auto_device() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert _runner(device="auto").device.type == expected


def test_model_forms() -> None:
    instance = mlp(in_features=64, hidden=16)
    assert TorchTaskRunner(instance, progress=False).model is instance
    built = TorchTaskRunner(mlp, model_kwargs={"hidden": 16}, progress=False)
    assert built.get_weights()["net.1.weight"].shape == (16, 64)


@pytest.mark.parametrize(
    "path", ["no_such_pkg.models.net", "accord.runners.torch_models.nothing", "mlp"]
)
def test_bad_model_path(path: str) -> None:
    with pytest.raises(AccordError, match=r"task_runner.settings.model") as info:
        TorchTaskRunner(path)
    assert "src/" in str(info.value)


def test_bad_optimizer_and_loss() -> None:
    with pytest.raises(AccordError, match="optimizer"):
        _runner(optimizer={"name": "Adamm"})
    with pytest.raises(AccordError, match="optimizer"):
        _runner(optimizer={"name": "Adam", "learning_rate": 0.1})
    with pytest.raises(AccordError, match="loss"):
        _runner(loss="hinge")
    with pytest.raises(AccordError, match="epochs"):
        _runner().train(DigitsDataLoader(1), epochs=0)


def test_bce_with_logits_single_output() -> None:
    data = BreastCancerDataLoader(1, batch_size=64)
    runner = _runner(
        model_kwargs={"in_features": 30, "hidden": 16, "num_classes": 1},
        loss="bce_with_logits",
        optimizer={"name": "Adam", "lr": 1e-2},
    )
    runner.train(data, epochs=10)
    result = runner.validate(data)
    assert result.metrics["accuracy"] > 0.85


def test_mse_reports_only_loss(digits_shard: DigitsDataLoader) -> None:
    runner = _runner(loss="mse")
    assert "loss" in runner.train(digits_shard).metrics
    assert set(runner.validate(digits_shard).metrics) == {"loss"}


def test_custom_loss_path_and_progress_bar(digits_shard: DigitsDataLoader) -> None:
    runner = TorchTaskRunner(
        MLP_PATH,
        loss="torch.nn.functional.cross_entropy",
        progress=True,
        model_kwargs={"hidden": 16},
    )
    output = runner.train(digits_shard, epochs=1, unknown_setting=True)
    assert output.metrics["loss"] > 0
    assert 0.0 <= runner.validate(digits_shard).metrics["accuracy"] <= 1.0
