"""SklearnLinearRunner: learns the digits, round-trips its weights, federates via accord.native."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import accord.native as fx
from accord.data.arrays import ArrayDataLoader
from accord.data.sharding import split_train_valid
from accord.errors import AccordError
from accord.runners.base import TaskRunner
from accord.runners.numpy_runner import SklearnLinearRunner


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return split_train_valid(x / 16.0, y, 0.2, 0)


def test_sgd_classifier_learns_digits(digits) -> None:
    data = ArrayDataLoader(*digits, batch_size=32)
    runner = SklearnLinearRunner("SGDClassifier", seed=0)  # shapes come from the data
    assert isinstance(runner, TaskRunner)
    before = runner.validate(data).metrics
    assert before["accuracy"] < 0.2 and before["loss"] == pytest.approx(np.log(10))
    runner.train(data, epochs=3)
    after = runner.validate(data).metrics
    assert after["accuracy"] > 0.85 and after["loss"] < before["loss"]


def test_weights_round_trip_and_initial_model_is_known_before_data() -> None:
    runner = SklearnLinearRunner("Perceptron", classes=[0, 1, 2], n_features=5)
    state = runner.get_weights(with_optimizer=True)
    assert {k: v.shape for k, v in state.items()} == {"coef": (3, 5), "intercept": (3,)}
    assert not any(v.any() for v in state.values())
    new = {"coef": np.arange(15.0).reshape(3, 5), "intercept": np.array([1.0, 2.0, 3.0])}
    runner.set_weights(new)
    assert all(np.array_equal(runner.get_weights()[k], new[k]) for k in new)
    runner.reset_optimizer()  # a no-op
    with pytest.raises(AccordError, match="shape"):
        runner.set_weights({"coef": np.zeros((2, 5)), "intercept": np.zeros(2)})
    with pytest.raises(AccordError, match="n_features"):
        SklearnLinearRunner("SGDClassifier").get_weights()
    regressor = SklearnLinearRunner("SGDRegressor", n_features=4)
    assert {k: v.shape for k, v in regressor.get_weights().items()} == {"coef": (4,), "intercept": (1,)}


def test_federation_of_two_through_accord_native(digits, tmp_path: Path) -> None:
    fl_data = fx.FederatedDataSet(*digits, batch_size=32, num_classes=10)
    fl_model = fx.FederatedModel(
        runner=lambda: SklearnLinearRunner("SGDClassifier", classes=list(range(10)), n_features=64),
        data_loader=fl_data,
    )
    estimator = fx.run_experiment(
        fx.setup(num_collaborators=2, model=fl_model),
        {"aggregator.settings.rounds_to_train": 3, "collaborator.settings.opt_treatment": "RESET"},
        workspace=tmp_path,
    )
    accuracy = fx.last_run.aggregated("aggregated_model_validation/accuracy")
    assert len(accuracy) == 4 and accuracy[-1] > accuracy[0] and accuracy[-1] > 0.85
    x_valid, y_valid = digits[2], digits[3]
    assert np.mean(estimator.predict(x_valid) == y_valid) == pytest.approx(accuracy[-1])
    assert fx.last_run.model.validate()["accuracy"] == pytest.approx(accuracy[-1])
    assert (tmp_path / "save" / "last.safetensors").is_file()
