"""KerasTaskRunner: the TaskRunner protocol for a Keras 3 model (any Keras backend).

Keras is imported when a runner is built, never at ``import accord.runners``.
"""

from __future__ import annotations

from typing import Any


from accord.data.base import DataLoader
from accord.errors import AccordError
from accord.runners._keras_parts import (
    assign_all,
    build_optimizer,
    count_correct,
    fresh_names,
    import_keras,
    to_numpy,
    variable_names,
)
from accord.runners._shared import batches_per_epoch, build_model, derive_seed, progress_bar, show_progress
from accord.runners.base import OPTIMIZER_PREFIX, TaskOutput
from accord.tensors.state import ModelState

DEFAULT_OPTIMIZER: dict[str, Any] = {"name": "adam", "learning_rate": 1e-3}
DEFAULT_LOSS = "sparse_categorical_crossentropy"
DEFAULT_METRICS: tuple[str, ...] = ("accuracy",)


class KerasTaskRunner:
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
        with fresh_names():
            self.keras.utils.set_random_seed(self.seed)  # identical initial weights everywhere
            self.model = build_model(model, model_kwargs or {}, self.keras.Model, "a keras.Model")
            if not self.model.weights:
                raise AccordError(
                    "the Keras model has no weights yet (it was never built)",
                    "give the model an input shape, e.g. start it with keras.Input(...)",
                )
            if not getattr(self.model, "compiled", False):
                config = dict(DEFAULT_OPTIMIZER if optimizer is None else optimizer)
                self.model.compile(
                    optimizer=build_optimizer(self.keras, config),
                    loss=loss or DEFAULT_LOSS,
                    metrics=list(DEFAULT_METRICS if metrics is None else metrics),
                )
        self._weights = dict(zip(variable_names(self.model.weights), self.model.weights))

    @property
    def optimizer(self) -> Any:
        """The compiled model's optimizer."""
        return self.model.optimizer

    # -- weights -----------------------------------------------------------------------

    def get_weights(self, with_optimizer: bool = False) -> ModelState:
        """The model's variables as NumPy copies, in model order; optimizer under ``__opt__.``.

        The optimizer is built first if it has no variables yet (fresh state, weights
        untouched), so the set of names is the same before and after training.
        """
        state: ModelState = {n: to_numpy(v) for n, v in self._weights.items()}
        if with_optimizer:
            state.update({n: to_numpy(v) for n, v in self._optimizer_vars().items()})
        return state

    def set_weights(self, state: ModelState, with_optimizer: bool = False) -> None:
        """Assign tensors by name (strict on the model's names and shapes).

        With ``with_optimizer`` the optimizer's variables are assigned too when the state
        holds any (then strictly: all of them, by name and shape).
        """
        model_part = {k: v for k, v in state.items() if not k.startswith(OPTIMIZER_PREFIX)}
        assign_all(self._weights, model_part, "model")
        optimizer_part = {k: v for k, v in state.items() if k.startswith(OPTIMIZER_PREFIX)}
        if with_optimizer and optimizer_part:
            assign_all(self._optimizer_vars(), optimizer_part, "optimizer")

    def reset_optimizer(self) -> None:
        """Give the optimizer a fresh state: that of a new optimizer of the same config.

        The optimizer object stays (so the compiled train function stays valid); its
        variables get the values a freshly built copy starts from (iteration 0, ...).
        """
        live = self._optimizer_vars()
        fresh = type(self.optimizer).from_config(self.optimizer.get_config())
        with fresh_names():
            fresh.build(self.model.trainable_variables)
        values = {
            name: to_numpy(v)
            for name, v in zip(variable_names(fresh.variables, OPTIMIZER_PREFIX), fresh.variables)
        }
        assign_all(live, values, "optimizer")

    # -- tasks -------------------------------------------------------------------------

    def train(self, data: DataLoader, epochs: int = 1, **ignored: Any) -> TaskOutput:
        """Train ``epochs`` local epochs; ``loss`` is the per-sample mean over the last one."""
        epochs = int(epochs)
        if epochs < 1:
            raise AccordError(
                f"epochs is {epochs}; it must be >= 1", "set the train task's epochs in the plan"
            )
        total = epochs * batches_per_epoch(data.train_size, getattr(data, "batch_size", 1))
        loss_sum, count = 0.0, 0
        with progress_bar(show_progress(self.progress), total) as advance:
            for _ in range(epochs):
                epoch_seed = derive_seed(self.seed, self._epochs_run)
                self._epochs_run += 1
                loss_sum, count = 0.0, 0
                for x, y in data.train_batches(seed=epoch_seed):
                    logs = self.model.train_on_batch(x, y, return_dict=True)
                    loss_sum += float(logs["loss"]) * len(y)
                    count += len(y)
                    advance()
        return TaskOutput({"loss": loss_sum / count if count else 0.0}, int(data.train_size))

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

    # -- internals ---------------------------------------------------------------------

    def _optimizer_vars(self) -> dict[str, Any]:
        """The optimizer's variables by ``__opt__.`` name, building it first if needed."""
        optimizer = self.optimizer
        if optimizer is None:
            raise AccordError(
                "the Keras model was compiled without an optimizer",
                "compile the model with an optimizer or leave it uncompiled",
            )
        if not optimizer.built:
            with fresh_names():
                optimizer.build(self.model.trainable_variables)
        variables = list(optimizer.variables)
        return dict(zip(variable_names(variables, OPTIMIZER_PREFIX), variables))
