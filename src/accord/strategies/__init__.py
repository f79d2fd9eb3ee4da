"""Aggregation strategies: one algorithm a file, each selectable in the plan
(``aggregator.settings.strategy.template``) and from the Python APIs. See docs/strategies.md."""

from accord.strategies.base import Strategy
from accord.strategies.fedadagrad import FedAdagrad
from accord.strategies.fedadam import FedAdam
from accord.strategies.fedavg import FedAvg
from accord.strategies.fedavgm import FedAvgM
from accord.strategies.fedyogi import FedYogi
from accord.strategies.seam import Accumulator, Aggregate, ClientSampling, Reply, RoundContext, StrategyState

__all__ = [
    "Accumulator",
    "Aggregate",
    "ClientSampling",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedYogi",
    "Reply",
    "RoundContext",
    "Strategy",
    "StrategyState",
]
