"""FedAvg, accumulated as results arrive: memory stays O(model size), not O(collaborators x model)."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from accord.tensors.state import ModelState


class FedAvg:
    """Sample-weighted mean of the collaborators' models (or of their deltas added to the global model).

    ``add`` folds one update into a running weighted sum, one tensor at a time; it never
    modifies the update's arrays. Deltas apply to floating-point tensors; other tensors
    (counters, masks) always travel as values.
    """

    def __init__(self) -> None:
        self._global: Mapping[str, np.ndarray] = {}
        self._sum: dict[str, np.ndarray] = {}
        self._weight = 0.0

    def start_round(self, global_model: Mapping[str, np.ndarray]) -> None:
        """Reset the running sum for a round whose input model is ``global_model``."""
        self._global = global_model
        self._sum = {}
        self._weight = 0.0

    def add(self, update: ModelState, weight: float, is_delta: bool = False) -> None:
        """Fold in one collaborator's update with ``weight`` (its sample count)."""
        for name, tensor in update.items():
            dtype = np.result_type(tensor.dtype, np.float32)
            current = self._sum.get(name)
            if current is None:
                current = self._sum[name] = np.asarray(np.multiply(tensor, weight, dtype=dtype))
            else:
                current += np.multiply(tensor, weight, dtype=dtype)
            if is_delta and tensor.dtype.kind == "f":
                current += np.multiply(self._global[name], weight, dtype=dtype)
        self._weight += weight

    def result(self) -> ModelState:
        """The new global model; the input model unchanged if nothing was added."""
        if self._weight == 0:
            return dict(self._global)
        model: ModelState = {}
        for name, reference in self._global.items():
            total = self._sum.get(name)
            if total is None:
                model[name] = reference
                continue
            total /= self._weight
            if reference.dtype.kind in "iub":
                np.rint(total, out=total)
            model[name] = np.asarray(total.astype(reference.dtype, copy=False))
        self._sum = {}
        return model
