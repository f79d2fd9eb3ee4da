"""Pieces of the torch runner: device choice, optimizer, loss, accuracy, optimizer state I/O."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from accord.errors import AccordError
from accord.plan.code_settings import import_code
from accord.runners.base import OPTIMIZER_PREFIX

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: a function of the model's parameters returning its optimizer (OpenFL's torch idiom)
OptimizerFactory = Callable[[Iterator[torch.nn.Parameter]], torch.optim.Optimizer]
BUILTIN_LOSSES: tuple[str, ...] = ("cross_entropy", "mse", "bce_with_logits")


def resolve_device(device: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto``; CUDA falls back to CPU with one warning."""
    name = str(device).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise AccordError(
            f"unknown device {device!r}: {exc}",
            "set task_runner.settings.device to 'cpu', 'cuda', 'cuda:N' or 'auto'",
        ) from exc
    if chosen.type == "cuda" and not torch.cuda.is_available():
        warnings.warn(
            f"device {device!r} was requested but CUDA is not available; training on the CPU",
            RuntimeWarning,
            stacklevel=3,
        )
        return torch.device("cpu")
    return chosen


def build_optimizer(
    params: Iterator[torch.nn.Parameter], config: dict[str, Any] | OptimizerFactory
) -> torch.optim.Optimizer:
    """``getattr(torch.optim, config['name'])(params, **rest)``, or ``config(params)`` for a
    function of the parameters (OpenFL's ``lambda x: optim.Adam(x, lr=1e-4)``); AccordError if
    unknown or if the function returns no torch optimizer."""
    if callable(config):
        made = config(params)
        if not isinstance(made, torch.optim.Optimizer):
            raise AccordError(
                f"optimizer= returned a {type(made).__name__}, not a torch.optim.Optimizer",
                "pass a function of the parameters, e.g. lambda params: torch.optim.Adam(params, lr=1e-3)",
            )
        return made
    settings = dict(config)
    name = str(settings.pop("name", "Adam"))
    cls = getattr(torch.optim, name, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise AccordError(
            f"unknown optimizer {name!r}",
            "set task_runner.settings.optimizer.name to a torch.optim class, e.g. Adam or SGD",
        )
    try:
        return cls(params, **settings)
    except (TypeError, ValueError) as exc:
        raise AccordError(
            f"optimizer {name} refused its settings {settings}: {exc}",
            "fix task_runner.settings.optimizer in the plan",
        ) from exc


def make_loss(loss: str | LossFn) -> tuple[LossFn, str]:
    """The loss function and its kind (a built-in name, or 'custom')."""
    if callable(loss):
        return loss, "custom"
    if loss == "cross_entropy":
        return (lambda out, y: F.cross_entropy(out, y.long())), loss
    if loss == "bce_with_logits":
        return (lambda out, y: F.binary_cross_entropy_with_logits(out, _like(y, out))), loss
    if loss == "mse":
        return (lambda out, y: F.mse_loss(out, _mse_target(y, out))), loss
    if "." not in str(loss):
        raise AccordError(
            f"unknown loss {loss!r}; expected {', '.join(BUILTIN_LOSSES)} or a dotted path",
            "set task_runner.settings.loss in the plan",
        )
    fn = import_code("task_runner.settings.loss", str(loss))
    if not callable(fn):
        raise AccordError(
            f"loss {loss!r} is not callable", "point task_runner.settings.loss at a function"
        )
    return fn, "custom"


def _like(y: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    target = y.to(out.dtype)
    return target.reshape(out.shape) if target.numel() == out.numel() else target


def _mse_target(y: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    if not y.is_floating_point() and y.dim() == 1 and out.dim() == 2 and out.shape[1] > 1:
        return F.one_hot(y.long(), out.shape[1]).to(out.dtype)
    return _like(y, out)


def count_correct(out: torch.Tensor, y: torch.Tensor, kind: str) -> int | None:
    """Correct predictions in a batch, or None where accuracy does not apply (mse)."""
    if kind == "mse" or y.is_floating_point():
        return None
    single = out.dim() == 1 or (out.dim() == 2 and out.shape[1] == 1)
    if single or (kind == "bce_with_logits" and out.numel() == y.numel()):
        predicted = (out.reshape(-1) > 0).long()
        return int((predicted == y.reshape(-1).long()).sum())
    if out.dim() == 2 and y.dim() == 1:
        return int((out.argmax(dim=1) == y.long()).sum())
    return None


class ProximalTerm:
    """FedProx's ``mu / 2 * ||w - w_global||^2`` over the trainable parameters, ``w_global``
    being their values when the term is made (the task's start: the global model).

    ``add_gradient`` adds the term's gradient, ``mu * (w - w_global)``, to each parameter's
    gradient after ``backward()``: the step of the loss with the term added, without building
    the term into the autograd graph at every step."""

    def __init__(self, parameters: Iterator[torch.nn.Parameter], mu: float) -> None:
        self.mu = float(mu)
        self._pairs = [(p, p.detach().clone()) for p in parameters if p.requires_grad]

    def add_gradient(self) -> None:
        with torch.no_grad():
            for param, anchor in self._pairs:
                if param.grad is None:  # no data gradient this step (an unused layer): the pull alone
                    param.grad = self.mu * (param - anchor)
                else:
                    param.grad.add_(param - anchor, alpha=self.mu)

    def value(self) -> float:
        """The term at the parameters' current values."""
        with torch.no_grad():
            return self.mu / 2 * sum(float(torch.sum((p - anchor) ** 2)) for p, anchor in self._pairs)


#: state entries whose fresh value is not what one zero-gradient step leaves behind.
_FRESH_VALUES: dict[str, float] = {"step": 0.0, "mu_product": 1.0}


def materialize_optimizer(optimizer: torch.optim.Optimizer) -> None:
    """Create the optimizer's per-parameter state without changing weights or trajectory.

    Parameters without state get a zero gradient (the others none, so their state is left
    alone) and the optimizer takes one step with weight_decay set to 0; the weights are
    then restored bit for bit and ``step`` counters reset. For Adam, AdamW, NAdam, SGD,
    RMSprop, Adagrad and Rprop the resulting state equals a fresh optimizer's. (The lr is
    kept, not zeroed, because some optimizers, e.g. Rprop, seed their state from it.)
    """
    params = [p for group in optimizer.param_groups for p in group["params"]]
    fresh = [p for p in params if not len(optimizer.state.get(p, {}))]
    if not fresh:
        return
    saved_data = [p.detach().clone() for p in params]
    saved_grads = [p.grad for p in params]
    saved_decay = [group.get("weight_decay") for group in optimizer.param_groups]
    fresh_ids = {id(p) for p in fresh}
    for group in optimizer.param_groups:
        if "weight_decay" in group:
            group["weight_decay"] = 0.0
    for param in params:
        param.grad = torch.zeros_like(param) if id(param) in fresh_ids else None
    try:
        optimizer.step()
    finally:
        with torch.no_grad():
            for param, data, grad in zip(params, saved_data, saved_grads):
                param.copy_(data)
                param.grad = grad
        for group, decay in zip(optimizer.param_groups, saved_decay):
            if decay is not None:
                group["weight_decay"] = decay
    for param in fresh:
        _reset_counters(optimizer.state[param])


def _reset_counters(state: dict[str, Any]) -> None:
    for key, value in _FRESH_VALUES.items():
        if key not in state:
            continue
        current = state[key]
        if isinstance(current, torch.Tensor):
            current.fill_(value)
        else:
            state[key] = type(current)(value)


def optimizer_state_arrays(
    optimizer: torch.optim.Optimizer, names: dict[int, str]
) -> dict[str, np.ndarray]:
    """Per-parameter optimizer state as ``__opt__.<param>.<key>`` NumPy arrays."""
    arrays: dict[str, np.ndarray] = {}
    for group in optimizer.param_groups:
        for param in group["params"]:
            for key, value in optimizer.state.get(param, {}).items():
                array = _to_numpy(value)
                if array is not None:
                    arrays[f"{OPTIMIZER_PREFIX}{names[id(param)]}.{key}"] = array
    return arrays


def tensor_to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A NumPy copy of a tensor, on the CPU (bfloat16 widened to float32)."""
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.float()
    return tensor.numpy().copy()


def _to_numpy(value: Any) -> np.ndarray | None:
    if isinstance(value, torch.Tensor):
        return tensor_to_numpy(value)
    if isinstance(value, bool):
        return np.asarray(value)
    if isinstance(value, int):
        return np.asarray(value, dtype=np.int64)
    if isinstance(value, float):
        return np.asarray(value, dtype=np.float32)
    return None  # e.g. a None momentum buffer: nothing to ship


def to_tensor(array: np.ndarray) -> torch.Tensor:
    """A CPU tensor from a NumPy array (copied when read-only or not in native byte order)."""
    array = np.asarray(array)
    if not array.flags.writeable or not array.dtype.isnative:
        array = np.array(array, dtype=array.dtype.newbyteorder("="))
    return torch.from_numpy(array)


def load_optimizer_state(
    optimizer: torch.optim.Optimizer,
    params: dict[str, torch.nn.Parameter],
    state: dict[str, np.ndarray],
) -> None:
    """Copy ``__opt__.<param>.<key>`` arrays into the optimizer's state for those parameters."""
    cut = len(OPTIMIZER_PREFIX)
    entries = {k[cut:]: v for k, v in state.items() if k.startswith(OPTIMIZER_PREFIX)}
    if not entries:
        return
    materialize_optimizer(optimizer)
    used: set[str] = set()
    for name, param in params.items():
        slot = optimizer.state[param]
        for entry, value in entries.items():
            key = entry[len(name) + 1 :]
            if not entry.startswith(name + ".") or not key or "." in key:
                continue
            used.add(entry)
            slot[key] = _restore(slot.get(key), value, param, f"{OPTIMIZER_PREFIX}{entry}")
    unknown = sorted(set(entries) - used)
    if unknown:
        raise AccordError(
            f"optimizer state names parameters this model lacks: {unknown[:5]}",
            "use a model state saved from the same model and optimizer",
        )


def _restore(current: Any, value: np.ndarray, param: torch.Tensor, name: str) -> Any:
    if isinstance(current, torch.Tensor):
        if tuple(current.shape) != tuple(np.shape(value)):
            raise AccordError(
                f"optimizer tensor {name!r} has shape {np.shape(value)}, "
                f"expected {tuple(current.shape)}",
                "use a model state saved from the same model and optimizer",
            )
        return to_tensor(value).to(dtype=current.dtype, device=current.device).clone()
    if isinstance(current, (bool, int, float)):
        return type(current)(np.asarray(value).item())
    device = torch.device("cpu") if np.ndim(value) == 0 else param.device
    return to_tensor(value).to(device).clone()
