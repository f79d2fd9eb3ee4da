"""Aggregation maths: update bounds and the bounded float64 mean, over (lazy) mappings of tensors."""

from accord.aggregation.bounds import UNBOUNDED, BoundEvent, UpdateBounds

__all__ = ["UNBOUNDED", "BoundEvent", "UpdateBounds"]
