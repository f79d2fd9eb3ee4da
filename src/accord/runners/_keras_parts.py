"""Pieces of the Keras runner: backend choice, stable names, optimizer, variables, accuracy.

Nothing here imports Keras at module import; ``import_keras`` does, on first use.
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from accord.errors import AccordError
from accord.tensors.state import name_mismatch

_SAME_MODEL_FIX = "use a model state saved from the same model (check task_runner.settings.model)"


def import_keras(backend: str | None = None) -> Any:
    """The ``keras`` module, imported on ``backend`` if given (one backend per process).

    KERAS_BACKEND is set before the first import; once Keras is loaded its backend is
    fixed, so asking for another one is an AccordError. TensorFlow's C++ logging is
    quietened (TF_CPP_MIN_LOG_LEVEL=2) unless the user set it.
    """
    wanted = str(backend).strip().lower() if backend else None
    loaded = sys.modules.get("keras")
    if loaded is not None:
        current = loaded.backend.backend()
        if wanted and wanted != current:
            raise AccordError(
                f"Keras is already running on the {current!r} backend in this process; "
                f"the plan asks for {wanted!r}",
                f"Keras allows one backend per process: run this runner in its own process "
                f"(or set KERAS_BACKEND={wanted} before Keras is first imported), "
                f"or set task_runner.settings.backend to {current!r}",
            )
        return loaded
    if wanted:
        os.environ["KERAS_BACKEND"] = wanted
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import keras
    except ImportError as exc:
        raise AccordError(
            f"cannot import Keras: {exc}",
            "install the keras extra (pip install 'accord[keras]') and the backend's framework",
        ) from exc
    except ValueError as exc:  # e.g. an unknown backend name
        raise AccordError(
            f"cannot start Keras: {exc}".splitlines()[0],
            "set task_runner.settings.backend to tensorflow, torch or jax",
        ) from exc
    return keras


@contextmanager
def fresh_names() -> Iterator[None]:
    """Build with Keras' automatic names counted from zero, then restore the counters.

    Keras numbers layers per thread (``dense``, ``dense_1``, ...), so a second model built
    in the same process would get other variable paths than the first, and weights would
    not match by name across sites. Inside this block every model starts from ``dense``.
    """
    try:
        from keras.src.backend.common import global_state
    except ImportError:  # pragma: no cover - Keras moved its internals; names may drift
        yield
        return
    import collections

    key = "object_name_uids"
    saved = global_state.get_global_attribute(key)
    global_state.set_global_attribute(key, collections.defaultdict(int))
    try:
        yield
    finally:
        global_state.set_global_attribute(key, saved)


def build_optimizer(keras: Any, config: dict[str, Any]) -> Any:
    """A Keras optimizer from ``{name: adam, learning_rate: ..., ...}``; AccordError if refused."""
    settings = dict(config)
    name = str(settings.pop("name", "adam"))
    try:
        with fresh_names():  # the probe instance must not use up the name "adam"
            cls = type(keras.optimizers.get(name))
    except (ValueError, TypeError) as exc:
        raise AccordError(
            f"unknown optimizer {name!r}",
            "set task_runner.settings.optimizer.name to a Keras optimizer, e.g. adam or sgd",
        ) from exc
    try:
        return cls(**settings)
    except (TypeError, ValueError) as exc:
        raise AccordError(
            f"optimizer {name} refused its settings {settings}: {exc}".splitlines()[0],
            "fix task_runner.settings.optimizer in the plan (Keras takes learning_rate, not lr)",
        ) from exc


def variable_names(variables: Sequence[Any], prefix: str = "") -> list[str]:
    """``prefix + variable.path`` for each variable; repeated paths get ``#1``, ``#2``, ..."""
    names: list[str] = []
    seen: dict[str, int] = {}
    for variable in variables:
        name = prefix + str(variable.path)
        count = seen.get(name, 0)
        seen[name] = count + 1
        names.append(f"{name}#{count}" if count else name)
    return names


def to_numpy(variable: Any) -> np.ndarray:
    """A NumPy copy of a Keras variable's value (bfloat16 widened to float32)."""
    array = np.array(variable.numpy(), copy=True)
    if array.dtype.name == "bfloat16":
        array = array.astype(np.float32)
    return array


