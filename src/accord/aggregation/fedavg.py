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
    change_of,
    flat,
)
from accord.runners.base import OPTIMIZER_PREFIX
from accord.tensors.state import ModelState, StateView


class FedAvg:
    """Sample-weighted mean of the collaborators' models (or of their deltas added to the global model).

    Counts are capped and changes bounded as ``bounds`` says (none by default; the runtime
    passes the plan's ``update_bounds``); the mean accumulates in
    float64, and a result that would not be finite in the model's dtype drops the updates
    that make it so. Deltas apply to floating-point tensors; other tensors (counters, masks)
    always travel as values and take a median (``weighted_mean``). The updates' arrays are
    never modified.
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
        """The new global model; the input model unchanged if no update is left to average.

        The updates are forgotten only once the model is computed: if reading them fails
        (an OSError on a saved file), the exception propagates and the round can be closed again.
        """
        weighted, events = bound_updates(self._updates, self.bounds)
        if 0 < len(weighted) < ROBUST_VOTERS and any(_robust(name, t) for name, t in self._global.items()):
            how = "the global's" if len(weighted) == 1 else "the coordinate-wise median of the global's and the 2 updates'"
            detail = f"only {len(weighted)} of the {ROBUST_VOTERS} updates needed to judge them: optimizer state and non-float tensors are {how}"
            events += [BoundEvent(w.update.collaborator, "held", len(weighted), ROBUST_VOTERS, detail) for w in weighted]
        model = dict(self._global)
        while weighted:
            mean, offending = weighted_mean(self._global, weighted)
            if offending is None:
                model = mean
                break
            dropped = _non_finite_culprits(self._global, weighted, offending)
            events += [BoundEvent(w.update.collaborator, "dropped_non_finite", w.update.norm, 0.0, f"tensor {offending!r}") for w in dropped]
            weighted = [w for w in weighted if w not in dropped]
        self.events, self._updates = events, []
        return model


#: updates needed for the robust tensors to be judged among the updates alone; with fewer, the
#: global's value is one of the voters (with 2) or the value kept (with 1).
ROBUST_VOTERS = 3


def _robust(name: str, reference: np.ndarray) -> bool:
    """Whether tensor ``name`` is averaged robustly: optimizer state and every non-float tensor."""
    return reference.dtype.kind != "f" or name.startswith(OPTIMIZER_PREFIX)


def _whole(tensors: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    """Tensor ``name`` of ``tensors``, flat, fetched once for the whole tensor (mapped from a saved file, not read)."""
    return flat(tensors.mapped(name) if isinstance(tensors, StateView) else tensors[name])


def weighted_mean(global_model: Mapping[str, np.ndarray], weighted: Sequence[Weighted]) -> tuple[ModelState, str | None]:
    """The new model, or the name of the first tensor that is not finite in its dtype.

    Model tensors: the weighted mean of the bounded changes added to the global model.
    Optimizer state (``__opt__.*``): the same mean, each change first clamped, coordinate by
    coordinate, between the second smallest and the second largest (so one site's value never
    leaves the others' range: within the norm bounds, a plain mean can be pushed to second
    moments near zero beside nonzero first moments, and every site's Adam step would then
    explode). Non-float tensors (counters, masks, position ids): the coordinate-wise lower
    median of the values, unweighted (a count buys no vote; the result is a value some site
    sent). With 2 updates the global's value votes too (its change is zero), so the result is
    the median of three; with 1 update these tensors keep the global's value.
    """
    total = sum(w.weight for w in weighted)
    factors = np.array([w.weight / total for w in weighted])
    extra = 1 if len(weighted) < ROBUST_VOTERS else 0
    model: ModelState = {}
    for name, reference in global_model.items():
        ref = flat(reference)
        robust = _robust(name, reference)
        if robust and len(weighted) == 1:
            model[name] = np.array(reference)
            continue
        if not robust:
            out = np.empty(ref.size, reference.dtype)
            for part in blocks(ref.size):
                acc = np.zeros(part.stop - part.start, np.float64)
                for w in weighted:
                    acc += (w.weight * w.scale(name) / total) * change_block(w.update, name, part, ref)
                if not _store(out, part, acc + ref[part]):
                    return model, name
            model[name] = out.reshape(reference.shape)
            continue
        voters = len(weighted) + extra
        arrays = [_whole(w.update.tensors, name) for w in weighted]
        out = np.empty(ref.size, reference.dtype)
        for part in blocks(ref.size, max(BLOCK // voters, 1024)):
            if reference.dtype.kind != "f":
                values = np.stack([a[part] for a in arrays] + [ref[part]] * extra)
                values.sort(axis=0)  # faster than np.partition across this axis
                out[part] = values[(voters - 1) // 2]
                continue
            changes = np.stack(
                [w.scale(name) * change_of(a[part], w.update.is_delta, ref[part]) for w, a in zip(weighted, arrays)]
                + [np.zeros(part.stop - part.start)] * extra
            )
            ranked = np.sort(changes, axis=0)  # faster than np.partition across this axis
            np.clip(changes, ranked[1], ranked[-2], out=changes)
            if not _store(out, part, factors @ changes[: len(weighted)] + ref[part]):
                return model, name
        model[name] = out.reshape(reference.shape)
    return model, None


def _store(out: np.ndarray, part: slice, values: np.ndarray) -> bool:
    """Write float64 ``values`` into ``out[part]`` in its dtype; False if they are not finite there."""
    with np.errstate(over="ignore"):
        out[part] = values
    return bool(np.isfinite(out[part]).all())


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
