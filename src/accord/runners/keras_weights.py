"""KerasWeights: the weights half of the TaskRunner protocol for a compiled Keras 3 model.

A runner mixes it in and holds ``model`` (built by ``build_keras_model``); tensors cross
by Keras variable path (``dense/kernel``), optimizer variables under ``__opt__.`` + path.
Keras is imported by the runner, never by this module.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from accord.errors import AccordError
from accord.runners._keras_parts import assign_all, fresh_names, to_numpy, variable_names
from accord.runners._shared import build_model
from accord.runners.base import OPTIMIZER_PREFIX
from accord.tensors.state import ModelState


def build_keras_model(keras: Any, model: Any, model_kwargs: dict[str, Any], seed: int) -> Any:
    """The Keras model (instance, builder or dotted path), built with ``seed`` and fresh names.

    Every participant gets identical initial weights and identical variable paths.
    """
    with fresh_names():
        keras.utils.set_random_seed(int(seed))
        built = build_model(model, model_kwargs, keras.Model, "a keras.Model")
    if not built.weights:
        raise AccordError(
            "the Keras model has no weights yet (it was never built)",
            "give the model an input shape, e.g. start it with keras.Input(...)",
        )
    return built


class KerasWeights:
    """get_weights / set_weights / reset_optimizer over ``self.model`` and its optimizer."""

    model: Any

    @property
    def optimizer(self) -> Any:
        """The compiled model's optimizer."""
        return self.model.optimizer

    @cached_property
    def _weights(self) -> dict[str, Any]:
        return dict(zip(variable_names(self.model.weights), self.model.weights))

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
