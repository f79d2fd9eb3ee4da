"""FedYogi (Reddi et al. 2021): Yogi at the server, on the cohort's mean change."""

from __future__ import annotations

import numpy as np

from accord.strategies.fedopt import AdaptiveOptimizer


class FedYogi(AdaptiveOptimizer):
    """``v = v - (1 - β2) Δ² sign(v - Δ²)``: ``v`` moves towards ``Δ²`` by a bounded amount,
    so it grows no faster than Adam's and shrinks more slowly.

    Defaults as FedAdam's (strategies/fedadam.py).
    """

    def second_moment(self, v: np.ndarray, squared: np.ndarray) -> np.ndarray:
        return v - (1 - self.beta2) * squared * np.sign(v - squared)
