"""BoundedMean: the accumulator of FedAvg and its family (FedAvgM, FedAdam, FedProx, ...).

The bounds (aggregation/bounds.py) need the round's median counts and norms, known only at the
close, so ``add`` measures each reply's change norms from what arrived and keeps the lazy,
memory-mapped view of its saved copy (``Reply.kept``): memory is O(model), not
O(replies x model). ``result`` takes the mean in float64 one block of one tensor at a time
(aggregation/fedavg.py), into the model ``context.space`` makes (memory, or a file on disk).
"""

from __future__ import annotations

from accord.aggregation.bounds import BoundEvent, Update, bound_updates
from accord.aggregation.fedavg import ROBUST_VOTERS, non_finite_culprits, robust_tensor, weighted_mean
from accord.strategies.seam import Aggregate, Reply, RoundContext


class MeasuredReplies:
    """What an accumulator keeps of each reply: its change norms, measured from what arrived,
    and its saved copy's view (``Reply.kept``), read only at the close."""

    def __init__(self, context: RoundContext) -> None:
        self.context = context
        self._updates: list[Update] = []

    def add(self, reply: Reply) -> None:
        """Measure the reply's change norms now; keep its saved copy for the close."""
        norms = reply.change_norms(self.context.global_model)
        self._updates.append(Update(reply.collaborator, reply.kept, reply.weight, reply.is_delta, norms))


class BoundedMean(MeasuredReplies):
    """Sample-weighted mean of the replies' models (or of their deltas added to the global model).

    Counts are capped and changes bounded as ``context.bounds`` says; the mean accumulates in
    float64, and a result that would not be finite in the model's dtype drops the updates
    that make it so. Deltas apply to floating-point tensors; other tensors (counters, masks)
    always travel as values and take a median (``weighted_mean``). The replies' arrays are
    never modified.
    """

    def result(self) -> Aggregate:
        """The mean; the global model unchanged if no update is left to average.

        If reading a saved update fails (an OSError), the exception propagates and the round
        can be closed again (the replies are still held).
        """
        global_model = self.context.global_model
        weighted, events = bound_updates(self._updates, self.context.bounds)
        if 0 < len(weighted) < ROBUST_VOTERS and any(robust_tensor(name, t) for name, t in global_model.items()):
            how = "the global's" if len(weighted) == 1 else "the coordinate-wise median of the global's and the 2 updates'"
            detail = f"only {len(weighted)} of the {ROBUST_VOTERS} updates needed to judge them: optimizer state and non-float tensors are {how}"
            events += [BoundEvent(w.update.collaborator, "held", len(weighted), ROBUST_VOTERS, detail) for w in weighted]
        model = dict(global_model)
        while weighted:
            mean, offending = weighted_mean(global_model, weighted, self.context.space)
            if offending is None:
                model = mean
                break
            dropped = non_finite_culprits(global_model, weighted, offending)
            events += [
                BoundEvent(w.update.collaborator, "dropped_non_finite", w.update.norm, 0.0, f"tensor {offending!r}")
                for w in dropped
            ]
            weighted = [w for w in weighted if w not in dropped]
        return Aggregate(model, events)
