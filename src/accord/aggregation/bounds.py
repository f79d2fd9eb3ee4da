"""Bounds on what one update can do to the average: its sample count and the norm of its change.

A site with a valid certificate may lie. Its declared sample count is capped at a multiple of
the round's median count, and the norm of its change (update - global for weights, the delta
itself for deltas, over floating-point tensors, in float64) is bounded by a multiple of the
round's median norm, or by an absolute bound; an update past the bound is clipped to it or
refused. The medians are the *lower* medians: with an even number of updates, the smaller of
the two middle values (the conservative choice). Every bound that bites is an event, naming
the site, that the aggregator logs and records.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Literal, Mapping, Sequence

import numpy as np

#: floating-point elements read at a time: temporaries stay a few MB whatever the tensor size.
BLOCK = 1 << 20

BoundKind = Literal["capped", "clipped", "refused", "dropped_non_finite"]


@dataclass(frozen=True)
class UpdateBounds:
    """The plan's ``aggregator.settings.update_bounds`` (None switches a bound off)."""

    sample_count_multiple: float | None = 2.0
    norm_multiple: float | None = 3.0
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
            return f"{self.collaborator}'s update has norm {self.value:.4g}, over the bound {self.bound:.4g} ({self.detail}): scaled down to it"
        if self.kind == "refused":
            return f"{self.collaborator}'s update has norm {self.value:.4g}, over the bound {self.bound:.4g} ({self.detail}): left out (on_norm_exceeded: refuse)"
        return f"{self.collaborator}'s update would make the global model non-finite ({self.detail}): dropped"


@dataclass(frozen=True, eq=False)
class Update:
    """One accepted update: its tensors (a mapping, possibly a lazy view), declared count, norm."""

    collaborator: str
    tensors: Mapping[str, np.ndarray]
    sample_count: float
    is_delta: bool
    norm: float


@dataclass(frozen=True, eq=False)
class Weighted:
    """An update as the average takes it: ``weight`` (capped count) times ``scale`` x its change."""

    update: Update
    weight: float
    scale: float = 1.0


def lower_median(values: Sequence[float]) -> float:
    """The median; for an even count the smaller middle value."""
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]


def blocks(size: int) -> Iterator[slice]:
    """Slices of at most BLOCK elements covering ``range(size)``."""
    for start in range(0, size, BLOCK):
        yield slice(start, min(start + BLOCK, size))


def flat(array: np.ndarray) -> np.ndarray:
    """A 1-D view of ``array`` (no copy for contiguous arrays and memory maps)."""
    return np.asarray(array).reshape(-1)


def change_block(update: Update, name: str, part: slice, reference: np.ndarray) -> np.ndarray:
    """float64 change of ``update``'s tensor ``name`` over ``part`` (``reference`` is the global's, flat)."""
    values = flat(update.tensors[name])[part]
    if update.is_delta:
        return values.astype(np.float64)
    return np.subtract(values, reference[part], dtype=np.float64)


def change_norm(global_model: Mapping[str, np.ndarray], update: Update) -> float:
    """L2 norm of the update's change over the floating-point tensors, in float64."""
    total = 0.0
    for name, reference in global_model.items():
        if reference.dtype.kind != "f":
            continue
        ref = flat(reference)
        for part in blocks(ref.size):
            change = change_block(update, name, part, ref)
            total += float(np.dot(change, change))
    return math.sqrt(total)


def bound_updates(updates: Sequence[Update], bounds: UpdateBounds) -> tuple[list[Weighted], list[BoundEvent]]:
    """Cap the counts and bound the norms of a round's updates; what bit is returned as events."""
    events: list[BoundEvent] = []
    if not updates:
        return [], events
    cap = math.inf
    if bounds.sample_count_multiple is not None:
        median = lower_median([u.sample_count for u in updates])
        cap = bounds.sample_count_multiple * median
        why = f"sample_count_multiple {bounds.sample_count_multiple:g} x the round's median {median:g}"
    norm_bound, norm_why = _norm_bound(updates, bounds)
    weighted = []
    for update in updates:
        weight = update.sample_count
        if weight > cap:
            events.append(BoundEvent(update.collaborator, "capped", weight, cap, why))
            weight = cap
        scale = 1.0
        if update.norm > norm_bound:
            if bounds.on_norm_exceeded == "refuse":
                events.append(BoundEvent(update.collaborator, "refused", update.norm, norm_bound, norm_why))
                continue
            events.append(BoundEvent(update.collaborator, "clipped", update.norm, norm_bound, norm_why))
            scale = norm_bound / update.norm
        weighted.append(Weighted(update, weight, scale))
    return weighted, events


def _norm_bound(updates: Sequence[Update], bounds: UpdateBounds) -> tuple[float, str]:
    """The tighter of the adaptive bound (multiple x median norm) and the absolute one."""
    limit, why = math.inf, ""
    if bounds.norm_multiple is not None:
        median = lower_median([u.norm for u in updates])
        limit = bounds.norm_multiple * median
        why = f"norm_multiple {bounds.norm_multiple:g} x the round's median norm {median:.4g}"
    if bounds.max_update_norm is not None and bounds.max_update_norm < limit:
        limit, why = bounds.max_update_norm, f"max_update_norm {bounds.max_update_norm:g}"
    return limit, why
