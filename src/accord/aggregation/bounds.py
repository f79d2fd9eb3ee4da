"""Bounds on what one update can do to the average: its sample count and the norm of its change.

A site with a valid certificate may lie. Its declared sample count is capped at a multiple of
the round's median count. Its change (update - global for weights, the delta itself for
deltas; the model's floating-point tensors, in float64) is bounded tensor by tensor, by a
multiple of the round's median norm of that tensor's change, so a budget earned on one tensor
cannot be spent on another; and the whole change's norm by an absolute bound, if the plan
sets one. Optimizer state that travels with the model (``__opt__.*``) is not bounded by
norm (its honest changes differ by more than any useful multiple); fedavg.py clamps it to
the other sites' range instead. An update
past a bound is clipped to it or refused. The medians are the *lower* medians: with an even
number of updates, the smaller of the two middle values (the conservative choice). Every
bound that bites is an event, naming the site, that the aggregator logs and records.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from accord.messages import Measured
from accord.runners.base import OPTIMIZER_PREFIX
from accord.tensors.state import StateView

#: floating-point elements read at a time: temporaries stay a few MB whatever the tensor size.
BLOCK = 1 << 20
#: elements of a change summed by one ``np.dot`` in its norm (a float64 buffer of 512 KB): each
#: upload measured as it arrives holds one (``StreamedChecks``), so it is kept small
NORM_BLOCK = 1 << 16

BoundKind = Literal["capped", "clipped", "refused", "dropped_non_finite", "held", "not_selected"]


@dataclass(frozen=True)
class UpdateBounds:
    """The plan's ``aggregator.settings.update_bounds`` (None switches a bound off)."""

    sample_count_multiple: float | None = 1.1
    norm_multiple: float | None = 1.5
    max_update_norm: float | None = None
    on_norm_exceeded: Literal["clip", "refuse"] = "clip"


#: no cap and no norm bound (the float64 mean and the finite check still apply).
UNBOUNDED = UpdateBounds(sample_count_multiple=None, norm_multiple=None)


@dataclass(frozen=True)
class BoundEvent:
    """One bound that bit: which site, what happened, the value it had and the bound applied."""

    collaborator: str
    kind: BoundKind
    value: float
    bound: float
    detail: str = ""

    def describe(self) -> str:
        """One line for the aggregator's log."""
        if self.kind == "capped":
            return f"{self.collaborator} declared {self.value:.0f} samples: counted as {self.bound:g} ({self.detail})"
        if self.kind == "clipped":
            return f"{self.collaborator}'s update (norm {self.value:.4g}) clipped to norm {self.bound:.4g}: {self.detail}"
        if self.kind == "refused":
            return f"{self.collaborator}'s update (norm {self.value:.4g}) left out (on_norm_exceeded: refuse): {self.detail}"
        if self.kind == "held":
            return f"{self.collaborator}'s update: {self.detail}"
        if self.kind == "not_selected":
            return f"{self.collaborator}'s update (score {self.value:.4g}) not selected: {self.detail}"
        return f"{self.collaborator}'s update would make the global model non-finite ({self.detail}): dropped"


@dataclass(frozen=True, eq=False)
class Update:
    """One accepted update: its tensors (a mapping, possibly a lazy view), declared count, and
    the norm of each floating-point tensor's change."""

    collaborator: str
    tensors: Mapping[str, np.ndarray]
    sample_count: float
    is_delta: bool
    norms: Mapping[str, float]

    @property
    def norm(self) -> float:
        """The norm of the whole change."""
        return math.sqrt(sum(n * n for n in self.norms.values()))


@dataclass(frozen=True, eq=False)
class Weighted:
    """An update as the average takes it: ``weight`` (capped count) times ``scales[name]`` x its change."""

    update: Update
    weight: float
    scales: Mapping[str, float]

    def scale(self, name: str) -> float:
        return self.scales.get(name, 1.0)


def lower_median(values: Sequence[float]) -> float:
    """The median; for an even count the smaller middle value."""
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]


