"""SiteSession: one honest site's side of a SecAgg+ round, one method per phase.

Phases, in order (each refuses out-of-order or malformed input with SecAggRefused):
1. ``advertise()``: the advert message (two X25519 public keys).
2. ``share(roster)``: sealed shares of its secrets for each neighbour.
3. ``mask(shares_for_me, update, weight)``: the masked, fixed-point encoded weighted update.
4. ``unmask(survivors, dropped)``: reveals, answered once, never both secrets of one site.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from accord.secagg.params import SecAggParams


class SiteSession:
    """The state of one site in one SecAgg+ round.

    ``site`` is this site's name, ``cohort`` the names the round selected, ``round_seed`` bytes
    every party agrees on for this round (e.g. derived from the plan hash and round number; it
    fixes the neighbourhood graph and binds every key derivation to the round), ``length`` the
    number of model values the update holds. ``seed`` (tests only) makes the secrets
    deterministic; None draws them from the OS's entropy.
    """

    def __init__(
        self,
        params: SecAggParams,
        site: str,
        cohort: Sequence[str],
        round_seed: bytes,
        length: int,
        *,
        seed: bytes | None = None,
    ) -> None:
        raise NotImplementedError

    def advertise(self) -> bytes:
        """Phase 1: the advert message (c_pk for share encryption, s_pk for masks)."""
        raise NotImplementedError

    def share(self, roster: Mapping[str, bytes]) -> dict[str, bytes]:
        """Phase 2: given every advertised site's advert (``roster``, including this site's own,
        unchanged), one sealed share message per neighbour (neighbour name -> bytes).

        Refuses a roster smaller than the threshold, naming sites outside the cohort, or
        carrying a different advert for this site.
        """
        raise NotImplementedError

    def mask(self, shares_for_me: Mapping[str, bytes], update: np.ndarray, weight: int) -> np.ndarray:
        """Phase 3: the masked vector (uint64, ``length`` + 1 values: weight * clipped update in
        fixed point, then the weight) given the sealed shares neighbours sent this site.

        Refuses shares from non-neighbours, ones that do not decrypt under this round, sender and
        receiver, fewer than a majority of its neighbours (its update would be too weakly masked),
        an update of the wrong size or with NaN/inf, and a weight outside [1, max_weight].
        """
        raise NotImplementedError

    def unmask(self, survivors: Sequence[str], dropped: Sequence[str]) -> dict[str, bytes]:
        """Phase 4: reveal messages (owner site -> bytes): its share of each surviving
        neighbour's self-mask seed b and of each dropped neighbour's mask-key seed s.

        Answers once. Refuses a site named both survivor and dropped, survivors fewer than the
        threshold, this site not among the survivors, names outside the roster, and a neighbour
        whose shares it holds named neither (every such site must be accounted for).
        """
        raise NotImplementedError
