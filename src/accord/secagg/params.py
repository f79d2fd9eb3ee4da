"""SecAggParams: the thresholds, neighbourhood size and fixed-point ring of a SecAgg+ round.

The ring is Z_{2^64}: NumPy uint64 arithmetic wraps around modulo 2^64 natively, so masking and
summing are single vectorised adds (a prime field would need a modular reduction per element and
Python-int or object arrays for a 64-bit prime). A value x (clipped to [-clip, clip]) from a site
of weight w (its sample count) is encoded as round(w * x * 2^fraction_bits) in two's complement;
the sum decodes correctly as long as |sum| < 2^63, which ``check_capacity`` guarantees from
cohort * max_weight * clip * 2^fraction_bits.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from accord.errors import AccordError

RING_BITS = 64
"""The ring is Z_{2^RING_BITS}; values are two's-complement int64 viewed as uint64."""

MAX_DEGREE = 65_535
"""The most neighbours a site may have: Shamir share indices travel as 16-bit numbers."""

DROPOUT_FRACTION = 1 / 3
"""The share of a cohort ``for_cohort`` sizes the threshold and neighbourhoods for by default (dropping at random)."""

FAILURE_LOG2 = -20
"""``for_cohort`` picks a neighbourhood where its dropouts, at random, leave some site with too
few live neighbours to unmask with probability below 2^FAILURE_LOG2 per round."""


@dataclass(frozen=True)
class SecAggParams:
    """The settings of a SecAgg+ round (validated on construction; AccordError names the fix).

    ``threshold`` (t): the fewest sites whose masked updates the sum must hold; below it the sites
    refuse to reveal shares and the server refuses to unmask. ``neighbours`` (k): how many sites
    each site shares its secrets with and masks against (a random k-regular graph, k even);
    k >= cohort - 1 is plain SecAgg (everyone with everyone). Each site's secrets are Shamir-shared
    among its neighbours with threshold ``share_threshold(degree)`` = a strict majority of them, so
    a server that asks honest neighbours inconsistent questions cannot collect a threshold of both
    kinds of shares of one site. ``clip``: values are clipped to [-clip, clip] before encoding.
    ``fraction_bits``: fixed-point precision (resolution 2^-fraction_bits per unit of weight).
    ``max_weight``: the largest weight (sample count) a site may declare.
    """

    threshold: int
    neighbours: int
    clip: float
    fraction_bits: int = 24
    max_weight: int = 1_000_000

    def __post_init__(self) -> None:
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, int) or self.threshold < 2:
            raise AccordError(
                f"secure aggregation threshold is {self.threshold!r}; it must be an integer >= 2",
                "set the threshold to at least 2 (a sum of one site is that site's update); "
                "SecAggParams.for_cohort(n) derives ceil(2n/3)",
            )
        if isinstance(self.neighbours, bool) or not isinstance(self.neighbours, int) or self.neighbours < 2:
            raise AccordError(
                f"secure aggregation neighbours is {self.neighbours!r}; it must be an integer >= 2",
                "set neighbours to an even number >= 2, or to cohort size - 1 for plain SecAgg",
            )
        if not isinstance(self.clip, int | float) or isinstance(self.clip, bool) or not (
            math.isfinite(self.clip) and self.clip > 0
        ):
            raise AccordError(
                f"secure aggregation clip is {self.clip!r}; it must be a finite number > 0",
                "set clip to the largest absolute value an update element may take (e.g. 1.0)",
            )
        if isinstance(self.fraction_bits, bool) or not isinstance(self.fraction_bits, int) or not (
            0 <= self.fraction_bits <= 52
        ):
            raise AccordError(
                f"secure aggregation fraction_bits is {self.fraction_bits!r}; it must be an integer in [0, 52]",
                "set fraction_bits to e.g. 24 (resolution 6e-8)",
            )
        if isinstance(self.max_weight, bool) or not isinstance(self.max_weight, int) or self.max_weight < 1:
            raise AccordError(
                f"secure aggregation max_weight is {self.max_weight!r}; it must be an integer >= 1",
                "set max_weight to the largest sample count a site may report",
            )

    @classmethod
    def for_cohort(
        cls,
        cohort_size: int,
        *,
        clip: float = 1.0,
        fraction_bits: int = 24,
        max_weight: int = 1_000_000,
        dropout: float = DROPOUT_FRACTION,
    ) -> SecAggParams:
        """Defaults for a cohort of ``cohort_size`` sites, ``dropout`` of which may drop (a third).

        threshold t = ceil((1 - dropout) n), at least 2. neighbours k: the smallest even k
        (SecAgg+'s k = O(log n)) for which, with ``dropout`` of the sites dropping at random, the
        chance that some site keeps fewer live neighbours than its share threshold (a majority
        of k) is below 2^-20; when no k < n - 1 achieves that, k = n - 1 (plain SecAgg, which
        survives any third dropping). With a third dropping that is plain SecAgg up to about 300
        sites: the majority threshold needs k of a few hundred to tolerate a third reliably;
        with 10% dropping, k is 34 at 100 sites and 42 at 10,000. Plain SecAgg survives
        floor(n/3) sites dropping from 4 sites up; at 3 sites, none may drop.
        """
        if isinstance(cohort_size, bool) or not isinstance(cohort_size, int) or cohort_size < 3:
            raise AccordError(
                f"secure aggregation needs a cohort of at least 3 sites, not {cohort_size!r}",
                "select at least 3 sites per round for secure aggregation",
            )
        if not isinstance(dropout, int | float) or not 0 <= dropout < 0.5:
            raise AccordError(
                f"secure aggregation dropout is {dropout!r}; it must be in [0, 0.5)",
                "set the share of the cohort that may drop, e.g. 1/3 (a majority must survive to unmask)",
            )
        threshold, neighbours = default_threshold(cohort_size, dropout), _neighbourhood_size(cohort_size, dropout)
        params = cls(threshold, neighbours, clip, fraction_bits, max_weight)
        params.check_capacity(cohort_size)
        return params

    @property
    def scale(self) -> float:
        """The fixed-point scale, 2^fraction_bits."""
        return float(2**self.fraction_bits)

    def degree(self, roster_size: int) -> int:
        """How many neighbours each site of a roster of ``roster_size`` has.

        roster - 1 when k >= roster - 1 (plain SecAgg); otherwise k rounded down to even (the
        graph is a ring where each site links to k/2 sites on each side).
        """
        if self.neighbours >= roster_size - 1:
            return roster_size - 1
        return self.neighbours - self.neighbours % 2

    @staticmethod
    def share_threshold(degree: int) -> int:
        """Shares needed to rebuild one site's secret: a strict majority of its ``degree`` neighbours."""
        return degree // 2 + 1

    def check_capacity(self, cohort_size: int) -> None:
        """Refuse a cohort whose largest possible sum could wrap the ring (AccordError with the fix).

        The largest |sum| is cohort * max_weight * clip * 2^fraction_bits (plus rounding); it must
        stay below 2^63 so the two's-complement decode is exact.
        """
        bound = cohort_size * self.max_weight * (self.clip * self.scale + 1)
        if bound >= 2.0 ** (RING_BITS - 1):
            room = math.floor(math.log2(2.0 ** (RING_BITS - 1) / (cohort_size * self.max_weight * max(self.clip, 1e-300))))
            raise AccordError(
                f"secure aggregation cannot hold the sum: {cohort_size} sites x max_weight {self.max_weight} "
                f"x clip {self.clip} x 2^{self.fraction_bits} reaches 2^{math.log2(bound):.1f}, past the ring's 2^63",
                f"lower fraction_bits to {max(room - 1, 0)} or less, or lower max_weight or clip",
            )