def blocks(size: int, length: int = BLOCK) -> Iterator[slice]:
    """Slices of at most ``length`` elements covering ``range(size)``."""
    for start in range(0, size, length):
        yield slice(start, min(start + length, size))


def flat(array: np.ndarray) -> np.ndarray:
    """A 1-D view of ``array`` (no copy for contiguous arrays and memory maps)."""
    return np.asarray(array).reshape(-1)


def normed(name: str, reference: np.ndarray) -> bool:
    """Whether tensor ``name`` (the global's is ``reference``) has its change measured and bounded
    by norm: the model's floating-point tensors, not the optimizer state."""
    return reference.dtype.kind == "f" and not name.startswith(OPTIMIZER_PREFIX)


class ScaledChanges(Mapping[str, np.ndarray]):
    """One update's tensors with the change of each normed tensor scaled by ``scale``: the
    global's values plus ``scale`` x (values - global's) for weights, ``scale`` x the values for
    deltas; the other tensors (optimizer state, non-float ones) as they are.

    Lazy: ``base`` may be a memory-mapped view of a saved copy. A lookup computes one tensor;
    the block readers (``source``, ``block_of``) give ``base`` and the factor, to scale blocks of it instead.
    """

    def __init__(self, base: Mapping[str, np.ndarray], global_model: Mapping[str, np.ndarray], scale: float, is_delta: bool) -> None:
        self.base, self.global_model, self.scale, self.is_delta = base, global_model, scale, is_delta

    def factor(self, name: str) -> float:
        """What the change of tensor ``name`` is multiplied by."""
        return self.scale if normed(name, self.global_model[name]) else 1.0

    def __getitem__(self, name: str) -> np.ndarray:
        values, factor = self.base[name], self.factor(name)
        if factor == 1.0:
            return values
        reference = np.asarray(self.global_model[name])
        scaled = factor * change_of(np.asarray(values), self.is_delta, reference)
        return (scaled if self.is_delta else scaled + reference).astype(reference.dtype)

    def __iter__(self) -> Iterator[str]:
        return iter(self.base)

    def __len__(self) -> int:
        return len(self.base)


def unscaled(tensors: Mapping[str, np.ndarray], name: str) -> tuple[Mapping[str, np.ndarray], float]:
    """The tensors under any ``ScaledChanges`` views, and the factor they scale ``name``'s change by."""
    factor = 1.0
    while isinstance(tensors, ScaledChanges):
        factor *= tensors.factor(name)
        tensors = tensors.base
    return tensors, factor


def source(tensors: Mapping[str, np.ndarray], name: str) -> tuple[np.ndarray, float]:
    """Tensor ``name`` of ``tensors``, flat and fetched once for the whole tensor (mapped from a
    saved file, not read), and the factor its change is scaled by (``ScaledChanges``)."""
    base, factor = unscaled(tensors, name)
    return flat(base.mapped(name) if isinstance(base, StateView) else base[name]), factor


def block_of(tensors: Mapping[str, np.ndarray], name: str, part: slice) -> tuple[np.ndarray, float]:
    """Block ``part`` of tensor ``name`` of ``tensors`` (flat), fetched for this block alone (a
    saved file's tensor is mapped per block, so a reader of many files keeps one block of each
    in its resident pages, not whole tensors), and the factor its change is scaled by."""
    base, factor = unscaled(tensors, name)
    return flat(base[name])[part], factor


