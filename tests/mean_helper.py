"""The bounded mean (strategies/mean.py) driven one round at a time, as the engine does."""

from __future__ import annotations

from accord.aggregation.bounds import UNBOUNDED, UpdateBounds
from accord.strategies.mean import BoundedMean
from accord.strategies.seam import Reply, RoundContext


class Mean:
    """``start_round`` opens a BoundedMean over a global model; ``result`` returns the model
    and keeps the events it reported."""

    def __init__(self, bounds: UpdateBounds = UNBOUNDED) -> None:
        self.bounds = bounds
        self.events: list = []

    def start_round(self, global_model) -> None:
        self._acc = BoundedMean(RoundContext(0, global_model, self.bounds))

    def add(self, update, weight, is_delta=False, collaborator="", stored=None) -> None:
        self._acc.add(Reply(collaborator, update, float(weight), is_delta, stored))

    def result(self):
        aggregate = self._acc.result()
        self.events = aggregate.events
        return aggregate.model
