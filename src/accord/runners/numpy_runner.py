"""SklearnLinearRunner: the TaskRunner protocol for linear scikit-learn models (``partial_fit``).

The model's whole state is two NumPy arrays, ``coef`` and ``intercept``, so this runner is
what a framework outside torch and Keras costs: one small class. scikit-learn is imported
only when a runner is built.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from accord.data.base import DataLoader
from accord.errors import AccordError
from accord.plan.code_settings import import_code
from accord.runners.base import TaskOutput
from accord.tensors.state import ModelState

#: keyword arguments used when the estimator is named by its short name and none are given.
SHORT_NAME_DEFAULTS: dict[str, dict[str, Any]] = {"SGDClassifier": {"loss": "log_loss"}}
_FIX = "set task_runner.settings.n_features and classes (or run a task on data first)"


class SklearnLinearRunner:
    """Trains a linear scikit-learn estimator with ``partial_fit``; state = coef + intercept.

    ``estimator``: a name in ``sklearn.linear_model`` ("SGDClassifier", "Perceptron",
    "PassiveAggressiveClassifier", "SGDRegressor"), a dotted path, or an instance (cloned).
    ``classes`` (classifiers) and ``n_features`` fix the shapes of the all-zero initial
    model, so it exists before any data is seen; when left out they are taken from the
    first DataLoader the runner sees (``num_classes``, ``feature_shape``).

    There is no optimizer state: ``with_optimizer`` is ignored and ``reset_optimizer`` does
    nothing (the estimator's step counter ``t_`` stays with the site, as with CONTINUE_LOCAL).
    """

    def __init__(
        self,
        estimator: Any = "SGDClassifier",
        classes: list[int] | int | None = None,
        n_features: int | None = None,
        estimator_kwargs: dict[str, Any] | None = None,
        seed: int = 0,
    ) -> None:
        from sklearn.base import is_classifier

        self.seed = int(seed)
        self.model = _make_estimator(estimator, estimator_kwargs or {}, self.seed)
        if getattr(self.model, "average", 0):
            raise AccordError("averaged SGD (average > 0) is not supported", "leave `average` unset")
        self.is_classifier = bool(is_classifier(self.model))
        self.classes = None if classes is None else _as_classes(classes)
        self.n_features = None if n_features is None else int(n_features)
        self._epochs_run = 0
        self._ready = False
        self._prepare()

    # -- weights -----------------------------------------------------------------------

    def get_weights(self, with_optimizer: bool = False) -> ModelState:
        """``coef`` and ``intercept`` as float64 copies (no optimizer state exists)."""
        if not self._ready:
            raise AccordError("the model's shape is not known yet", _FIX)
        return {"coef": np.array(self.model.coef_, np.float64), "intercept": np.array(self.model.intercept_, np.float64)}

    def set_weights(self, state: ModelState, with_optimizer: bool = False) -> None:
        """Load ``coef`` and ``intercept`` (shapes must match; other names are refused)."""
        extra = sorted(set(state) - {"coef", "intercept"})
        if extra or "coef" not in state or "intercept" not in state:
            raise AccordError(
                f"expected tensors coef and intercept, got {sorted(state)}",
                "use a model state saved from a SklearnLinearRunner",
            )
        if not self._ready:  # take the shape from the state itself
            coef = np.asarray(state["coef"])
            self.n_features = int(coef.shape[-1])
            if self.is_classifier:
                self.classes = _as_classes(2 if coef.shape[0] == 1 else coef.shape[0])
            self._prepare()
        for name, target in (("coef", "coef_"), ("intercept", "intercept_")):
            value = np.asarray(state[name])
            if value.shape != getattr(self.model, target).shape:
                raise AccordError(
                    f"{name} has shape {value.shape}, the model's is {getattr(self.model, target).shape}",
                    "check classes and n_features in task_runner.settings",
                )
            setattr(self.model, target, np.array(value, np.float64, order="C"))

    def reset_optimizer(self) -> None:
        """Nothing to reset: plain SGD keeps no optimizer state that travels."""

    # -- tasks -------------------------------------------------------------------------

    def train(self, data: DataLoader, epochs: int = 1, **ignored: Any) -> TaskOutput:
        """``partial_fit`` on every training batch, ``epochs`` times; metrics on the training shard."""
        if int(epochs) < 1:
            raise AccordError(f"epochs is {epochs}; it must be >= 1", "set the train task's epochs in the plan")
        self._prepare(data)
        seed = self.seed
        for _ in range(int(epochs)):
            seed = int(np.random.SeedSequence([self.seed, self._epochs_run]).generate_state(1)[0])
            self._epochs_run += 1
            for x, y in data.train_batches(seed=seed):
                self.model.partial_fit(_flat(x), self._targets(y))
        return TaskOutput(self._evaluate(data.train_batches(seed=seed)), int(data.train_size))

    def validate(self, data: DataLoader, **ignored: Any) -> TaskOutput:
        """Accuracy and log loss (classifiers; log loss only with ``predict_proba``), or MSE as loss."""
        self._prepare(data)
        return TaskOutput(self._evaluate(data.valid_batches()), int(data.valid_size))

    # -- internals ---------------------------------------------------------------------

    def _prepare(self, data: DataLoader | None = None) -> None:
        """Give the estimator all-zero coef/intercept once the shapes are known."""
        if self._ready:
            return
        if data is not None:
            self.n_features = self.n_features or int(np.prod(data.feature_shape))
            if self.is_classifier and self.classes is None:
                self.classes = _as_classes(data.num_classes)
        if self.n_features is None or (self.is_classifier and self.classes is None):
            return
        classes = self.classes if self.is_classifier else None  # a classifier has its classes by now
        rows = 0 if classes is None else 1 if len(classes) == 2 else len(classes)
        self.model.coef_ = np.zeros((rows, self.n_features) if rows else (self.n_features,))
        self.model.intercept_ = np.zeros(max(rows, 1))
        if self.is_classifier:
            self.model.classes_ = np.asarray(self.classes)
        self._ready = True

    def _targets(self, y: np.ndarray) -> np.ndarray:
        return y if self.is_classifier else y.astype(np.float64)

    def _evaluate(self, batches: Iterator[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
        correct, loss_sum, count = 0, 0.0, 0
        proba = self.is_classifier and hasattr(self.model, "predict_proba")
        for x, y in batches:
            xs = _flat(x)
            count += len(y)
            if not self.is_classifier:
                loss_sum += float(np.sum((self.model.predict(xs) - y) ** 2))
                continue
            correct += int(np.sum(self.model.predict(xs) == y))
            if proba:
                p = self.model.predict_proba(xs)[np.arange(len(y)), np.searchsorted(self.model.classes_, y)]
                loss_sum += float(-np.sum(np.log(np.clip(p, 1e-15, 1.0))))
        if not count:
            return {}
        metrics = {"accuracy": correct / count} if self.is_classifier else {}
        if proba or not self.is_classifier:
            metrics["loss"] = loss_sum / count
        return metrics


def _make_estimator(estimator: Any, kwargs: dict[str, Any], seed: int) -> Any:
    from sklearn.base import clone

    if not isinstance(estimator, str):
        return clone(estimator)
    if "." in estimator:
        factory = import_code("task_runner.settings.estimator", estimator)
    else:
        import sklearn.linear_model

        factory = getattr(sklearn.linear_model, estimator, None)
        if factory is None:
            raise AccordError(
                f"sklearn.linear_model has no estimator {estimator!r}",
                "name one such as SGDClassifier, Perceptron, SGDRegressor, or give a dotted path",
            )
        kwargs = {**SHORT_NAME_DEFAULTS.get(estimator, {}), **kwargs}
    model = factory(**kwargs)
    if "random_state" in model.get_params() and "random_state" not in kwargs:
        model.set_params(random_state=seed)
    return model


def _as_classes(classes: list[int] | int) -> list[int]:
    if isinstance(classes, (int, np.integer)):
        return list(range(int(classes)))
    return sorted(int(c) for c in classes)


def _flat(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float64).reshape(len(x), -1)
