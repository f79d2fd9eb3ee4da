"""NormClipping: each reply's change clipped to an L2 norm before any strategy folds it."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import numpy as np

from accord.aggregation.bounds import BoundEvent, ScaledChanges
from accord.strategies.base import Strategy
from accord.strategies.robust import require
from accord.strategies.seam import (
    Accumulator,
    Aggregate,
    Reply,
    RoundContext,
)
from accord.strategies.wrapper import Wrapper


class NormClipping(Wrapper):
    """Wraps ``strategy``: each reply's change (update - global for weights, the delta itself
    for deltas) over the model's floating-point tensors is scaled down to L2 norm ``max_norm``
    if it is longer, before ``strategy``'s accumulator sees the reply; every other hook is
    ``strategy``'s. The optimizer state (``__opt__.*``) and the non-float tensors are not
    clipped: honest optimizer state changes by more than any useful norm, and the wrapped
    strategy's own rule judges it (FedAvg clamps it to the other sites' range, the robust
    strategies take a median). The clipped reply is a lazy view of what arrived and of its
    saved copy: nothing more is held than the wrapped strategy holds."""

    def __init__(self, strategy: Strategy, max_norm: float) -> None:
        require(0 < max_norm < math.inf, "NormClipping", "max_norm", max_norm, "a positive number (the L2 norm a change is clipped to)")
        super().__init__(strategy)
        self.max_norm = max_norm

    def accumulator(self, context: RoundContext) -> Accumulator:
        return ClippedReplies(self.strategy.accumulator(context), context, self.max_norm)

    def __repr__(self) -> str:
        return f"NormClipping(strategy={self.strategy!r}, max_norm={self.max_norm!r})"


class ClippedReplies:
    """Clips each reply, then hands it to the wrapped accumulator; its events come first."""

    def __init__(self, inner: Accumulator, context: RoundContext, max_norm: float) -> None:
        self.inner, self.context, self.max_norm = inner, context, max_norm
        self._events: list[BoundEvent] = []

    def add(self, reply: Reply) -> None:
        clipped, norm = clip_reply(reply, self.context.global_model, self.max_norm)
        if clipped is not reply:
            self._events.append(
                BoundEvent(reply.collaborator, "clipped", norm, self.max_norm, f"NormClipping max_norm {self.max_norm:g}")
            )
        self.inner.add(clipped)

    def result(self) -> Aggregate:
        aggregate = self.inner.result()
        return dataclasses.replace(aggregate, events=self._events + aggregate.events)  # keeps what else it carries


def clip_reply(reply: Reply, global_model: Mapping[str, np.ndarray], max_norm: float) -> tuple[Reply, float]:
    """``reply`` with its change over the model's floating-point tensors (not the optimizer
    state) scaled down to L2 norm ``max_norm`` if longer (lazily: views of what arrived and of
    its saved copy), and that change's norm before clipping; ``reply`` itself if not longer."""
    norms = reply.change_norms(global_model)
    norm = math.sqrt(sum(n * n for n in norms.values()))
    if norm <= max_norm:
        return reply, norm
    scale = max_norm / norm
    stored = None if reply.stored is None else ScaledChanges(reply.stored, global_model, scale, reply.is_delta)
    return Reply(
        reply.collaborator, ScaledChanges(reply.update, global_model, scale, reply.is_delta), reply.weight, reply.is_delta, stored
    ), norm