def change_of(values: np.ndarray, is_delta: bool, reference: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """float64 change of ``values`` (a delta, or weights) from ``reference`` (the global's, same
    shape), into ``out`` (a float64 buffer of that shape) when given."""
    if out is None:
        return values.astype(np.float64) if is_delta else np.subtract(values, reference, dtype=np.float64)
    out[...] = values  # exact; then one cast (the reference's) where np.subtract(..., dtype=float64) made two
    return out if is_delta else np.subtract(out, reference, out=out)


def change_norms(global_model: Mapping[str, np.ndarray], update: Update) -> dict[str, float]:
    """L2 norm of the change of each floating-point tensor of the model (not the optimizer state), in float64.

    Each tensor is fetched once (``source``) and its blocks' changes are computed into one
    reused float64 buffer: per-result work on the acknowledgement's path, with no allocation
    (and no fresh pages to fault in) per block.
    """
    norms = {}
    buffer = np.empty(NORM_BLOCK, np.float64)
    for name, reference in global_model.items():
        if not normed(name, reference):
            continue
        ref, total = flat(reference), 0.0
        values, factor = source(update.tensors, name)
        for part in blocks(ref.size, NORM_BLOCK):
            change = change_of(values[part], update.is_delta, ref[part], buffer[: part.stop - part.start])
            if factor != 1.0:
                with np.errstate(over="ignore"):
                    change *= factor
            total += _squares(change)
        norms[name] = math.sqrt(total)
    return norms


def _squares(change: np.ndarray) -> float:
    """The sum of squares of one block's change (a norm past float64's range is inf: the bounds judge it so)."""
    with np.errstate(over="ignore"):
        return float(np.dot(change, change))


class StreamedChecks:
    """An update's change norms and non-finite tensors, measured while its tensors arrive.

    ``add`` takes each piece of a tensor's bytes in order (the file a result is received into
    calls it beside each write). The numbers are ``change_norms``'s exactly, bit for bit: the
    change goes into the same float64 blocks of ``NORM_BLOCK`` elements, each summed by one
    ``np.dot``, in the same order; the non-finite tensors are those ``check_update``'s scan
    finds (a yes/no per value, in any order). A normed tensor's values are not scanned apart:
    a value that is NaN or Inf makes its block's sum of squares NaN or Inf, and only such a
    block is scanned (``_unfinished_block``). A stream an honest site never sends (tensors
    interleaved, a piece cutting an element) stops the measuring: ``measured`` is then None
    and the checks read the saved copy, as they would anyway. Memory: one block (512 KB).
    """

    def __init__(self, global_model: Mapping[str, np.ndarray], is_delta: bool) -> None:
        self.global_model, self.is_delta = global_model, is_delta
        self._norms: dict[str, float] = {}
        self._non_finite: set[str] = set()
        self._current: str | None = None  # the tensor under way
        self._filled = 0  # its elements so far
        self._total = 0.0  # its full blocks' sums of squares so far
        self._buffer: np.ndarray | None = None
        self._broken = False

    def add(self, name: str, dtype: np.dtype, offset: int, data: bytes | memoryview) -> None:
        """Piece ``data`` of tensor ``name`` (little-endian ``dtype``), from byte ``offset`` of it."""
        reference = self.global_model.get(name)
        if self._broken or reference is None:
            self._broken = True
            return
        if self._current != name:
            if self._current is not None or name in self._norms or offset:
                self._broken = True  # interleaved or repeated: not how an honest site sends
                return
            self._current, self._filled, self._total = name, 0, 0.0
        view = memoryview(data).cast("B")
        if offset != self._filled * dtype.itemsize or view.nbytes % dtype.itemsize:
            self._broken = True
            return
        values = np.frombuffer(view, dtype)
        ref = flat(reference)
        if normed(name, reference):
            self._measure(name, values, ref)
        else:
            if dtype.kind == "f" and not np.isfinite(values).all():
                self._non_finite.add(name)
            self._filled += values.size
        if self._filled == ref.size:
            self._norms[name] = math.sqrt(self._total)
            self._current = None

    def _measure(self, name: str, values: np.ndarray, ref: np.ndarray) -> None:
        """Put the change of ``values`` (the next elements) into the block; sum each block that fills."""
        if self._buffer is None:
            self._buffer = np.empty(NORM_BLOCK, np.float64)
        at = 0
        while at < values.size:
            position = self._filled % NORM_BLOCK
            length = min(NORM_BLOCK, ref.size - (self._filled - position))  # this block's elements
            take = min(values.size - at, length - position)
            start = self._filled
            change_of(values[at : at + take], self.is_delta, ref[start : start + take], self._buffer[position : position + take])
            self._filled, at = start + take, at + take
            if position + take == length:
                squares = _squares(self._buffer[:length])
                if not math.isfinite(squares):
                    self._unfinished_block(name, self._buffer[:length], ref[self._filled - length : self._filled], values.dtype.itemsize)
                self._total += squares

    def _unfinished_block(self, name: str, change: np.ndarray, ref: np.ndarray, itemsize: int) -> None:
        """A block of ``name`` (its ``change`` from the global's elements ``ref``) whose sum of squares is NaN or Inf:
        the tensor holds NaN or Inf if the change does. Exact for a delta (the change is the
        values) and for weights of at most 4 bytes off a finite global (a change then cannot
        overflow float64, nor its squares); for any other block (float64 weights, a global
        holding NaN or Inf) the measuring stops and the checks read the saved copy."""
        if not self.is_delta and (itemsize > 4 or not np.isfinite(ref).all()):
            self._broken = True
        elif not np.isfinite(change).all():
            self._non_finite.add(name)

    def measured(self) -> Measured | None:
        """The measurements once every tensor arrived whole; None if the measuring stopped."""
        if self._broken or self._current is not None:
            return None
        norms = {}
        for name, reference in self.global_model.items():
            if name not in self._norms and np.size(reference):
                return None
            if normed(name, reference):
                norms[name] = self._norms.get(name, 0.0)
        return Measured(self.global_model, self.is_delta, norms, frozenset(self._non_finite))


def bound_updates(updates: Sequence[Update], bounds: UpdateBounds) -> tuple[list[Weighted], list[BoundEvent]]:
    """Cap the counts and bound the changes of a round's updates; what bit is returned as events."""
    events: list[BoundEvent] = []
    if not updates:
        return [], events
    cap, cap_why = math.inf, ""
    if bounds.sample_count_multiple is not None:
        median = lower_median([u.sample_count for u in updates])
        cap, cap_why = bounds.sample_count_multiple * median, f"sample_count_multiple {bounds.sample_count_multiple:g} x the round's median {median:g}"
    limits = _tensor_limits(updates, bounds.norm_multiple)
    weighted = []
    for update in updates:
        weight = update.sample_count
        if weight > cap:
            events.append(BoundEvent(update.collaborator, "capped", weight, cap, cap_why))
            weight = cap
        scales, why = _scales(update, limits, bounds)
        if scales and bounds.on_norm_exceeded == "refuse":
            events.append(BoundEvent(update.collaborator, "refused", update.norm, _clipped_norm(update, scales), why))
            continue
        if scales:
            events.append(BoundEvent(update.collaborator, "clipped", update.norm, _clipped_norm(update, scales), why))
        weighted.append(Weighted(update, weight, scales))
    return weighted, events


def _tensor_limits(updates: Sequence[Update], multiple: float | None) -> dict[str, float]:
    """name -> multiple x the round's median norm of that tensor's change (none without a multiple)."""
    if multiple is None or not updates:
        return {}
    return {name: multiple * lower_median([u.norms[name] for u in updates]) for name in updates[0].norms}


def _scales(update: Update, limits: Mapping[str, float], bounds: UpdateBounds) -> tuple[dict[str, float], str]:
    """Tensor name -> the factor that brings ``update`` within the bounds (empty when it is within), and why."""
    scales = {name: limits[name] / norm for name, norm in update.norms.items() if name in limits and norm > limits[name]}
    why = ""
    if scales:
        worst = min(scales, key=scales.__getitem__)
        why = (
            f"{len(scales)} of {len(update.norms)} tensors past norm_multiple {bounds.norm_multiple:g} x the round's "
            f"median norm of their change; {worst!r} {1 / scales[worst]:.3g}x its bound"
        )
    total = _clipped_norm(update, scales)
    if bounds.max_update_norm is not None and total > bounds.max_update_norm:
        factor = bounds.max_update_norm / total
        scales = {name: scales.get(name, 1.0) * factor for name in update.norms}
        why = "; ".join(filter(None, [why, f"norm {total:.4g} past max_update_norm {bounds.max_update_norm:g}"]))
    return scales, why


def _clipped_norm(update: Update, scales: Mapping[str, float]) -> float:
    return math.sqrt(sum((n * scales.get(name, 1.0)) ** 2 for name, n in update.norms.items()))