def assign_all(variables: dict[str, Any], state: dict[str, np.ndarray], what: str) -> None:
    """Assign ``state[name]`` to each named variable; strict on names and shapes."""
    mismatch = name_mismatch(variables, state)
    if mismatch:
        raise AccordError(f"{what} state does not match the model" + mismatch, _SAME_MODEL_FIX)
    for name, variable in variables.items():
        value = np.asarray(state[name])
        expected = tuple(variable.shape)
        if tuple(value.shape) != expected:
            raise AccordError(
                f"{what} tensor {name!r} has shape {tuple(value.shape)}, expected {expected}",
                _SAME_MODEL_FIX,
            )
    for name, variable in variables.items():
        variable.assign(np.asarray(state[name]).astype(_dtype_name(variable), copy=False))


def _dtype_name(variable: Any) -> str:
    dtype = variable.dtype
    return dtype if isinstance(dtype, str) else getattr(dtype, "name", str(dtype))


def count_correct(outputs: np.ndarray, y: np.ndarray) -> int | None:
    """Correct predictions in a batch, or None where accuracy does not apply.

    Several outputs: argmax against integer labels (or one-hot rows); one output
    (a sigmoid): threshold 0.5. Float labels that are not one-hot mean regression.
    """
    outputs = np.asarray(outputs)
    y = np.asarray(y)
    if outputs.ndim == 2 and outputs.shape[1] > 1:
        if y.ndim == 2 and y.shape == outputs.shape:
            return int((outputs.argmax(axis=1) == y.argmax(axis=1)).sum())
        if y.dtype.kind in "iub" and y.size == len(outputs):
            return int((outputs.argmax(axis=1) == y.reshape(-1)).sum())
        return None
    if outputs.size == y.size and outputs.size == len(outputs) and y.dtype.kind in "iub":
        predicted = (outputs.reshape(-1) > 0.5).astype(np.int64)
        return int((predicted == y.reshape(-1).astype(np.int64)).sum())
    return None


class ProximalTerm:
    """FedProx's ``mu / 2 * ||w - w_global||^2`` over a Keras model's trainable variables, added
    to the loss of each training step (not to validation's); tested on the TensorFlow and torch
    backends.

    Installed once, on first use: the model's ``compute_loss`` is wrapped on the instance and
    its train function rebuilt. ``w_global`` and ``mu`` live in non-trainable variables of their
    own (not the model's), so each task's ``anchor`` changes their values without a retrace.
    """

    def __init__(self, keras: Any, model: Any) -> None:
        self._ops = keras.ops
        self._model = model
        self._trainable = list(model.trainable_variables)
        self._anchors = [
            keras.Variable(to_numpy(v), trainable=False, dtype=_dtype_name(v), name=f"accord_proximal_anchor_{i}")
            for i, v in enumerate(self._trainable)
        ]
        self._mu = keras.Variable(0.0, trainable=False, dtype="float32", name="accord_proximal_mu")
        #: the term of the last training step, at that step's weights (its loss minus this is the data loss)
        self.last = keras.Variable(0.0, trainable=False, dtype="float32", name="accord_proximal_last")
        self._install()

    def anchor(self, mu: float) -> None:
        """Hold the model near its current weights (the task's start) with ``mu``."""
        for anchor, variable in zip(self._anchors, self._trainable):
            anchor.assign(variable.value)
        self._mu.assign(mu)

    def value(self) -> Any:
        """The term at the variables' current values (a backend tensor)."""
        ops = self._ops
        total = ops.convert_to_tensor(0.0, "float32")
        for anchor, variable in zip(self._anchors, self._trainable):
            total = total + ops.sum(ops.square(ops.cast(variable.value, "float32") - ops.cast(anchor.value, "float32")))
        return self._mu.value * 0.5 * total

    def current(self) -> float:
        """The term's value now, as a number (no gradient kept)."""
        return float(self._ops.convert_to_numpy(self.value()))

    def _install(self) -> None:
        plain = self._model.compute_loss
        takes_training = "training" in inspect.signature(plain).parameters  # Keras < 3.3 overrides lack it

        def compute_loss(x: Any = None, y: Any = None, y_pred: Any = None, sample_weight: Any = None, training: bool = True) -> Any:
            loss = plain(x, y, y_pred, sample_weight, training=training) if takes_training else plain(x, y, y_pred, sample_weight)
            if not training:
                return loss
            term = self.value()
            self.last.assign(self._ops.stop_gradient(term))
            return loss + self._ops.cast(term, loss.dtype)

        self._model.compute_loss = compute_loss
        self._model._compute_loss_has_training_arg = True  # so validation steps say training=False
        self._model.make_train_function(force=True)
