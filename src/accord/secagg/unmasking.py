"""The reveal phase's bookkeeping at the aggregator (ServerSession, after ``unmask_request()``):
the revealed shares of each secret, the survivors' corrections, and from them which secrets
must be rebuilt and which pairwise masks expanded.

A survivor's correction (SiteSession.correction) is its pairwise masks with its routed senders
named dropped, summed as it added them; the unmasking subtracts every correction from the
masked sum and expands a dropped site's pair mask with a survivor only where that survivor
sent none (it dropped in this phase, or its reply was refused). So a dropped site's mask-key
seed needs its share threshold of reveals only while some survivor that added its pair mask
has not corrected; every survivor's self-mask seed always needs its threshold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from accord.secagg import crypto
from accord.secagg.messages import SHARE_BYTES


class Unmasking:
    """One round's unmasking over ``survivors`` and ``dropped``; ``routed`` maps each survivor
    to the senders whose shares the aggregator routed to it (it added a pair mask with each)."""

    def __init__(
        self,
        share_threshold: int,
        survivors: Sequence[str],
        dropped: Sequence[str],
        routed: Mapping[str, Mapping[str, object]],
        length: int,
    ) -> None:
        self.share_threshold = share_threshold
        self.survivors, self.dropped = list(survivors), list(dropped)
        gone = set(dropped)
        #: survivor -> the dropped senders it added a pair mask with
        self._pairs = {site: [owner for owner in routed[site] if owner in gone] for site in survivors}
        #: dropped site -> the survivors that added its pair mask, in survivor order
        self._holders: dict[str, list[str]] = {owner: [] for owner in dropped}
        for site, owners in self._pairs.items():
            for owner in owners:
                self._holders[owner].append(site)
        #: dropped site -> how many of its holders have sent no correction yet
        self._uncorrected = {owner: len(holders) for owner, holders in self._holders.items()}
        #: the checked reveals as they came, one (owners, indices, shares joined) a revealer
        self._columns: list[tuple[list[str], list[int], bytes]] = []
        #: owner -> how many of its shares were revealed
        self._count: dict[str, int] = {}
        self.corrected: set[str] = set()
        #: the corrections taken, summed (mod 2^64)
        self.correction = np.zeros(length + 1, dtype=np.uint64)
        #: secrets still needed and short of their share threshold (``ready`` at 0)
        self._short = len(self.survivors) + sum(1 for count in self._uncorrected.values() if count)

    def _needed(self, owner: str) -> bool:
        """Whether ``owner``'s secret must be rebuilt: a survivor's self-mask seed always, a
        dropped site's mask-key seed while a survivor that added its pair mask did not correct."""
        return owner not in self._uncorrected or self._uncorrected[owner] > 0

    def _has_threshold(self, owner: str) -> bool:
        return self._count.get(owner, 0) >= self.share_threshold

    def take_shares(self, owners: Sequence[str], indices: Sequence[int], shares: bytes) -> None:
        """Fold one revealer's checked reveals: the share of ``owners[i]`` at ``indices[i]`` is
        ``shares[i * SHARE_BYTES : (i + 1) * SHARE_BYTES]`` (a holder reveals an owner's share once)."""
        self._columns.append((list(owners), list(indices), shares))
        count, threshold = self._count, self.share_threshold
        for owner in owners:
            seen = count[owner] = count.get(owner, 0) + 1
            if seen == threshold and self._needed(owner):
                self._short -= 1

    def take_correction(self, site: str, correction: np.ndarray) -> None:
        """Fold survivor ``site``'s correction (checked: uint64, the right length; once): its
        pairs with the dropped need no expansion now."""
        self.correction += correction
        self.corrected.add(site)
        for owner in self._pairs[site]:
            self._uncorrected[owner] -= 1
            if not self._uncorrected[owner] and not self._has_threshold(owner):
                self._short -= 1

    @property
    def ready(self) -> bool:
        """Whether every needed secret has its share threshold of reveals."""
        return self._short == 0

    def short(self) -> list[str]:
        """The needed secrets' owners short of their share threshold (survivors first)."""
        return [owner for owner in (*self.survivors, *self.dropped) if self._needed(owner) and not self._has_threshold(owner)]

    def secrets(self) -> dict[str, list[tuple[int, bytes]]]:
        """Owner -> its revealed (index, share) pairs, for every secret to rebuild: the dropped
        sites whose mask keys are needed, then every survivor."""
        wanted: dict[str, list[tuple[int, bytes]]] = {owner: [] for owner in self.dropped if self._needed(owner)}
        wanted.update((owner, []) for owner in self.survivors)
        for owners, indices, shares in self._columns:
            for at, (owner, index) in enumerate(zip(owners, indices)):
                found = wanted.get(owner)
                if found is not None:
                    found.append((index, shares[at * SHARE_BYTES : (at + 1) * SHARE_BYTES]))
        return {owner: sorted(found) for owner, found in wanted.items()}

    def pairs(self, rebuilt: Mapping[str, bytes], s_pk: Mapping[str, bytes]) -> list[crypto.DroppedPair]:
        """The pairwise masks to expand: each needed dropped site's (its ``rebuilt`` mask-key seed)
        with each survivor that added it and sent no correction (``s_pk``: the sites' mask keys)."""
        return [
            (rebuilt[owner], owner, s_pk[site], site)
            for owner in self.dropped
            if self._needed(owner)
            for site in self._holders[owner]
            if site not in self.corrected
        ]
