"""FedAdagrad (Reddi et al. 2021): Adagrad at the server, on the cohort's mean change."""

from __future__ import annotations

import numpy as np

from accord.strategies.fedopt import AdaptiveOptimizer


class FedAdagrad(AdaptiveOptimizer):
    """``v = v + Δ²``: the step shrinks as the squared changes add up (``beta2`` is unused).

    Defaults as FedAdam's (strategies/fedadam.py).
    """

    def second_moment(self, v: np.ndarray, squared: np.ndarray) -> np.ndarray:
        return v + squared
