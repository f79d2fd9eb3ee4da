"""OpenFL's ``KerasTaskRunner``: the workspace builds and compiles ``self.model`` (its
``build_model(feature_shape, num_classes)`` idiom), trained by ``model.fit`` over the data
loader's batches.

Weights cross by Keras variable path, optimizer variables under ``__opt__.``
(runners/keras_weights.py). Keras is imported when a runner is built.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from accord.compat.openfl.metric import Metric, metric_values
from accord.compat.openfl.runner import TaskRunner, check_epochs
from accord.errors import AccordError
from accord.runners._keras_parts import fresh_names, import_keras
from accord.runners.base import TaskOutput
from accord.runners.keras_weights import KerasWeights

#: the seed every participant builds the runner's model with
MODEL_SEED = 0


class KerasTaskRunner(KerasWeights, TaskRunner):
    """OpenFL's Keras runner; a subclass sets ``self.model`` (a compiled keras.Model)."""

    def __init__(self, **kwargs: Any) -> None:
        TaskRunner.__init__(self, **kwargs)
        self.keras = import_keras()
        self.model: Any = None
        self.model_tensor_names: list[str] = []
        self.required_tensorkeys_for_function: dict[str, Any] = {}

    @classmethod
    @contextmanager
    def _model_seed(cls) -> Iterator[None]:
        keras = import_keras()
        with fresh_names():
            keras.utils.set_random_seed(MODEL_SEED)
            yield

    def build_model(self, input_shape: Any, num_classes: Any, **kwargs: Any) -> Any:
        """The workspace's compiled keras.Model (a subclass defines it)."""
        raise NotImplementedError(f"{type(self).__name__} must define build_model")

    # -- OpenFL's default epoch functions --------------------------------------------------

    def train_(self, batch_generator: Iterator[Any], metrics: list[str] | None = None, **kwargs: Any) -> list[Metric]:
        """One ``model.fit`` pass over ``batch_generator``; the mean of each of ``metrics``."""
        with _generator_input():
            history = self.model.fit(batch_generator, verbose=0, shuffle=False).history
        return [Metric(name=m, value=np.array(np.mean(_pick(history, m, "training")))) for m in metrics or ["loss"]]

    def validate_(self, batch_generator: Iterator[Any], metrics: list[str] | None = None, **kwargs: Any) -> list[Metric]:
        """``model.evaluate`` over ``batch_generator``: each of ``metrics`` (all the model's if None)."""
        with _generator_input():
            results = self.model.evaluate(batch_generator, verbose=0, return_dict=True)
        names = list(results) if metrics is None else metrics
        return [Metric(name=m, value=np.array(_pick(results, m, "validation"))) for m in names]

    # -- Accord's TaskRunner protocol --------------------------------------------------------

    def train(self, data: Any, epochs: int = 1, metrics: Any = None, batch_size: int | None = None, **kwargs: Any) -> TaskOutput:
        """``epochs`` calls of ``train_`` over the train loader (of ``batch_size``, else the loader's)."""
        self._use(data)
        self._check_model()
        results: Any = None
        for _ in range(check_epochs(epochs)):
            results = self.train_(self._loader().get_train_loader(batch_size), metrics=_names(metrics) or ["loss"])
        return self._train_output(metric_values(results, f"{type(self).__name__}.train_"))

    def validate(self, data: Any, metrics: Any = None, batch_size: int | None = None, **kwargs: Any) -> TaskOutput:
        """``validate_`` over the valid loader: the task's metrics (all the model's if none)."""
        self._use(data)
        self._check_model()
        results = self.validate_(self._loader().get_valid_loader(batch_size), metrics=_names(metrics))
        return self._valid_output(metric_values(results, f"{type(self).__name__}.validate_"))

    def reset_opt_vars(self) -> None:
        """OpenFL's name for reset_optimizer."""
        self.reset_optimizer()

    def _check_model(self) -> None:
        if self.model is None or not getattr(self.model, "weights", None):
            raise AccordError(
                f"{type(self).__name__} has no built Keras model",
                "set self.model = self.build_model(...) in the runner's __init__",
            )

    # -- native files -----------------------------------------------------------------------

    def save_native(self, filepath: str | Path, **kwargs: Any) -> str:
        """The model as a ``.keras`` file (the suffix added to a bare name)."""
        path = str(filepath)
        if "." not in path.split(os.sep)[-1]:
            path += ".keras"
        self.model.save(path)
        return path

    def load_native(self, filepath: str | Path, **kwargs: Any) -> None:
        """Load a ``.keras`` file (Keras' safe mode: no Python code in it is run)."""
        self.model = self.keras.models.load_model(filepath, safe_mode=True)
        self.__dict__.pop("_weights", None)


@contextmanager
def _generator_input() -> Iterator[None]:
    """Quiet Keras' warning that a generator ran out: it has no length, its end is the epoch's."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        yield


def _names(metrics: Any) -> list[str] | None:
    if metrics is None:
        return None
    return [metrics] if isinstance(metrics, str) else [str(m) for m in metrics]


def _pick(results: dict[str, Any], name: str, what: str) -> Any:
    if name not in results:
        raise AccordError(
            f"the Keras model reports no {what} metric {name!r} (it has {', '.join(results) or 'none'})",
            f"compile the model with metrics=[{name!r}] or fix the task's metrics in the plan",
        )
    return results[name]
