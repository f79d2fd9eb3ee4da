"""FedAvg, accumulated as results arrive: memory stays O(model size), not O(collaborators x model)."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from accord.tensors.state import ModelState


class FedAvg:
    """Sample-weighted mean of the collaborators' models (or of their deltas added to the global model).

    ``add`` folds one update into a running weighted sum, one tensor at a time, and may
    scale the update's arrays in place (the caller hands over arrays it owns).
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

    @property
    def total_weight(self) -> float:
        return self._weight

    def add(self, update: ModelState, weight: float, is_delta: bool = False) -> None:
        """Fold in one collaborator's update with ``weight`` (its sample count)."""
        for name, tensor in update.items():
            dtype = np.result_type(tensor.dtype, np.float32)
            scaled = tensor if tensor.dtype == dtype and tensor.flags.writeable else tensor.astype(dtype)
            np.multiply(scaled, weight, out=scaled)
            if is_delta:
                scaled += self._global[name].astype(dtype, copy=False) * weight
            current = self._sum.get(name)
            if current is None:
                self._sum[name] = scaled
            else:
                current += scaled
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
                total = np.rint(total)
            model[name] = total.astype(reference.dtype, copy=False)
        self._sum = {}
        return model
