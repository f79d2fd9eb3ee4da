"""TrimmedMean (Yin et al. 2018): the coordinate-wise mean once the largest and smallest values are dropped."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from accord.aggregation.bounds import Weighted
from accord.aggregation.fedavg import ROBUST_VOTERS
from accord.aggregation.robust import Rule, across
from accord.strategies.robust import RobustStrategy, Rules, require


def trimmed_mean_rule(trimmed: int) -> Rule:
    """The coordinate-wise mean without the ``trimmed`` largest and ``trimmed`` smallest values."""

    def rule(changes: np.ndarray) -> np.ndarray:
        ordered = across(changes)
        return ordered[trimmed : len(ordered) - trimmed].mean(axis=0)

    return rule


class TrimmedMean(RobustStrategy):
    """At each coordinate, drop the ``floor(beta x n)`` largest and as many smallest of the n
    updates' values and take the mean of the rest, unweighted (as ``scipy.stats.trim_mean``).
    The optimizer state is trimmed the same way. It holds while at most ``beta x n`` updates
    are hostile; it needs the replies that trim at least one value a side (10 for beta 0.1)."""

    def __init__(self, beta: float = 0.1) -> None:
        require(0 <= beta < 0.5, "TrimmedMean", "beta", beta, "0 <= beta < 0.5 (the fraction trimmed at each end)")
        self.beta = beta

    def trimmed(self, count: int) -> int:
        """Values dropped at each end of ``count``."""
        return int(self.beta * count)

    def min_replies(self, cohort_size: int) -> int:
        if self.beta == 0:
            return ROBUST_VOTERS
        needed = max(ROBUST_VOTERS, math.ceil(1 / self.beta))
        while self.trimmed(needed) < 1:
            needed += 1
        return needed

    def rules(self, global_model: Mapping[str, np.ndarray], weighted: Sequence[Weighted]) -> Rules:
        rule = trimmed_mean_rule(self.trimmed(len(weighted)))
        return Rules(rule, rule)
