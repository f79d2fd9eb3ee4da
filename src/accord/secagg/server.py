"""ServerSession: the aggregator's side of a SecAgg+ round (pure: it only routes and sums).

Phase by phase: ``add_advert`` until ``roster()`` closes the adverts; ``add_shares`` until the
first ``shares_for`` closes the sharing; ``add_masked`` (a running sum in Z_{2^64}, O(model) per
result) until ``unmask_request()`` closes the masking; ``add_reveal`` until ``result()``. Sites
may drop at every phase: one that advertised but did not share is left out of the graph's masks,
one that shared but did not mask has its pairwise masks removed from its mask-key shares, one
that masked but did not reveal still has its self mask removed from its neighbours' shares.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from accord.secagg.params import SecAggParams


class ServerSession:
    """The aggregator's state for one SecAgg+ round over ``cohort`` (see SiteSession for the rest)."""

    def __init__(self, params: SecAggParams, cohort: Sequence[str], round_seed: bytes, length: int) -> None:
        raise NotImplementedError

    def add_advert(self, site: str, advert: bytes) -> None:
        """Take ``site``'s advert (once; refused after ``roster()``, or from outside the cohort)."""
        raise NotImplementedError

    def roster(self) -> dict[str, bytes]:
        """Close the adverts: every advertised site's advert (refused below the threshold)."""
        raise NotImplementedError

    def add_shares(self, site: str, sealed: Mapping[str, bytes]) -> None:
        """Take ``site``'s sealed shares (one per neighbour of it, exactly; once; refused after the
        first ``shares_for``)."""
        raise NotImplementedError

    def shares_for(self, site: str) -> dict[str, bytes]:
        """The sealed shares addressed to ``site`` (sender -> bytes); the first call closes sharing.

        Refused for a site that did not share, or when fewer than the threshold shared.
        """
        raise NotImplementedError

    def add_masked(self, site: str, masked: np.ndarray) -> None:
        """Fold ``site``'s masked vector (uint64, length + 1) into the running sum (once; only
        from a site that shared; refused after ``unmask_request()``)."""
        raise NotImplementedError

    def unmask_request(self) -> tuple[list[str], list[str]]:
        """Close the masking: (survivors: the sites that masked, dropped: shared but did not mask).
        Refused below the threshold. The same answer on every call."""
        raise NotImplementedError

    def add_reveal(self, site: str, reveals: Mapping[str, bytes]) -> None:
        """Take a surviving ``site``'s reveals (owner -> reveal bytes; once; refused after
        ``result()``). Each must be the share kind asked for, at the index ``site`` holds."""
        raise NotImplementedError

    def result(self) -> tuple[np.ndarray, float]:
        """(weighted sum as float64 of ``length`` values, total weight): the survivors' sum of
        weight * clipped update, masks removed. Refused while some survivor's self-mask seed or
        some dropped site's mask-key seed has fewer revealed shares than its share threshold."""
        raise NotImplementedError