def default_threshold(cohort_size: int, dropout: float = DROPOUT_FRACTION) -> int:
    """``for_cohort``'s threshold for ``cohort_size`` sites: ceil((1 - dropout) n), at least 2."""
    return max(2, math.ceil((1 - dropout) * cohort_size - 1e-9))


@functools.lru_cache(maxsize=256)
def _neighbourhood_size(cohort_size: int, dropout: float) -> int:
    """The smallest even k meeting ``for_cohort``'s failure bound, else cohort_size - 1 (kept: a
    federation asks again each round, and the search costs O(k^2) log-gammas)."""
    for k in range(2, cohort_size - 1, 2):
        if failure_log2(cohort_size, k, dropout) < FAILURE_LOG2:
            return k
    return cohort_size - 1


def failure_log2(cohort_size: int, degree: int, dropout: float) -> float:
    """log2 of the chance that, with ``dropout`` of a cohort of ``cohort_size`` dropping at random,
    some site of a ``degree``-regular neighbourhood keeps fewer live neighbours than its share
    threshold (a majority of ``degree``): Bell et al. 2020's correctness event, bounded by the
    union over the sites of the binomial tail P[Bin(degree, 1 - dropout) < degree // 2 + 1].
    Summed in log space, so it holds for any degree (math.comb overflows a float past ~1,030)."""
    need = SecAggParams.share_threshold(degree)
    if dropout <= 0:
        return -math.inf
    live, dead = math.log(1 - dropout), math.log(dropout)
    logs = [math.lgamma(degree + 1) - math.lgamma(j + 1) - math.lgamma(degree - j + 1) + j * live + (degree - j) * dead for j in range(need)]
    top = max(logs)
    return (math.log(cohort_size) + top + math.log(sum(math.exp(term - top) for term in logs))) / math.log(2)


def check_session(params: SecAggParams, cohort: Sequence[str], round_seed: bytes, length: int) -> tuple[str, ...]:
    """The cohort as a tuple of names, after checking a session's inputs (AccordError naming the fix)."""
    if isinstance(cohort, str | bytes) or not all(isinstance(name, str) and name for name in cohort):
        raise AccordError("the secure aggregation cohort must be a list of site names", "pass the names the round selected")
    names = tuple(cohort)
    if len(set(names)) != len(names):
        raise AccordError("the secure aggregation cohort names a site twice", "pass each selected site once")
    if not isinstance(round_seed, bytes) or not 16 <= len(round_seed) <= 64:
        raise AccordError("the secure aggregation round seed must be 16 to 64 bytes", "derive it from the plan hash and the round number")
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise AccordError(f"the secure aggregation length is {length!r}; it must be a positive integer", "pass the number of model values")
    if len(names) < params.threshold:
        raise AccordError(
            f"the cohort has {len(names)} sites, fewer than the secure aggregation threshold {params.threshold}",
            "select at least threshold sites per round, or lower the threshold",
        )
    if params.degree(len(names)) > MAX_DEGREE:
        raise AccordError(
            f"secure aggregation neighbours is {params.neighbours}: more than {MAX_DEGREE} neighbours per site",
            f"set neighbours to at most {MAX_DEGREE} (SecAggParams.for_cohort picks a few hundred at most)",
        )
    params.check_capacity(len(names))
    return names
