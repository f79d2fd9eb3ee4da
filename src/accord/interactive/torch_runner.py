"""TorchInteractiveRunner: the plan's task runner for a torch model of an interactive experiment."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from accord.errors import AccordError
from accord.interactive.runner import UserTasks, resolve
from accord.runners._torch_parts import resolve_device
from accord.runners.torch_weights import TorchWeights, build_torch_model


class TorchInteractiveRunner(TorchWeights, UserTasks):
    """``model()`` builds the nn.Module (after seeding with ``seed``), ``optimizer(params)`` its optimizer.

    Both may be dotted paths (as in the plan) or callables. The task functions get
    ``str(device)`` (``cpu``, ``cuda:0``; CUDA falls back to the CPU with one warning).
    """

    def __init__(
        self,
        model: Any,
        optimizer: Any,
        functions: Mapping[str, Mapping[str, Any]],
        device: str = "cpu",
        seed: int = 0,
        num_threads: int | None = None,
    ) -> None:
        if num_threads is not None:
            torch.set_num_threads(int(num_threads))
        self.device = resolve_device(device)
        self._optimizer_builder = resolve(optimizer, "task_runner.settings.optimizer")
        self.model = build_torch_model(model, {}, seed, self.device)
        self.optimizer = self._new_optimizer()
        self.use_functions(functions, str(self.device))

    def _new_optimizer(self) -> torch.optim.Optimizer:
        """A fresh optimizer from the data scientist's builder."""
        optimizer = self._optimizer_builder(self.model.parameters())
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise AccordError(
                f"the optimizer builder returned a {type(optimizer).__name__}, not a torch.optim.Optimizer",
                "return e.g. torch.optim.Adam(params, lr=1e-3) from the optimizer builder",
            )
        return optimizer
