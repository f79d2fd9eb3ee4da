"""FedAvg with bounded updates, in float64, over updates kept as (lazy) mappings until the round closes.

The bounds (aggregation/bounds.py) need the round's median counts and norms, known only at the
close, so ``add`` keeps each update's tensors as given (the runtime hands a memory-mapped
view of the file it saved, so memory stays O(model), not O(collaborators x model)) and the
norms of its changes; ``result`` averages one block of one tensor at a time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from accord.aggregation.bounds import (
    BLOCK,
    UNBOUNDED,
    BoundEvent,
    Update,
    UpdateBounds,
    Weighted,
    blocks,
    bound_updates,
    change_block,
    change_norms,
    flat,
)
from accord.runners.base import OPTIMIZER_PREFIX
from accord.tensors.state import ModelState


class FedAvg:
    """Sample-weighted mean of the collaborators' models (or of their deltas added to the global model).

    Counts are capped and changes bounded as ``bounds`` says (none by default; the runtime
    passes the plan's ``update_bounds``); the mean accumulates in
    float64, and a result that would not be finite in the model's dtype drops the updates
    that make it so. Deltas apply to floating-point tensors; other tensors (counters, masks)
    always travel as values. The updates' arrays are never modified.
    """

    def __init__(self, bounds: UpdateBounds | None = None) -> None:
        self.bounds = bounds or UNBOUNDED
        #: what the bounds did in the last ``result``
        self.events: list[BoundEvent] = []
        self._global: Mapping[str, np.ndarray] = {}
        self._updates: list[Update] = []

    def start_round(self, global_model: Mapping[str, np.ndarray]) -> None:
        """Forget the updates of a round whose input model is ``global_model``."""
        self._global = global_model
        self._updates = []

    def add(
        self,
        update: Mapping[str, np.ndarray],
        weight: float,
        is_delta: bool = False,
        collaborator: str = "",
        stored: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Take one collaborator's update with ``weight`` (its declared sample count).

        Its norms are measured now, from ``update``; the average reads ``stored`` (the same
        values, e.g. a lazy view of the saved file) or ``update`` itself.
        """
        norms = change_norms(self._global, Update(collaborator, update, weight, is_delta, {}))
        self._updates.append(Update(collaborator, update if stored is None else stored, weight, is_delta, norms))

    def result(self) -> ModelState:
        """The new global model; the input model unchanged if no update is left to average."""
        weighted, self.events = bound_updates(self._updates, self.bounds)
        self._updates = []
        while weighted:
            model, offending = weighted_mean(self._global, weighted)
            if offending is None:
                return model
            dropped = _non_finite_culprits(self._global, weighted, offending)
            self.events += [BoundEvent(w.update.collaborator, "dropped_non_finite", w.update.norm, 0.0, f"tensor {offending!r}") for w in dropped]
            weighted = [w for w in weighted if w not in dropped]
        return dict(self._global)


def weighted_mean(global_model: Mapping[str, np.ndarray], weighted: Sequence[Weighted]) -> tuple[ModelState, str | None]:
    """The new model, or the name of the first tensor that is not finite in its dtype.

    Model tensors: the weighted mean of the bounded changes added to the global model.
    Optimizer state (``__opt__.*``), from 3 updates on: the same mean, each change first
    clamped, coordinate by coordinate, between the second smallest and the second largest
    (so one site's value never leaves the others' range: within the norm bounds, a plain mean
    can be pushed to second moments near zero beside nonzero first moments, and every site's
    Adam step would then explode). Counters and masks: the weighted mean of the values, rounded.
    """
    total = sum(w.weight for w in weighted)
    model: ModelState = {}
    for name, reference in global_model.items():
        ref = flat(reference)
        out = np.empty(ref.size, reference.dtype)
        robust = name.startswith(OPTIMIZER_PREFIX)
        for part in blocks(ref.size, max(BLOCK // len(weighted), 1024) if robust else BLOCK):
            if reference.dtype.kind != "f":
                acc = np.zeros(part.stop - part.start, np.float64)
                for w in weighted:
                    acc += (w.weight / total) * flat(w.update.tensors[name])[part]
                out[part] = np.rint(acc)
                continue
            if robust and len(weighted) >= 3:
                changes = np.stack([w.scale(name) * change_block(w.update, name, part, ref) for w in weighted])
                ranked = np.partition(changes, [1, len(weighted) - 2], axis=0)
                np.clip(changes, ranked[1], ranked[-2], out=changes)
                factors = np.array([w.weight / total for w in weighted])
                acc = factors @ changes
            else:
                acc = np.zeros(part.stop - part.start, np.float64)
                for w in weighted:
                    acc += (w.weight * w.scale(name) / total) * change_block(w.update, name, part, ref)
            acc += ref[part]
            with np.errstate(over="ignore"):
                out[part] = acc
            if not np.isfinite(out[part]).all():
                return model, name
        model[name] = out.reshape(reference.shape)
    return model, None


def _non_finite_culprits(global_model: Mapping[str, np.ndarray], weighted: Sequence[Weighted], name: str) -> list[Weighted]:
    """The updates whose own model (global + bounded change) is not finite in tensor ``name``'s dtype;
    if none is alone, the one that goes furthest (the mean overflowed by rounding)."""
    reference = global_model[name]
    ref = flat(reference)
    largest = np.zeros(len(weighted))
    culprits = []
    for index, w in enumerate(weighted):
        for part in blocks(ref.size):
            own = ref[part] + w.scale(name) * change_block(w.update, name, part, ref)
            with np.errstate(over="ignore"):
                cast = own.astype(reference.dtype)
            largest[index] = max(largest[index], float(np.abs(own).max(initial=0.0)))
            if not np.isfinite(cast).all():
                culprits.append(w)
                break
    return culprits or [weighted[int(np.argmax(largest))]]
