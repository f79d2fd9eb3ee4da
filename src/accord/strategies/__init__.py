"""Aggregation strategies: one algorithm a file, each selectable in the plan
(``aggregator.settings.strategy.template``) and from the Python APIs. See docs/strategies.md."""

from accord.strategies.base import Strategy
from accord.strategies.bulyan import Bulyan
from accord.strategies.clipping import NormClipping
from accord.strategies.dp_fedavg import DPFedAvg
from accord.strategies.fedadagrad import FedAdagrad
from accord.strategies.fedadam import FedAdam
from accord.strategies.fedavg import FedAvg
from accord.strategies.fedavgm import FedAvgM
from accord.strategies.fedprox import FedProx
from accord.strategies.fedyogi import FedYogi
from accord.strategies.geometric_median import GeometricMedian
from accord.strategies.krum import Krum, MultiKrum
from accord.strategies.median import CoordinateMedian
from accord.strategies.seam import Accumulator, Aggregate, ClientSampling, Reply, RoundContext, StrategyState
from accord.strategies.trimmed_mean import TrimmedMean

__all__ = [
    "Accumulator",
    "Aggregate",
    "Bulyan",
    "ClientSampling",
    "CoordinateMedian",
    "DPFedAvg",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedProx",
    "FedYogi",
    "GeometricMedian",
    "Krum",
    "MultiKrum",
    "NormClipping",
    "Reply",
    "RoundContext",
    "Strategy",
    "StrategyState",
    "TrimmedMean",
]
