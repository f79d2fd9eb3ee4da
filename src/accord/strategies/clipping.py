"""NormClipping: each reply's change clipped to an L2 norm before any strategy folds it."""

from __future__ import annotations

import math

from accord.aggregation.bounds import BoundEvent, ScaledChanges, Update, change_norms
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
        global_model = self.context.global_model
        norms = change_norms(global_model, Update(reply.collaborator, reply.update, reply.weight, reply.is_delta, {}))
        norm = math.sqrt(sum(n * n for n in norms.values()))
        if norm > self.max_norm:
            scale = self.max_norm / norm
            self._events.append(BoundEvent(reply.collaborator, "clipped", norm, self.max_norm, f"NormClipping max_norm {self.max_norm:g}"))
            stored = None if reply.stored is None else ScaledChanges(reply.stored, global_model, scale, reply.is_delta)
            reply = Reply(reply.collaborator, ScaledChanges(reply.update, global_model, scale, reply.is_delta), reply.weight, reply.is_delta, stored)
        self.inner.add(reply)

    def result(self) -> Aggregate:
        aggregate = self.inner.result()
        return Aggregate(aggregate.model, self._events + aggregate.events)
