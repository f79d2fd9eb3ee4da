"""CoordinateMedian (Yin et al. 2018): the coordinate-wise median of the cohort's models."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from accord.aggregation.bounds import Weighted
from accord.aggregation.robust import median_rule
from accord.strategies.robust import RobustStrategy, Rules


class CoordinateMedian(RobustStrategy):
    """Each coordinate of the next model is the median of the updates' values there (for an
    even count, the mean of the two middle ones), unweighted. It holds while fewer than half
    of the updates are hostile; it needs 3 replies (strategies/robust.py for the bounds,
    the optimizer state and the other tensors)."""

    def rules(self, global_model: Mapping[str, np.ndarray], weighted: Sequence[Weighted]) -> Rules:
        return Rules(median_rule)
