"""KerasInteractiveRunner: the plan's task runner for a compiled Keras model of an interactive experiment."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from accord.errors import AccordError
from accord.interactive.runner import UserTasks
from accord.runners._keras_parts import import_keras
from accord.runners.keras_weights import KerasWeights, build_keras_model


class KerasInteractiveRunner(KerasWeights, UserTasks):
    """``model()`` builds a compiled keras.Model (after seeding with ``seed``); it carries its optimizer.

    ``model`` may be a dotted path (as in the plan) or a callable. Keras places the model on
    a device itself, so the task functions get none. Keras is imported here, on ``backend`` if given.
    """

    def __init__(
        self,
        model: Any,
        functions: Mapping[str, Mapping[str, Any]],
        seed: int = 0,
        backend: str | None = None,
    ) -> None:
        self.keras = import_keras(backend)
        self.model = build_keras_model(self.keras, model, {}, seed)
        if not getattr(self.model, "compiled", False):
            raise AccordError(
                "the Keras model builder returned a model that is not compiled",
                "call model.compile(optimizer=..., loss=..., metrics=[...]) in the builder before returning it",
            )
        self.use_functions(functions, device=None)
