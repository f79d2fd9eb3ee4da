"""Krum and Multi-Krum (Blanchard et al. 2017): the update(s) nearest their nearest neighbours."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from accord.aggregation.bounds import BoundEvent, Weighted
from accord.aggregation.robust import combination, gram_matrix, squared_distances
from accord.strategies.robust import RobustStrategy, Rules, require


def neighbours(count: int, byzantine: int) -> int:
    """How many nearest others a Krum score sums over: n - f - 2 (at least 1)."""
    return max(count - byzantine - 2, 1)


def krum_scores(distances: np.ndarray, byzantine: int) -> np.ndarray:
    """Each update's score: the sum of its squared distances to its n - f - 2 nearest others."""
    count = len(distances)
    others = np.sort(distances + np.diag(np.full(count, np.inf)), axis=1)[:, : count - 1]
    return others[:, : neighbours(count, byzantine)].sum(axis=1)


def not_selected(weighted: Sequence[Weighted], scores: np.ndarray, chosen: Sequence[int], detail: str) -> list[BoundEvent]:
    """One event per update left out, with its Krum score and the highest selected one."""
    kept = set(chosen)
    worst = float(max(scores[i] for i in kept))
    return [
        BoundEvent(w.update.collaborator, "not_selected", float(scores[i]), worst, detail)
        for i, w in enumerate(weighted)
        if i not in kept
    ]


class Krum(RobustStrategy):
    """The update whose squared distances to its n - f - 2 nearest others sum the least, where
    f (``byzantine``) is the number of hostile sites tolerated; it needs n >= 2f + 3. The
    distances are over the model's floating-point tensors (the N x N matrix is accumulated
    block by block); the optimizer state takes the coordinate-wise median of all updates, for
    a site may send an honest-looking model beside hostile optimizer state."""

    def __init__(self, byzantine: int = 1) -> None:
        require(byzantine >= 0, type(self).__name__, "byzantine", byzantine, "at least 0 (the hostile sites tolerated)")
        self.byzantine = byzantine

    def min_replies(self, cohort_size: int) -> int:
        return 2 * self.byzantine + 3

    def kept(self, count: int) -> int:
        """How many of ``count`` updates are averaged."""
        return 1

    def rules(self, global_model: Mapping[str, np.ndarray], weighted: Sequence[Weighted]) -> Rules:
        scores = krum_scores(squared_distances(gram_matrix(global_model, weighted)), self.byzantine)
        chosen = sorted(int(i) for i in np.argsort(scores, kind="stable")[: self.kept(len(weighted))])
        coefficients = np.zeros(len(weighted))
        coefficients[chosen] = 1.0 / len(chosen)
        detail = (
            f"{self!r} kept the {len(chosen)} of {len(weighted)} updates of the lowest scores (the sum of the squared "
            f"distances to the {neighbours(len(weighted), self.byzantine)} nearest others)"
        )
        return Rules(combination(coefficients), events=not_selected(weighted, scores, chosen, detail))


class MultiKrum(Krum):
    """The mean of the ``keep`` updates of the lowest Krum scores (default n - f), unweighted."""

    def __init__(self, byzantine: int = 1, keep: int | None = None) -> None:
        super().__init__(byzantine)
        require(
            keep is None or keep >= 1, "MultiKrum", "keep", keep, "at least 1, or null for n - byzantine (the updates averaged)"
        )
        self.keep = keep

    def kept(self, count: int) -> int:
        return min(self.keep, count) if self.keep is not None else count - self.byzantine
