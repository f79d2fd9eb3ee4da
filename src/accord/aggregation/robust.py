"""The maths of the robust strategies (strategies/robust.py), over (lazy) mappings of tensors.

A robust rule judges each update against the others, so it needs them all at once: here they
are read one block of one tensor at a time, as an (updates x coordinates) float64 array of
their bounded changes (update - global for weights, the delta itself for deltas), so
temporaries stay a few MB whatever the model size and the number of updates. The updates'
tensors stay memory-mapped views of their saved copies until read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import numpy as np

from accord.aggregation.bounds import BLOCK, Weighted, blocks, change_of, flat, normed, source
from accord.tensors.space import MEMORY, TensorSpace
from accord.tensors.state import ModelState, tensor_specs

#: a coordinate-wise rule: the (updates x coordinates) changes of one block to the block's change
Rule = Callable[[np.ndarray], np.ndarray]


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """BLAS on one thread for the products of blocks (the Gram matrix, the combinations; the
    aggregator serves under it: aggregator/serve.py): its threads spin-wait for each other, so on
    a busy machine each small product waits for the scheduler (measured: Krum's close at 64 sites
    of 12 MB, 53 s on two busy cores, 3.8 s on one BLAS thread)."""
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]  # scikit-learn's dependency, so Accord's

    with threadpool_limits(limits=1, user_api="blas"):
        yield


def block_length(count: int) -> int:
    """Coordinates read at a time from each of ``count`` updates: BLOCK float64 values in all."""
    return max(BLOCK // max(count, 1), 1024)


#: from this many updates on, sorting across them goes by a contiguous transposed copy
TRANSPOSED_SORT = 16


def across(values: np.ndarray, sort: Callable[..., np.ndarray] = np.sort) -> np.ndarray:
    """``sort(values, axis=0)``: across the updates, coordinate by coordinate (np.sort or
    np.argsort; their default kind: a stable sort is 10x slower). Both beat np.median's and
    np.partition's; with many updates, sorting the rows of a contiguous transposed copy is 3x
    faster than sorting down the columns."""
    if len(values) < TRANSPOSED_SORT:
        return sort(values, axis=0)
    return sort(np.ascontiguousarray(values.T), axis=1).T


def middle(ordered: np.ndarray) -> np.ndarray:
    """The median of values already sorted across the updates (even count: the mean of the two middle ones)."""
    count = len(ordered)
    return ordered[count // 2] if count % 2 else 0.5 * (ordered[count // 2 - 1] + ordered[count // 2])


def median_rule(changes: np.ndarray) -> np.ndarray:
    """The coordinate-wise median."""
    return middle(across(changes))


def combination(coefficients: np.ndarray) -> Rule:
    """The rule that takes the updates' changes combined with ``coefficients`` (one per update)."""
    return lambda changes: coefficients @ changes


Source = tuple[np.ndarray, float, bool]


def _sources(weighted: Sequence[Weighted], name: str) -> list[Source]:
    """Each update's tensor ``name`` (flat, mapped), the factor of its change, whether it is a delta."""
    found = []
    for w in weighted:
        values, factor = source(w.update.tensors, name)
        found.append((values, factor * w.scale(name), w.update.is_delta))
    return found


def _changes(sources: Sequence[Source], part: slice, reference: np.ndarray) -> np.ndarray:
    """The (updates x coordinates) float64 bounded changes over ``part``."""
    return np.stack([factor * change_of(values[part], is_delta, reference[part]) for values, factor, is_delta in sources])


def gram_matrix(global_model: Mapping[str, np.ndarray], weighted: Sequence[Weighted]) -> np.ndarray:
    """``G[i, j]``: the dot product of updates i's and j's bounded changes over the normed
    tensors (the model's floating-point ones, not the optimizer state), in float64."""
    count = len(weighted)
    gram = np.zeros((count, count))
    for name, reference in global_model.items():
        if not normed(name, reference):
            continue
        ref, sources = flat(reference), _sources(weighted, name)
        for part in blocks(ref.size, block_length(count)):
            changes = _changes(sources, part, ref)
            with np.errstate(over="ignore", invalid="ignore"):  # an overflow is an update infinitely far
                gram += changes @ changes.T
    return gram


def squared_distances(gram: np.ndarray) -> np.ndarray:
    """The updates' pairwise squared L2 distances from their Gram matrix (never below zero). An
    update whose squared norm overflowed float64 (finite values near its limit) is infinitely
    far from every other, never NaN: a NaN would win an ``argmin``."""
    diagonal = np.diag(gram)
    with np.errstate(over="ignore", invalid="ignore"):
        distances = np.maximum(diagonal[:, None] + diagonal[None, :] - 2.0 * gram, 0.0)
    far = ~finite_points(gram)
    distances[far, :] = np.inf
    distances[:, far] = np.inf
    distances[np.isnan(distances)] = np.inf
    np.fill_diagonal(distances, 0.0)
    return distances


def finite_points(gram: np.ndarray) -> np.ndarray:
    """Which updates' squared norms are finite (then, by Cauchy-Schwarz, their dot products too)."""
    return np.isfinite(np.diag(gram))


def robust_model(
    global_model: Mapping[str, np.ndarray],
    weighted: Sequence[Weighted],
    model_rule: Rule,
    optimizer_rule: Rule,
    space: TensorSpace = MEMORY,
) -> tuple[ModelState, str | None]:
    """The new model (written into a model ``space`` makes), or the name of the first tensor
    that is not finite in its dtype.

    The model's floating-point tensors: the global's plus ``model_rule`` of the bounded
    changes; the optimizer state (``__opt__.*``): the global's plus ``optimizer_rule`` of its
    changes; every other tensor (counters, masks): the coordinate-wise lower median of the
    values, unweighted (a result some site sent).
    """
    count = len(weighted)
    new = space.new_model(tensor_specs(global_model))
    for name, reference in global_model.items():
        ref, sources = flat(reference), _sources(weighted, name)
        rule = model_rule if normed(name, reference) else optimizer_rule
        out = flat(new.tensor(name))
        for part in blocks(ref.size, block_length(count)):
            if reference.dtype.kind != "f":
                values = across(np.stack([values[part] for values, _, _ in sources]))
                out[part] = values[(count - 1) // 2]
                continue
            with np.errstate(over="ignore"):
                out[part] = rule(_changes(sources, part, ref)) + ref[part]
            if not np.isfinite(out[part]).all():
                return new.state(), name
    return new.state(), None
