"""The base of the robust strategies (median, trimmed mean, geometric median, Krum, Bulyan).

A robust rule judges each update against the others, so its accumulator keeps every reply
until the close, as the lazy, memory-mapped view of its saved copy (``Reply.kept``) plus its
change norms: memory stays O(model + replies x block), never O(replies x model). At the close
the plan's norm bounds apply first, as for FedAvg (a bound set against the round's median
norm is itself robust, and an operator who switches strategy keeps the protection); the
sample-count caps do not, for no robust rule weighs by count (a count is a claim). Then the
strategy's ``rules`` give a coordinate-wise rule for the model's floating-point tensors and
one for the optimizer state (by default the coordinate-wise median: its honest changes differ
too much for a distance between sites to mean anything); other tensors take the coordinate-
wise lower median of the values. Updates are taken in the collaborators' order, so the
result does not depend on the order the replies arrived in.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import ClassVar

import numpy as np

from accord.aggregation.bounds import BoundEvent, Weighted, bound_updates
from accord.aggregation.fedavg import ROBUST_VOTERS
from accord.aggregation.robust import Rule, median_rule, one_blas_thread, robust_model
from accord.errors import PlanError
from accord.strategies.base import Strategy
from accord.strategies.mean import MeasuredReplies
from accord.strategies.seam import Accumulator, Aggregate, RoundContext


def require(ok: bool, strategy: str, setting: str, value: object, expected: str) -> None:
    """Refuse a strategy's setting out of its range, naming it as the plan does."""
    if not ok:
        raise PlanError(
            f"strategy {strategy}: {setting} is {value!r}; expected {expected}",
            f"set {setting} in aggregator.settings.strategy.settings (or the strategy's constructor) to {expected}",
        )


@dataclass
class Rules:
    """What a robust strategy applies to one round's (bounded) updates."""

    #: the coordinate-wise rule for the model's floating-point tensors
    model: Rule
    #: the coordinate-wise rule for the optimizer state (``__opt__.*``)
    optimizer: Rule = median_rule
    #: what the rule decided about each site (e.g. Krum's sites not selected)
    events: list[BoundEvent] = field(default_factory=list)


class RobustStrategy(Strategy, abc.ABC):
    """A strategy whose ``rules`` judge every update of the round against the others."""

    needs_individual_updates: ClassVar[bool] = True

    def accumulator(self, context: RoundContext) -> Accumulator:
        return KeptUpdates(context, self)

    def min_replies(self, cohort_size: int) -> int:
        return ROBUST_VOTERS

    @abc.abstractmethod
    def rules(self, global_model: Mapping[str, np.ndarray], weighted: Sequence[Weighted]) -> Rules:
        """The rules for these updates (at least ``min_replies`` of them), in the collaborators' order."""

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({settings})"


class KeptUpdates(MeasuredReplies):
    """The robust strategies' accumulator: the replies' saved copies, read at the close."""

    def __init__(self, context: RoundContext, strategy: RobustStrategy) -> None:
        super().__init__(context)
        self.strategy = strategy

    def result(self) -> Aggregate:
        """The strategy's rule over the bounded updates; the global model unchanged if too few
        are left to judge, or if the result is not finite in the model's dtypes."""
        global_model = self.context.global_model
        updates = sorted(self._updates, key=lambda u: u.collaborator)
        weighted, events = bound_updates(updates, replace(self.context.bounds, sample_count_multiple=None))
        needed = self.strategy.min_replies(len(weighted))
        if len(weighted) < needed:
            detail = (
                f"only {len(weighted)} updates left after the bounds, {self.strategy!r} needs {needed}: the global model is kept"
            )
            return Aggregate(
                dict(global_model),
                events + [BoundEvent(w.update.collaborator, "held", len(weighted), needed, detail) for w in weighted],
            )
        with one_blas_thread():
            rules = self.strategy.rules(global_model, weighted)
            model, offending = robust_model(global_model, weighted, rules.model, rules.optimizer, self.context.space)
        events += rules.events
        if offending is not None:
            detail = f"{self.strategy!r} of the updates is not finite in tensor {offending!r}'s dtype: the global model is kept"
            events += [BoundEvent(w.update.collaborator, "held", len(weighted), needed, detail) for w in weighted]
            model = dict(global_model)
        return Aggregate(model, events)
