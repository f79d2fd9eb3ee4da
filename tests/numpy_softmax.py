"""A softmax regression in NumPy with momentum SGD: a TaskRunner that imports NumPy alone.

Copied into a workspace's ``src/`` by the end-to-end strategy tests (tests/test_e2e_strategies.py),
so each site process starts in a fraction of the time a torch one takes. Its state has every
kind of tensor a strategy must handle: float weights, an int64 step counter, and optimizer
state (``__opt__.*``, the momentum) that CONTINUE_GLOBAL ships.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from accord.runners.base import OPTIMIZER_PREFIX, TaskOutput


class SoftmaxRunner:
    def __init__(self, features: int = 64, classes: int = 10, lr: float = 0.5, momentum: float = 0.9, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.lr, self.momentum, self.seed = lr, momentum, seed
        self.weights = {
            "w": (0.01 * rng.normal(size=(features, classes))).astype(np.float32),
            "b": np.zeros(classes, np.float32),
            "steps": np.zeros(1, np.int64),
        }
        self.reset_optimizer()

    def reset_optimizer(self) -> None:
        self.velocity = {name: np.zeros_like(self.weights[name]) for name in ("w", "b")}

    def get_weights(self, with_optimizer: bool = False) -> dict[str, np.ndarray]:
        state = {name: value.copy() for name, value in self.weights.items()}
        if with_optimizer:
            state.update({f"{OPTIMIZER_PREFIX}{name}.velocity": v.copy() for name, v in self.velocity.items()})
        return state

    def set_weights(self, state: dict[str, np.ndarray], with_optimizer: bool = False) -> None:
        self.weights = {name: np.array(state[name]) for name in self.weights}
        if with_optimizer:
            self.velocity = {name: np.array(state[f"{OPTIMIZER_PREFIX}{name}.velocity"]) for name in self.velocity}

    def _probabilities(self, x: np.ndarray) -> np.ndarray:
        logits = x.reshape(len(x), -1) @ self.weights["w"] + self.weights["b"]
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def train(self, data: Any, epochs: int = 1, **kwargs: Any) -> TaskOutput:
        losses = []
        for epoch in range(epochs):
            for x, y in data.train_batches(seed=self.seed + epoch + int(self.weights["steps"][0])):
                x = x.reshape(len(x), -1).astype(np.float32)
                grad = self._probabilities(x)
                losses.append(float(-np.log(grad[np.arange(len(y)), y] + 1e-12).mean()))
                grad[np.arange(len(y)), y] -= 1.0
                grads = {"w": x.T @ grad / len(x), "b": grad.mean(axis=0)}
                for name, g in grads.items():
                    self.velocity[name] = (self.momentum * self.velocity[name] + g).astype(np.float32)
                    self.weights[name] = (self.weights[name] - self.lr * self.velocity[name]).astype(np.float32)
                self.weights["steps"] += 1
        return TaskOutput({"loss": float(np.mean(losses))}, data.train_size)

    def validate(self, data: Any, **kwargs: Any) -> TaskOutput:
        correct, total, loss = 0, 0, 0.0
        for x, y in data.valid_batches():
            p = self._probabilities(x.astype(np.float32))
            correct += int((p.argmax(axis=1) == y).sum())
            loss += float(-np.log(p[np.arange(len(y)), y] + 1e-12).sum())
            total += len(y)
        return TaskOutput({"accuracy": correct / total, "loss": loss / total}, data.valid_size)
