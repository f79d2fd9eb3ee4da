"""GeometricMedian (Pillutla et al. 2019, RFA): the smoothed Weiszfeld algorithm."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from accord.aggregation.bounds import Weighted
from accord.aggregation.robust import combination, finite_points, gram_matrix
from accord.strategies.robust import RobustStrategy, Rules, require

#: RFA's smoothing: a distance to the median below it counts as it (no division by zero)
SMOOTHING = 1e-6


def weiszfeld(gram: np.ndarray, max_iterations: int, tolerance: float, smoothing: float = SMOOTHING) -> tuple[np.ndarray, int]:
    """The geometric median of the points whose Gram matrix is ``gram``, as the coefficients
    of their combination, and the iterations it took.

    Each iterate is a combination of the points, so the distances are taken from the Gram
    matrix (``|v - x_j|^2 = c.G.c - 2 (G.c)_j + G_jj``) and no iteration reads the updates.
    It starts from the mean and stops once the objective (the sum of the distances) moves by
    at most ``tolerance`` times itself.
    """
    finite = finite_points(gram)
    if not finite.any():
        return np.zeros(len(gram)), 0
    if not finite.all():  # a point whose norm overflowed float64 is infinitely far: it gets no weight
        inner, iterations = weiszfeld(gram[np.ix_(finite, finite)], max_iterations, tolerance, smoothing)
        coefficients = np.zeros(len(gram))
        coefficients[finite] = inner
        return coefficients, iterations
    count = len(gram)
    coefficients = np.full(count, 1.0 / count)

    def distances(c: np.ndarray) -> np.ndarray:
        product = gram @ c
        return np.sqrt(np.maximum(c @ product - 2.0 * product + np.diag(gram), 0.0))

    current = distances(coefficients)
    objective = float(current.sum())
    for iteration in range(1, max_iterations + 1):
        inverse = 1.0 / np.maximum(current, smoothing)
        coefficients = inverse / inverse.sum()
        current = distances(coefficients)
        previous, objective = objective, float(current.sum())
        if abs(previous - objective) <= tolerance * objective:
            return coefficients, iteration
    return coefficients, max_iterations


class GeometricMedian(RobustStrategy):
    """The point that minimises the sum of the L2 distances to the updates' changes, by
    smoothed Weiszfeld iterations, over the model's floating-point tensors; unweighted, unlike
    RFA, which weighs by sample counts: a count is a claim, and the median's guarantee (it
    holds while fewer than half of the updates are hostile) is over sites. It needs 3 replies;
    the optimizer state takes the coordinate-wise median (strategies/robust.py)."""

    def __init__(self, max_iterations: int = 100, tolerance: float = 1e-6) -> None:
        require(max_iterations >= 1, "GeometricMedian", "max_iterations", max_iterations, "at least 1")
        require(tolerance >= 0, "GeometricMedian", "tolerance", tolerance, "at least 0")
        self.max_iterations = max_iterations
        self.tolerance = tolerance

    def rules(self, global_model: Mapping[str, np.ndarray], weighted: Sequence[Weighted]) -> Rules:
        coefficients, _ = weiszfeld(gram_matrix(global_model, weighted), self.max_iterations, self.tolerance)
        return Rules(combination(coefficients))
