"""TorchWeights: the weights half of the TaskRunner protocol for a torch model and optimizer.

A runner mixes it in, holds ``model`` and ``optimizer`` and says how to build a fresh
optimizer (``_new_optimizer``); tensors then cross by name, with optimizer state under
``__opt__.`` for CONTINUE_GLOBAL.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from accord.errors import AccordError
from accord.runners._shared import build_model
from accord.runners._torch_parts import (
    load_optimizer_state,
    materialize_optimizer,
    optimizer_state_arrays,
    tensor_to_numpy,
    to_tensor,
)
from accord.runners.base import OPTIMIZER_PREFIX
from accord.tensors.state import ModelState, name_mismatch

_SAME_MODEL_FIX = "use a model state saved from the same model (check task_runner.settings.model)"


def build_torch_model(model: Any, model_kwargs: dict[str, Any], seed: int, device: torch.device) -> nn.Module:
    """The torch model (instance, builder or dotted path) on ``device``, built after seeding with ``seed``.

    Every participant builds identical initial weights.
    """
    torch.manual_seed(int(seed))
    return build_model(model, model_kwargs, nn.Module, "an nn.Module").to(device)


class TorchWeights:
    """get_weights / set_weights / reset_optimizer over ``self.model`` and ``self.optimizer``."""

    model: nn.Module
    optimizer: torch.optim.Optimizer

    def _new_optimizer(self) -> torch.optim.Optimizer:
        """A fresh optimizer over ``self.model``'s parameters."""
        raise NotImplementedError

    def get_weights(self, with_optimizer: bool = False) -> ModelState:
        """The state_dict as NumPy copies, in its order; optimizer state under ``__opt__.``.

        Optimizer state is materialized first if it does not exist yet (see
        ``materialize_optimizer``), so the set of names is the same before and after training.
        """
        state: ModelState = {name: tensor_to_numpy(t) for name, t in self.model.state_dict().items()}
        if with_optimizer:
            materialize_optimizer(self.optimizer)
            names = {id(p): name for name, p in self.model.named_parameters()}
            state.update(optimizer_state_arrays(self.optimizer, names))
        return state

    def set_weights(self, state: ModelState, with_optimizer: bool = False) -> None:
        """Load tensors by name (strict on the model's names), keeping dtype and device."""
        model_part = {k: v for k, v in state.items() if not k.startswith(OPTIMIZER_PREFIX)}
        expected = self.model.state_dict()
        mismatch = name_mismatch(expected, model_part)
        if mismatch:
            raise AccordError("model state does not match the model" + mismatch, _SAME_MODEL_FIX)
        try:
            tensors = {k: to_tensor(v) for k, v in model_part.items()}
            self.model.load_state_dict(tensors, strict=True)
        except RuntimeError as exc:
            raise AccordError(f"model state does not fit the model: {exc}".splitlines()[0], _SAME_MODEL_FIX) from exc
        if with_optimizer:
            load_optimizer_state(self.optimizer, dict(self.model.named_parameters()), state)

    def reset_optimizer(self) -> None:
        """Replace the optimizer by a fresh one (opt_treatment RESET)."""
        self.optimizer = self._new_optimizer()
