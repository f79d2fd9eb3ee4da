"""OpenFL's ``PyTorchTaskRunner``: an nn.Module whose ``model``, ``optimizer`` and ``loss_fn`` the
workspace sets, trained by its ``train_`` and evaluated by its ``validate_``.

Weights cross as the runner's own ``state_dict`` (``model.conv1.weight``: every submodule
the runner holds), optimizer state under ``__opt__.`` (runners/torch_weights.py). As an
nn.Module, ``train(True/False)`` and ``eval()`` still set the training mode; ``train(data,
...)`` with a data loader is Accord's training task.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from accord.compat.openfl.metric import Metric, metric_values
from accord.compat.openfl.runner import TaskRunner, check_epochs
from accord.errors import AccordError
from accord.runners._torch_parts import resolve_device
from accord.runners.base import TaskOutput
from accord.runners.torch_weights import TorchWeights
from accord.tensors.state import ModelState

#: the seed every participant builds the runner's model with
MODEL_SEED = 0


class _RunnerWeights(TorchWeights):
    """TorchWeights over the runner module itself and its current optimizer."""

    def __init__(self, runner: PyTorchTaskRunner, need_optimizer: bool) -> None:
        if need_optimizer and runner.optimizer is None:
            raise AccordError(
                f"{type(runner).__name__} has no optimizer, and opt_treatment CONTINUE_GLOBAL ships its state",
                "set self.optimizer in the runner's __init__",
            )
        self.model = runner
        self.optimizer = runner.optimizer


class PyTorchTaskRunner(nn.Module, TaskRunner):
    """OpenFL's torch runner: ``device``, ``loss_fn`` and ``optimizer`` as OpenFL takes them."""

    def __init__(self, device: str | torch.device | None = None, loss_fn: Any = None, optimizer: Any = None, **kwargs: Any) -> None:
        nn.Module.__init__(self)
        TaskRunner.__init__(self, **kwargs)
        self.device = resolve_device("auto" if device is None else str(device))
        self.optimizer = optimizer
        self.loss_fn = loss_fn

    @classmethod
    @contextmanager
    def _model_seed(cls) -> Iterator[None]:
        torch.manual_seed(MODEL_SEED)
        yield

    def forward(self, x: Any) -> Any:
        """The workspace's ``self.model`` applied to ``x`` (a runner may define its own)."""
        model: Any = self.model
        return model(x)

    # -- OpenFL's default epoch functions --------------------------------------------------

    def train_(self, train_dataloader: Iterator[Any], **kwargs: Any) -> Metric:
        """One epoch; the mean of ``loss_fn(output, target)``, named after ``loss_fn``."""
        losses = []
        for data, target in train_dataloader:
            data, target = torch.as_tensor(data).to(self.device), torch.as_tensor(target).to(self.device)
            self.optimizer.zero_grad()
            loss = self.loss_fn(self(data), target)
            loss.backward()
            self.optimizer.step()
            losses.append(float(loss.detach().cpu()))
        return Metric(name=getattr(self.loss_fn, "__name__", "loss"), value=np.array(np.mean(losses)))

    def validate_(self, validation_dataloader: Iterator[Any], **kwargs: Any) -> Metric:
        """Accuracy of the arg-max class."""
        correct, total = 0, 0
        with torch.no_grad():
            for data, target in validation_dataloader:
                target = torch.as_tensor(target).to(self.device, dtype=torch.int64)
                pred = self(torch.as_tensor(data).to(self.device)).argmax(dim=1)
                correct += int(pred.eq(target).sum())
                total += int(target.shape[0])
        return Metric(name="accuracy", value=np.array(correct / total if total else 0.0))

    # -- Accord's TaskRunner protocol --------------------------------------------------------

    def train(self, data: Any = True, epochs: int = 1, **kwargs: Any) -> Any:  # type: ignore[override]
        """With a data loader: ``epochs`` calls of ``train_`` over its train loader (the last
        epoch's metrics). With a bool (nn.Module's meaning): set the training mode."""
        if isinstance(data, bool):
            return nn.Module.train(self, data)
        self._use(data)
        nn.Module.train(self, True)
        self.to(self.device)
        metric: Any = None
        for _ in range(check_epochs(epochs)):
            metric = self.train_(self._loader().get_train_loader())
        return self._train_output(metric_values(metric, f"{type(self).__name__}.train_"))

    def validate(self, data: Any, **kwargs: Any) -> TaskOutput:
        """``validate_`` over the loader's valid loader, in eval mode."""
        self._use(data)
        self.eval()
        self.to(self.device)
        metric = self.validate_(self._loader().get_valid_loader())
        return self._valid_output(metric_values(metric, f"{type(self).__name__}.validate_"))

    def get_weights(self, with_optimizer: bool = False) -> ModelState:
        """The runner's state_dict (and optimizer state under ``__opt__.`` if asked)."""
        return _RunnerWeights(self, with_optimizer).get_weights(with_optimizer)

    def set_weights(self, state: ModelState, with_optimizer: bool = False) -> None:
        """Load the runner's state_dict by name (and optimizer state if asked)."""
        _RunnerWeights(self, with_optimizer).set_weights(state, with_optimizer)

    def reset_optimizer(self) -> None:
        """Clear the optimizer's state (moments, step counts); its settings stay.

        OpenFL 1.9's ``reset_opt_vars`` did nothing for torch; RESET here means a fresh state."""
        if self.optimizer is not None:
            self.optimizer.state.clear()

    def reset_opt_vars(self) -> None:
        """OpenFL's name for reset_optimizer."""
        self.reset_optimizer()

    def get_optimizer(self) -> Any:
        """The runner's optimizer."""
        return self.optimizer

    # -- native files -----------------------------------------------------------------------

    def save_native(self, filepath: str | Path, model_state_dict_key: str = "model_state_dict",
                    optimizer_state_dict_key: str = "optimizer_state_dict", **kwargs: Any) -> str:
        """torch.save of the model and optimizer state_dicts (``.pt`` added to a bare name)."""
        path = str(filepath)
        if "." not in path.split(os.sep)[-1]:
            path += ".pt"
        state = {model_state_dict_key: self.state_dict()}
        if self.optimizer is not None:
            state[optimizer_state_dict_key] = self.optimizer.state_dict()
        torch.save(state, path)
        return path

    def load_native(self, filepath: str | Path, model_state_dict_key: str = "model_state_dict",
                    optimizer_state_dict_key: str = "optimizer_state_dict", **kwargs: Any) -> None:
        """Load a file save_native wrote (or a bare state_dict), tensors only (weights_only)."""
        saved = torch.load(filepath, weights_only=True)
        if model_state_dict_key in saved:
            self.load_state_dict(saved[model_state_dict_key])
            if optimizer_state_dict_key in saved and self.optimizer is not None:
                self.optimizer.load_state_dict(saved[optimizer_state_dict_key])
        else:
            self.load_state_dict(saved)
