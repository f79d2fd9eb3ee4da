"""Aggregation strategies: one algorithm a file, each selectable in the plan
(``aggregator.settings.strategy.template``) and from the Python APIs. See docs/strategies.md."""

from accord.strategies.base import Strategy
from accord.strategies.fedavg import FedAvg
from accord.strategies.fedprox import FedProx
from accord.strategies.seam import Accumulator, Aggregate, ClientSampling, Reply, RoundContext, StrategyState

__all__ = ["Accumulator", "Aggregate", "ClientSampling", "FedAvg", "FedProx", "Reply", "RoundContext", "Strategy", "StrategyState"]
