"""Aggregation functions: combine collaborators' updates into the next global model."""

from accord.aggregation.bounds import UNBOUNDED, BoundEvent, UpdateBounds
from accord.aggregation.fedavg import FedAvg

__all__ = ["UNBOUNDED", "BoundEvent", "FedAvg", "UpdateBounds"]
