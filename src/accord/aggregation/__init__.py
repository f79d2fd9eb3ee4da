"""Aggregation functions: combine collaborators' updates into the next global model."""

from accord.aggregation.fedavg import FedAvg

__all__ = ["FedAvg"]
