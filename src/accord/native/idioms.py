"""OpenFL's native-API idioms, for FederatedModel: a builder of ``(feature_shape, num_classes)``,
an optimizer as a function of the parameters, and losses that see one-hot targets when the
labels came one-hot (FederatedDataSet serves them as class indices)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from accord.errors import AccordError

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def builder_arguments(build_model: Callable[..., Any], data_loader: Any) -> tuple[Any, ...]:
    """``()`` for Accord's zero-argument builder, ``(feature_shape, num_classes)`` for OpenFL's."""
    try:
        params = list(inspect.signature(build_model).parameters.values())
    except (TypeError, ValueError):  # no signature to read (a builtin): Accord's own form
        return ()
    empty = inspect.Parameter.empty
    required = [p for p in params if p.default is empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if not required:
        return ()
    takes_two = sum(p.kind in _POSITIONAL for p in params) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params)
    if not takes_two or len(required) > 2 or any(p.kind not in _POSITIONAL for p in required):
        raise AccordError(
            f"build_model{inspect.signature(build_model)} takes neither no arguments nor (feature_shape, num_classes)",
            "define build_model() or build_model(feature_shape, num_classes)",
        )
    if data_loader is None:
        raise AccordError(
            "build_model(feature_shape, num_classes) needs the data's shape and class count",
            "pass data_loader=FederatedDataSet(...) to FederatedModel",
        )
    return tuple(data_loader.feature_shape), int(data_loader.num_classes)


def check_optimizer(optimizer: Any) -> None:
    """None, a settings dict (``{"name": "Adam", "lr": 1e-3}``) or a function of the parameters."""
    if optimizer is None or isinstance(optimizer, dict) or (callable(optimizer) and not hasattr(optimizer, "step")):
        return
    raise AccordError(
        f"optimizer is a {type(optimizer).__name__}; every site needs its own optimizer",
        'pass a function of the parameters (lambda params: torch.optim.Adam(params, lr=1e-3)) or {"name": "Adam", "lr": 1e-3}',
    )


def torch_loss(loss: Any, one_hot: bool, num_classes: int) -> Any:
    """The runner's loss: Accord's names as they are; a function of (output, target) gets
    one-hot float targets when the labels came one-hot, class indices otherwise."""
    if not (one_hot and callable(loss)):
        return loss
    import torch.nn.functional as F

    def one_hot_loss(output: Any, target: Any) -> Any:
        return loss(output, F.one_hot(target.long(), num_classes).to(output.dtype))

    return one_hot_loss


def keras_one_hot_loss(keras: Any, model: Any, num_classes: int) -> None:
    """Recompile a compiled Keras model whose loss takes one-hot targets (categorical
    crossentropy, a function of (y_true, y_pred)) to take the class indices it is fed."""
    loss = model.loss
    if loss is None or _takes_indices(loss):
        return
    loss = keras.losses.get(loss) if isinstance(loss, str) else loss
    if not callable(loss):
        raise AccordError(
            f"the Keras model's loss {model.loss!r} is not one loss function, so one-hot labels cannot reach it",
            "compile the model with one loss, or give FederatedDataSet class indices",
        )
    ops = keras.ops

    def one_hot_loss(y_true: Any, y_pred: Any) -> Any:
        indices = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        return loss(ops.one_hot(indices, num_classes, dtype=y_pred.dtype), y_pred)

    model.compile(optimizer=model.optimizer, loss=one_hot_loss)


def _takes_indices(loss: Any) -> bool:
    """A sparse loss (``sparse_categorical_crossentropy``, SparseCategoricalCrossentropy) takes indices."""
    name = loss if isinstance(loss, str) else getattr(loss, "__name__", type(loss).__name__)
    return str(name).lower().startswith("sparse")
