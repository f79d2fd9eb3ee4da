"""Bulyan (El Mhamdi et al. 2018): Krum selections, then a trimmed mean around the median."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from accord.aggregation.bounds import Weighted
from accord.aggregation.robust import Rule, across, gram_matrix, middle, squared_distances
from accord.strategies.krum import krum_scores, not_selected
from accord.strategies.robust import RobustStrategy, Rules, require


def closest_to_median_mean(chosen: Sequence[int], count: int) -> Rule:
    """The coordinate-wise mean of the ``count`` values of the ``chosen`` updates nearest their median.

    Sorted, those values are a run: of the runs of ``count`` (2f + 1 of them), the one whose
    farther end is nearest the median (the first of equals); each run's sum is the previous
    one's with one value out and one in.
    """
    rows = np.asarray(chosen)

    def rule(changes: np.ndarray) -> np.ndarray:
        ordered = across(changes[rows])
        median = middle(ordered)
        runs = range(len(ordered) - count + 1)
        reach = np.stack([np.maximum(median - ordered[k], ordered[k + count - 1] - median) for k in runs])
        sums = [ordered[:count].sum(axis=0)]
        for k in runs[1:]:
            sums.append(sums[-1] - ordered[k - 1] + ordered[k + count - 1])
        return np.take_along_axis(np.stack(sums), np.argmin(reach, axis=0)[None], axis=0)[0] / count

    return rule


class Bulyan(RobustStrategy):
    """Select theta = n - 2f updates by Krum, one at a time (each time among those left, with
    scores over at least one neighbour), then at each coordinate take the mean of the
    beta = theta - 2f selected values nearest their median. f (``byzantine``) is the number of
    hostile sites tolerated; it needs n >= 4f + 3. The optimizer state takes the coordinate-
    wise median of all updates (strategies/robust.py)."""

    def __init__(self, byzantine: int = 1) -> None:
        require(byzantine >= 0, "Bulyan", "byzantine", byzantine, "at least 0 (the hostile sites tolerated)")
        self.byzantine = byzantine

    def min_replies(self, cohort_size: int) -> int:
        return 4 * self.byzantine + 3

    def rules(self, global_model: Mapping[str, np.ndarray], weighted: Sequence[Weighted]) -> Rules:
        distances = squared_distances(gram_matrix(global_model, weighted))
        theta = len(weighted) - 2 * self.byzantine
        left, chosen = list(range(len(weighted))), list[int]()
        while len(chosen) < theta:
            scores = krum_scores(distances[np.ix_(left, left)], self.byzantine)
            chosen.append(left.pop(int(np.argmin(scores))))
        chosen.sort()
        rule = closest_to_median_mean(chosen, theta - 2 * self.byzantine)
        detail = f"{self!r} selected {theta} of {len(weighted)} updates by Krum, one at a time (the score shown: among all)"
        return Rules(rule, events=not_selected(weighted, krum_scores(distances, self.byzantine), chosen, detail))
