"""The bounded, sample-weighted mean in float64 that FedAvg and its family take at a round's close.

The updates are (lazy) mappings, read one block of one tensor at a time, so temporaries stay
a few MB whatever the model size (strategies/mean.py keeps memory-mapped views of the saved
copies until the close); the mean is written, block by block, into a model that a
``TensorSpace`` makes (in memory, or a file mapped from disk for a model larger than RAM).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from accord.aggregation.bounds import BLOCK, Weighted, block_of, blocks, change_of, flat, source
from accord.runners.base import OPTIMIZER_PREFIX
from accord.tensors.space import MEMORY, TensorSpace
from accord.tensors.state import ModelState, tensor_specs

#: updates needed for the robust tensors to be judged among the updates alone; with fewer, the
#: global's value is one of the voters (with 2) or the value kept (with 1).
ROBUST_VOTERS = 3


def robust_tensor(name: str, reference: np.ndarray) -> bool:
    """Whether tensor ``name`` is averaged robustly: optimizer state and every non-float tensor."""
    return reference.dtype.kind != "f" or name.startswith(OPTIMIZER_PREFIX)


def weighted_mean(
    global_model: Mapping[str, np.ndarray], weighted: Sequence[Weighted], space: TensorSpace = MEMORY
) -> tuple[ModelState, str | None]:
    """The new model (written into a model ``space`` makes), or the name of the first tensor
    that is not finite in its dtype.

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
    new = space.new_model(tensor_specs(global_model))
    buffer = np.empty(BLOCK, np.float64)
    for name, reference in global_model.items():
        ref, out = flat(reference), flat(new.tensor(name))
        robust = robust_tensor(name, reference)
        if robust and len(weighted) == 1:
            for part in blocks(ref.size):
                out[part] = ref[part]
            continue
        if not robust:
            for part in blocks(ref.size):
                acc = np.zeros(part.stop - part.start, np.float64)
                for w in weighted:
                    values, factor = block_of(w.update.tensors, name, part)
                    change = change_of(values, w.update.is_delta, ref[part], buffer[: part.stop - part.start])
                    change *= w.weight * w.scale(name) * factor / total
                    acc += change
                acc += ref[part]  # in place: the float64 temporaries stay two blocks
                if not _store(out, part, acc):
                    return new.state(), name
            continue
        voters = len(weighted) + extra
        arrays = [source(w.update.tensors, name)[0] for w in weighted]  # factor 1: these are never clipped
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
                return new.state(), name
    return new.state(), None


def _store(out: np.ndarray, part: slice, values: np.ndarray) -> bool:
    """Write float64 ``values`` into ``out[part]`` in its dtype; False if they are not finite there."""
    with np.errstate(over="ignore"):
        out[part] = values
    return bool(np.isfinite(out[part]).all())


def non_finite_culprits(global_model: Mapping[str, np.ndarray], weighted: Sequence[Weighted], name: str) -> list[Weighted]:
    """The updates whose own model (global + bounded change) is not finite in tensor ``name``'s dtype;
    if none is alone, the one that goes furthest (the mean overflowed by rounding)."""
    reference = global_model[name]
    ref = flat(reference)
    largest = np.zeros(len(weighted))
    culprits = []
    for index, w in enumerate(weighted):
        for part in blocks(ref.size):
            values, factor = block_of(w.update.tensors, name, part)
            own = ref[part] + (w.scale(name) * factor) * change_of(values, w.update.is_delta, ref[part])
            with np.errstate(over="ignore"):
                cast = own.astype(reference.dtype)
            largest[index] = max(largest[index], float(np.abs(own).max(initial=0.0)))
            if not np.isfinite(cast).all():
                culprits.append(w)
                break
    return culprits or [weighted[int(np.argmax(largest))]]
