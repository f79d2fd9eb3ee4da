"""FedProx: the strategy's config, and the proximal term at the site against a hand-computed
gradient step on a tiny linear model (torch and Keras)."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from accord.errors import AccordError
from accord.strategies import FedAvg, FedProx, Strategy

X = np.array([[1.0, 2.0], [0.5, -1.0], [-1.5, 0.5], [2.0, 1.0]], np.float32)
Y = np.array([1.0, -0.5, 0.25, 2.0], np.float32)
W0 = np.array([0.3, -0.2], np.float64)
LR, MU = 0.1, 0.5


class TwoBatches:
    """Two fixed batches of two samples (a regression target), in a fixed order."""

    train_size = 4
    valid_size = 4
    batch_size = 2

    def train_batches(self, seed: int | None = None):
        yield X[:2], Y[:2]
        yield X[2:], Y[2:]

    def valid_batches(self):
        yield X, Y


def reference(mu: float) -> np.ndarray:
    """Plain SGD on mean squared error, with mu/2 ||w - w0||^2 added to each step's loss."""
    w = W0.copy()
    for xb, yb in ((X[:2], Y[:2]), (X[2:], Y[2:])):
        xb, yb = xb.astype(np.float64), yb.astype(np.float64)
        grad = 2.0 / len(yb) * xb.T @ (xb @ w - yb) + mu * (w - W0)
        w = w - LR * grad
    return w


def test_the_reference_itself_differs_with_the_term() -> None:
    assert not np.allclose(reference(MU), reference(0.0))  # the second step feels mu


def test_fedprox_sends_its_declared_mu_and_aggregates_as_fedavg() -> None:
    strategy = FedProx(proximal_mu=0.01)
    assert isinstance(strategy, Strategy) and strategy.config_schema == {"proximal_mu": float}
    assert strategy.configure(3) == {"proximal_mu": 0.01}
    assert type(strategy).accumulator is FedAvg.accumulator and type(strategy).finish is FedAvg.finish
    with pytest.raises(AccordError, match=r"proximal_mu is -1\.0; it must be a finite number >= 0"):
        FedProx(-1.0)


def test_the_plan_selects_fedprox_and_checks_its_setting(workspace_factory) -> None:
    strategy = {"template": "accord.strategies.FedProx", "settings": {"proximal_mu": 0.05}}
    plan = workspace_factory(["a"], overrides={"aggregator.settings.strategy": strategy})
    assert plan.strategy().configure(0) == {"proximal_mu": 0.05}
    with pytest.raises(AccordError, match="proximal_mu"):
        workspace_factory(["a"], overrides={"aggregator.settings.strategy": {**strategy, "settings": {"proximal_mu": "x"}}})


# -- torch --------------------------------------------------------------------------------------


def torch_runner() -> Any:
    import torch

    from accord.runners.torch_runner import TorchTaskRunner

    model = torch.nn.Linear(2, 1, bias=False)
    runner = TorchTaskRunner(model, optimizer={"name": "SGD", "lr": LR}, loss="mse")
    runner.set_weights({"weight": W0.astype(np.float32).reshape(1, 2)})
    return runner


@pytest.mark.parametrize("mu", [0.0, MU])
def test_the_torch_step_with_the_proximal_term_equals_the_hand_computed_one(mu: float) -> None:
    runner = torch_runner()
    output = runner.train(TwoBatches(), epochs=1, proximal_mu=mu)
    got = runner.get_weights()["weight"].reshape(-1)
    np.testing.assert_allclose(got, reference(mu), rtol=1e-5)
    w1 = W0 - LR * (2.0 / 2 * X[:2].astype(np.float64).T @ (X[:2] @ W0 - Y[:2]))
    losses = [np.mean((X[:2].astype(np.float64) @ W0 - Y[:2]) ** 2), np.mean((X[2:].astype(np.float64) @ w1 - Y[2:]) ** 2)]
    assert output.metrics["loss"] == pytest.approx(np.mean(losses), rel=1e-4)  # the data loss: the term left out
    if mu:
        assert output.metrics["proximal_term"] == pytest.approx(mu / 2 * np.sum((reference(mu) - W0) ** 2), rel=1e-4)
    else:
        assert "proximal_term" not in output.metrics


def test_the_torch_runner_refuses_a_negative_or_infinite_mu() -> None:
    for mu in (-0.1, float("inf"), float("nan")):
        with pytest.raises(AccordError, match=r"proximal_mu is .*; it must be a finite number >= 0"):
            torch_runner().train(TwoBatches(), proximal_mu=mu)


# -- Keras --------------------------------------------------------------------------------------


def keras_runner() -> Any:
    import keras

    from accord.runners.keras_runner import KerasTaskRunner

    inputs = keras.Input(shape=(2,))
    model = keras.Model(inputs, keras.layers.Dense(1, use_bias=False)(inputs))
    runner = KerasTaskRunner(model, optimizer={"name": "sgd", "learning_rate": LR}, loss="mse", metrics=[])
    (name,) = runner.get_weights()
    runner.set_weights({name: W0.astype(np.float32).reshape(2, 1)})
    return runner, name


@pytest.mark.skipif(find_spec("keras") is None, reason="needs the keras extra")
def test_the_keras_step_with_the_proximal_term_equals_the_hand_computed_one() -> None:
    runner, name = keras_runner()
    plain = runner.train(TwoBatches(), epochs=1, proximal_mu=0.0)
    np.testing.assert_allclose(runner.get_weights()[name].reshape(-1), reference(0.0), rtol=1e-5)
    assert "proximal_term" not in plain.metrics
    runner.set_weights({name: W0.astype(np.float32).reshape(2, 1)})
    output = runner.train(TwoBatches(), epochs=1, proximal_mu=MU)
    np.testing.assert_allclose(runner.get_weights()[name].reshape(-1), reference(MU), rtol=1e-5)
    assert output.metrics["proximal_term"] == pytest.approx(MU / 2 * np.sum((reference(MU) - W0) ** 2), rel=1e-4)
    # the reported loss is the epoch's mean data loss at each step's weights (the term left out)
    w1 = W0 - LR * (2.0 / 2 * X[:2].astype(np.float64).T @ (X[:2] @ W0 - Y[:2]))
    losses = [np.mean((X[:2].astype(np.float64) @ W0 - Y[:2]) ** 2), np.mean((X[2:].astype(np.float64) @ w1 - Y[2:]) ** 2)]
    assert output.metrics["loss"] == pytest.approx(np.mean(losses), rel=1e-4)
    # validation is not charged the term
    validation = runner.validate(TwoBatches())
    w2 = reference(MU)
    assert validation.metrics["loss"] == pytest.approx(np.mean((X.astype(np.float64) @ w2 - Y) ** 2), rel=1e-4)
    # mu 0 in a later round turns the term off
    runner.set_weights({name: W0.astype(np.float32).reshape(2, 1)})
    runner.train(TwoBatches(), epochs=1, proximal_mu=0.0)
    np.testing.assert_allclose(runner.get_weights()[name].reshape(-1), reference(0.0), rtol=1e-5)


@pytest.mark.skipif(find_spec("keras") is None or find_spec("torch") is None, reason="needs keras and torch")
def test_the_keras_proximal_term_holds_on_the_torch_backend_too() -> None:
    """The same check in a fresh process on Keras' torch backend (one backend per process)."""
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    test = f"{Path(__file__)}::test_the_keras_step_with_the_proximal_term_equals_the_hand_computed_one"
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "1 passed" in done.stdout
