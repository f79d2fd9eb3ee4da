"""FedAdam (Reddi et al. 2021): Adam at the server, on the cohort's mean change."""

from __future__ import annotations

import numpy as np

from accord.strategies.fedopt import AdaptiveOptimizer


class FedAdam(AdaptiveOptimizer):
    """``v = β2 v + (1 - β2) Δ²`` (no bias correction, as the paper's Algorithm 2).

    Defaults: ``beta1 = 0.9``, ``beta2 = 0.99`` (the paper's fixed values); ``eta = 1e-2`` and
    ``tau = 1e-3`` are ours, inside the grids the paper tunes them over (strategies/fedopt.py).
    """

    def second_moment(self, v: np.ndarray, squared: np.ndarray) -> np.ndarray:
        return self.beta2 * v + (1 - self.beta2) * squared
