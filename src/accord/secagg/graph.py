"""The SecAgg+ neighbourhood: a random k-regular graph over the sites that advertised.

Every party computes the same graph from the round seed and the roster alone: the roster is
ordered by SHA-256(round seed | name) (a permutation nobody chooses after seeing the seed),
placed on a ring, and each site links to the k/2 sites on either side (a Harary graph; Bell et
al. 2020 use such a random k-regular graph). With k >= roster - 1 every site links to every
other (plain SecAgg). A site's Shamir shares need a majority of the neighbours it would have in
the whole cohort, however few sites the roster holds (a shrunk roster must not let fewer
colluders rebuild a site's secrets). A site's Shamir shares go to its neighbours only; the neighbour at
position i of the owner's sorted neighbour list holds the share with index i + 1.

The ring order costs O(n log n); a site's neighbours are worked out when first asked for (a site
asks for its own and its neighbours', the server for everyone's), so a site's work does not
grow with n * k.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable

from accord.secagg.params import SecAggParams


class Neighbourhood:
    """Who neighbours whom in one round, and which Shamir index each holder holds."""

    def __init__(self, params: SecAggParams, roster: Iterable[str], round_seed: bytes, cohort_size: int | None = None) -> None:
        names = sorted(set(roster))
        self._order = sorted(names, key=lambda name: hashlib.sha256(round_seed + b"\x00" + name.encode("utf-8")).digest())
        self._position = {name: at for at, name in enumerate(self._order)}
        #: each name's rank in name order (the complete graph's Shamir indices follow from it)
        self._rank = {name: at for at, name in enumerate(names)}
        self.degree = params.degree(len(self._order))
        #: a majority of the degree the whole cohort (``cohort_size``; None: the roster) would give:
        #: a roster the aggregator shrinks lowers the degree, never the shares a secret needs
        self.share_threshold = params.share_threshold(params.degree(len(self._order) if cohort_size is None else cohort_size))
        self._neighbours: dict[str, tuple[str, ...]] = {}

    def __contains__(self, site: object) -> bool:
        return site in self._position

    def of(self, site: str) -> tuple[str, ...]:
        """The neighbours of ``site`` (sorted by name)."""
        linked = self._neighbours.get(site)
        if linked is None:
            at, size = self._position[site], len(self._order)
            if self.degree == size - 1:
                linked = tuple(sorted(name for name in self._order if name != site))
            else:
                half = self.degree // 2
                linked = tuple(sorted(self._order[(at + step) % size] for step in range(-half, half + 1) if step))
            self._neighbours[site] = linked
        return linked

    def index(self, owner: str, holder: str) -> int | None:
        """The Shamir index ``holder`` holds of ``owner``'s secrets (None if not neighbours)."""
        if self.degree == len(self._order) - 1:  # everyone neighbours everyone: O(1), no list made
            low, high = self._rank.get(owner), self._rank.get(holder)
            if low is None or high is None or low == high:
                return None
            return high + (0 if high < low else -1) + 1
        linked = self.of(owner)
        at = bisect.bisect_left(linked, holder)
        return at + 1 if at < len(linked) and linked[at] == holder else None
