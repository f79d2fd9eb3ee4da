"""KerasTaskRunner: training, weights and optimizer state by name, a second backend, a federation."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from accord.data import BreastCancerDataLoader, DigitsDataLoader
from accord.errors import AccordError
from accord.runners import OPTIMIZER_PREFIX, TaskRunner

pytestmark = pytest.mark.skipif(find_spec("keras") is None, reason="needs the keras extra")

ITERATION = f"{OPTIMIZER_PREFIX}adam/iteration"


def small_net(hidden: int = 32, outputs: int = 10, shape: tuple[int, ...] = (1, 8, 8)) -> Any:
    """An uncompiled MLP, so the runner compiles it from its own settings."""
    import keras

    inputs = keras.Input(shape=shape)
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(hidden, activation="relu")(x)
    activation = "softmax" if outputs > 1 else "sigmoid"
    return keras.Model(inputs, keras.layers.Dense(outputs, activation=activation)(x))


def _runner(seed: int = 0, **kwargs: Any):  # type: ignore[no-untyped-def]
    from accord.runners.keras_runner import KerasTaskRunner

    kwargs.setdefault("optimizer", {"name": "adam", "learning_rate": 3e-3})
    return KerasTaskRunner(small_net, seed=seed, progress=False, **kwargs)


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return list(a) == list(b) and all(np.array_equal(a[k], b[k]) for k in a)


def _model_part(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v for k, v in state.items() if not k.startswith(OPTIMIZER_PREFIX)}


@pytest.fixture(scope="module")
def digits() -> DigitsDataLoader:
    return DigitsDataLoader(1, collaborator_count=1, flatten=False)


@pytest.fixture(scope="module")
def digits_shard() -> DigitsDataLoader:
    return DigitsDataLoader(2, collaborator_count=4, batch_size=64, flatten=False)


def test_import_accord_runners_loads_no_keras() -> None:
    code = (
        "import sys, accord.runners; "
        "bad = [m for m in ('keras', 'tensorflow') if m in sys.modules]; "
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_learns_digits(digits: DigitsDataLoader) -> None:
    runner = _runner()
    assert isinstance(runner, TaskRunner)
    first = runner.train(digits, epochs=5, metrics=["loss"])
    assert first.sample_count == digits.train_size and first.metrics["loss"] > 0
    result = runner.validate(digits)
    assert result.sample_count == digits.valid_size
    assert result.metrics["accuracy"] > 0.9
    assert result.metrics["loss"] < 0.5


def test_same_seed_builds_identical_weights() -> None:
    assert _same(_runner(seed=3).get_weights(), _runner(seed=3).get_weights())
    assert not _same(_runner(seed=3).get_weights(), _runner(seed=4).get_weights())


def test_weights_round_trip_exactly_by_name(digits_shard: DigitsDataLoader) -> None:
    source = _runner(seed=1)
    source.train(digits_shard)
    weights = source.get_weights()
    assert list(weights) == ["dense/kernel", "dense/bias", "dense_1/kernel", "dense_1/bias"]
    target = _runner(seed=2)  # built second in this process, yet named alike
    target.set_weights(dict(reversed(list(weights.items()))))  # by name, not by order
    assert _same(target.get_weights(), weights)
    weights["dense/bias"][:] = 123.0  # returned arrays are copies
    assert not np.any(source.get_weights()["dense/bias"] == 123.0)


def test_set_weights_rejects_wrong_names_and_shapes() -> None:
    runner = _runner()
    weights = runner.get_weights()
    missing = dict(weights)
    missing.pop("dense/bias")
    with pytest.raises(AccordError, match=r"missing.*dense/bias"):
        runner.set_weights(missing)
    with pytest.raises(AccordError, match=r"unexpected.*extra/kernel"):
        runner.set_weights({**weights, "extra/kernel": np.zeros(3, np.float32)})
    with pytest.raises(AccordError, match="'dense/bias' has shape"):
        runner.set_weights({**weights, "dense/bias": np.zeros(5, np.float32)})


def test_optimizer_names_are_stable_and_weights_untouched(digits_shard: DigitsDataLoader) -> None:
    runner = _runner()
    before = runner.get_weights()
    full = runner.get_weights(with_optimizer=True)
    assert _same(_model_part(full), before) and _same(runner.get_weights(), before)
    assert full[ITERATION] == 0 and f"{OPTIMIZER_PREFIX}adam/dense_kernel_momentum" in full
    runner.train(digits_shard)
    after = runner.get_weights(with_optimizer=True)
    assert list(after) == list(full)
    assert after[ITERATION] == -(-digits_shard.train_size // digits_shard.batch_size)


def test_restored_optimizer_state_trains_identically(digits_shard: DigitsDataLoader) -> None:
    source = _runner(seed=5)
    source.train(digits_shard)
    state = source.get_weights(with_optimizer=True)
    first, second, weights_only = _runner(seed=6), _runner(seed=6), _runner(seed=6)
    first.set_weights(state, with_optimizer=True)
    second.set_weights(state, with_optimizer=True)
    weights_only.set_weights(state)  # optimizer entries are ignored without with_optimizer
    assert _same(first.get_weights(with_optimizer=True), state)
    for runner in (first, second, weights_only):
        runner.train(digits_shard)
    assert _same(first.get_weights(with_optimizer=True), second.get_weights(with_optimizer=True))
    assert not _same(first.get_weights(), weights_only.get_weights())


def test_reset_optimizer_clears_state(digits_shard: DigitsDataLoader) -> None:
    runner = _runner()
    runner.train(digits_shard)
    assert runner.get_weights(with_optimizer=True)[ITERATION] > 0
    runner.reset_optimizer()
    state = runner.get_weights(with_optimizer=True)
    fresh = _runner().get_weights(with_optimizer=True)
    assert _same({k: v for k, v in state.items() if k.startswith(OPTIMIZER_PREFIX)},
                 {k: v for k, v in fresh.items() if k.startswith(OPTIMIZER_PREFIX)})
    assert runner.train(digits_shard).metrics["loss"] > 0  # the compiled step still works


def test_single_sigmoid_output_accuracy() -> None:
    from accord.runners.keras_runner import KerasTaskRunner

    data = BreastCancerDataLoader(1, batch_size=64)
    runner = KerasTaskRunner(
        small_net, loss="binary_crossentropy", progress=False,
        optimizer={"name": "adam", "learning_rate": 1e-2},
        model_kwargs={"hidden": 16, "outputs": 1, "shape": (30,)},
    )
    runner.train(data, epochs=10)
    assert runner.validate(data).metrics["accuracy"] > 0.85


@pytest.mark.parametrize("path", ["no_such_pkg.models.net", "accord.runners.torch_models.nothing", "net"])
def test_bad_model_path(path: str) -> None:
    from accord.runners.keras_runner import KerasTaskRunner

    with pytest.raises(AccordError, match=r"task_runner.settings.model") as info:
        KerasTaskRunner(path)
    assert "src/" in str(info.value)


def test_bad_settings() -> None:
    with pytest.raises(AccordError, match="unknown optimizer 'adamm'"):
        _runner(optimizer={"name": "adamm"})
    with pytest.raises(AccordError, match="learning_rate, not lr"):
        _runner(optimizer={"name": "adam", "lr": 0.1})
    with pytest.raises(AccordError, match="epochs"):
        _runner().train(DigitsDataLoader(1, flatten=False), epochs=0)


def test_second_backend_in_one_process_is_refused() -> None:
    import keras

    other = "torch" if keras.backend.backend() != "torch" else "tensorflow"
    with pytest.raises(AccordError, match="one backend per process") as info:
        _runner(backend=other)
    assert keras.backend.backend() in str(info.value) and other in str(info.value)


@pytest.mark.skipif(find_spec("torch") is None, reason="needs torch")
def test_runner_works_on_the_torch_backend(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        from accord.data import DigitsDataLoader
        from accord.runners.keras_runner import KerasTaskRunner
        from test_keras_runner import small_net

        runner = KerasTaskRunner(small_net, backend="torch", progress=False,
                                 optimizer={"name": "adam", "learning_rate": 3e-3})
        import keras
        assert keras.backend.backend() == "torch", keras.backend.backend()
        data = DigitsDataLoader(1, collaborator_count=1, flatten=False)
        state = runner.get_weights(with_optimizer=True)
        runner.set_weights(state, with_optimizer=True)
        runner.train(data, epochs=1)
        accuracy = runner.validate(data).metrics["accuracy"]
        print("accuracy", accuracy)
        sys.exit(0 if accuracy > 0.5 else 1)
        """
    )
    env = {**os.environ, "KERAS_BACKEND": "torch", "PYTHONPATH": str(Path(__file__).parent)}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def test_federation_on_the_keras_template(tmp_path: Path) -> None:
    from test_inprocess_federation import run_federation

    from accord.plan.loader import load_plan, update_plan_file
    from accord.tensors.state import load_state
    from accord.workspace.create import create_workspace

    names = ["alpha", "beta"]
    workspace = create_workspace(tmp_path / "ws", "keras_cnn_digits")
    update_plan_file(
        workspace / "plan" / "plan.yaml",
        {
            "collaborators": names,
            "aggregator.settings.rounds_to_train": 2,
            "collaborator.settings.opt_treatment": "CONTINUE_GLOBAL",
            "tasks.settings.train.kwargs": {"epochs": 1},
        },
    )
    (workspace / "plan" / "data.yaml").write_text(yaml.safe_dump({n: i for i, n in enumerate(names, 1)}))
    plan = load_plan(workspace / "plan" / "plan.yaml", workspace=workspace)
    _, worked = run_federation(plan, names)
    assert worked == {"alpha": 3, "beta": 3}
    last = load_state(plan.resolve_path(plan.model.aggregator.settings.last_state_path))
    assert "conv2d/kernel" in last and ITERATION in last
