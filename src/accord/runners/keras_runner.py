"""KerasTaskRunner: the TaskRunner protocol for a Keras 3 model (any Keras backend).

Keras is imported when a runner is built, never at ``import accord.runners``.
"""

from __future__ import annotations

from typing import Any

from accord.data.base import DataLoader
from accord.errors import AccordError
from accord.runners._keras_parts import ProximalTerm, build_optimizer, count_correct, fresh_names, import_keras
from accord.runners._shared import batches_per_epoch, check_proximal_mu, derive_seed, progress_bar, show_progress
from accord.runners.base import TaskOutput
from accord.runners.keras_weights import KerasWeights, build_keras_model

DEFAULT_OPTIMIZER: dict[str, Any] = {"name": "adam", "learning_rate": 1e-3}
DEFAULT_LOSS = "sparse_categorical_crossentropy"
DEFAULT_METRICS: tuple[str, ...] = ("accuracy",)


class KerasTaskRunner(KerasWeights):
    """Trains and validates a Keras model over a DataLoader; weights cross as NumPy arrays.

    Tensors are named by their Keras variable paths (``dense/kernel``); optimizer
    variables (iteration counter included) by ``__opt__.`` + path (``__opt__.adam/iteration``).
    An uncompiled model is compiled with ``optimizer``, ``loss`` and ``metrics``; a compiled
    one keeps its own.
    """

    def __init__(
        self,
        model: Any,
        optimizer: dict[str, Any] | None = None,
        loss: str | None = None,
        metrics: list[str] | None = None,
        seed: int = 0,
        backend: str | None = None,
        model_kwargs: dict[str, Any] | None = None,
        progress: bool | None = None,
    ) -> None:
        self.keras = import_keras(backend)
        self.seed = int(seed)
        self.progress = progress
        self._epochs_run = 0
        self._proximal: ProximalTerm | None = None
        self.model = build_keras_model(self.keras, model, model_kwargs or {}, self.seed)
        if not getattr(self.model, "compiled", False):
            config = dict(DEFAULT_OPTIMIZER if optimizer is None else optimizer)
            with fresh_names():
                self.model.compile(
                    optimizer=build_optimizer(self.keras, config),
                    loss=loss or DEFAULT_LOSS,
                    metrics=list(DEFAULT_METRICS if metrics is None else metrics),
                )

    # -- tasks -------------------------------------------------------------------------

    def train(self, data: DataLoader, epochs: int = 1, proximal_mu: float = 0.0, **ignored: Any) -> TaskOutput:
        """Train ``epochs`` local epochs; ``loss`` is the per-sample mean over the last one.

        ``proximal_mu`` > 0 (FedProx's per-round config): ``mu / 2 * ||w - w_global||^2`` is
        added to the loss at each step, ``w_global`` the weights at the task's start; ``loss``
        stays the data loss and ``proximal_term`` is the term at the end of the task."""
        epochs = int(epochs)
        if epochs < 1:
            raise AccordError(
                f"epochs is {epochs}; it must be >= 1", "set the train task's epochs in the plan"
            )
        mu = check_proximal_mu(proximal_mu)
        if mu > 0 and self._proximal is None:
            self._proximal = ProximalTerm(self.keras, self.model)
        proximal = self._proximal
        if proximal is not None:
            proximal.anchor(mu)  # mu 0 turns it off for this task
        active = proximal if mu > 0 else None
        total = epochs * batches_per_epoch(data.train_size, getattr(data, "batch_size", 1))
        loss_sum, count = 0.0, 0
        with progress_bar(show_progress(self.progress), total) as advance:
            for _ in range(epochs):
                epoch_seed = derive_seed(self.seed, self._epochs_run)
                self._epochs_run += 1
                loss_sum, count = 0.0, 0
                for x, y in data.train_batches(seed=epoch_seed):
                    logs = self.model.train_on_batch(x, y, return_dict=True)
                    term = float(active.last.numpy()) if active is not None else 0.0  # at the step's weights
                    loss_sum += (float(logs["loss"]) - term) * len(y)
                    count += len(y)
                    advance()
        metrics = {"loss": loss_sum / count if count else 0.0}
        if active is not None:
            metrics["proximal_term"] = active.current()
        return TaskOutput(metrics, int(data.train_size))

    def validate(self, data: DataLoader, **ignored: Any) -> TaskOutput:
        """Accuracy (where it applies) and mean loss over ``data.valid_batches()``."""
        loss_sum, correct, scored, count = 0.0, 0, 0, 0
        for x, y in data.valid_batches():
            logs = self.model.test_on_batch(x, y, return_dict=True)
            loss_sum += float(logs["loss"]) * len(y)
            count += len(y)
            hits = count_correct(self.model.predict_on_batch(x), y)
            if hits is not None:
                correct, scored = correct + hits, scored + len(y)
        metrics: dict[str, float] = {}
        if scored:
            metrics["accuracy"] = correct / scored
        metrics["loss"] = loss_sum / count if count else 0.0
        return TaskOutput(metrics=metrics, sample_count=int(data.valid_size))
