"""The SecAgg+ neighbourhood: a random k-regular graph over the sites that advertised.

Every party computes the same graph from the round seed and the roster alone: the roster is
ordered by SHA-256(round seed | name) (a permutation nobody chooses after seeing the seed),
placed on a ring, and each site links to the k/2 sites on either side (a Harary graph; Bell et
al. 2020 use such a random k-regular graph). With k >= roster - 1 every site links to every
other (plain SecAgg). A site's Shamir shares go to its neighbours only; the neighbour at
position i of the owner's sorted neighbour list holds the share with index i + 1.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from accord.secagg.params import SecAggParams


class Neighbourhood:
    """Who neighbours whom in one round, and which Shamir index each holder holds."""

    def __init__(self, params: SecAggParams, roster: Iterable[str], round_seed: bytes) -> None:
        names = sorted(set(roster))
        order = sorted(names, key=lambda name: hashlib.sha256(round_seed + b"\x00" + name.encode("utf-8")).digest())
        size = len(order)
        self.degree = params.degree(size)
        self.share_threshold = params.share_threshold(self.degree)
        half = self.degree // 2
        self._neighbours: dict[str, tuple[str, ...]] = {}
        for at, name in enumerate(order):
            if self.degree == size - 1:
                linked = [other for other in order if other != name]
            else:
                linked = [order[(at + step) % size] for step in range(-half, half + 1) if step]
            self._neighbours[name] = tuple(sorted(linked))
        self._index = {name: {holder: i + 1 for i, holder in enumerate(linked)} for name, linked in self._neighbours.items()}

    def __contains__(self, site: object) -> bool:
        return site in self._neighbours

    def of(self, site: str) -> tuple[str, ...]:
        """The neighbours of ``site`` (sorted)."""
        return self._neighbours[site]

    def index(self, owner: str, holder: str) -> int | None:
        """The Shamir index ``holder`` holds of ``owner``'s secrets (None if not neighbours)."""
        return self._index[owner].get(holder)
