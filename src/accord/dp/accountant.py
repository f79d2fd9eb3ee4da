"""The privacy accountant: (epsilon, delta) of rounds of a subsampled Gaussian mechanism,
computed by Google's ``dp-accounting`` (RDP; the optional extra ``accord[dp]``).

A round of central DP (strategies/dp_fedavg.py) asks a fixed-size cohort of ``sample_size`` of
the ``population`` registered sites, drawn uniformly without replacement (the plan's
``aggregator.settings.sampling``), and releases one Gaussian sum. The population is public (the
plan lists every site), so the neighbouring relation is *replace one site's data*: dp-accounting's
``SampledWithoutReplacementDpEvent`` under ``REPLACE_ONE`` (Wang, Balle and Kasiviswanathan
2019), whose Gaussian noise multiplier is the noise's standard deviation over the L2 sensitivity
under replacement: 2 C for a sum of updates clipped to C, 1 for a count of 0/1 bits.

``Rounds`` is the accountant's whole state: run-length rows ``(count, sample_size, population,
noise multipliers...)``, plain JSON, journaled with the strategy's snapshot.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from accord.imports import optional_module

_INSTALL_FIX = "install the differential-privacy extra: pip install 'accord[dp]' (dp-accounting)"


def _dp_accounting() -> Any:
    return optional_module("dp_accounting", "differential privacy", _INSTALL_FIX)


@dataclass(frozen=True)
class RoundMechanism:
    """One round's release: a cohort of ``sample_size`` of ``population`` sites, and the noise
    multipliers of its Gaussian queries (noise std over replace-one sensitivity), composed."""

    sample_size: int
    population: int
    noise_multipliers: tuple[float, ...]

    def event(self) -> Any:
        """The dp-accounting event of this round."""
        dp = _dp_accounting()
        gaussians = [dp.GaussianDpEvent(z) for z in self.noise_multipliers]
        inner = gaussians[0] if len(gaussians) == 1 else dp.ComposedDpEvent(gaussians)
        if self.sample_size >= self.population:
            return inner
        return dp.SampledWithoutReplacementDpEvent(self.population, self.sample_size, inner)


@dataclass
class Rounds:
    """The rounds released so far, run-length encoded (identical rounds share a row)."""

    rows: list[tuple[int, RoundMechanism]] = field(default_factory=list)

    def add(self, mechanism: RoundMechanism) -> None:
        """Record one more released round."""
        if self.rows and self.rows[-1][1] == mechanism:
            self.rows[-1] = (self.rows[-1][0] + 1, mechanism)
        else:
            self.rows.append((1, mechanism))

    @property
    def count(self) -> int:
        """How many rounds were released."""
        return sum(count for count, _ in self.rows)

    def epsilon(self, delta: float, then: RoundMechanism | None = None) -> float:
        """Epsilon at ``delta`` of every round so far (and of one more, ``then``, if given)."""
        rows = self.rows + ([(1, then)] if then is not None else [])
        return _epsilon(tuple(rows), delta)

    def as_json(self) -> list[list[Any]]:
        """The rows as plain JSON (for the strategy's snapshot)."""
        return [[count, m.sample_size, m.population, list(m.noise_multipliers)] for count, m in self.rows]

    @classmethod
    def from_json(cls, rows: Sequence[Sequence[Any]]) -> Rounds:
        """Rows that ``as_json`` wrote."""
        return cls([(int(c), RoundMechanism(int(m), int(n), tuple(float(z) for z in zs))) for c, m, n, zs in rows])


@functools.lru_cache(maxsize=256)
def _epsilon(rows: tuple[tuple[int, RoundMechanism], ...], delta: float) -> float:
    """Epsilon at ``delta`` of ``rows``, computed once per distinct history (a round's stop
    check and its report ask for the same one); a round released without noise has none."""
    if not rows:
        return 0.0
    if any(z == 0 for _, mechanism in rows for z in mechanism.noise_multipliers):
        return math.inf
    accountant = new_accountant()
    for count, mechanism in rows:
        accountant.compose(mechanism.event(), count)
    return float(accountant.get_epsilon(delta))


def new_accountant() -> Any:
    """A fresh dp-accounting RDP accountant under the replace-one relation."""
    dp = _dp_accounting()
    return dp.rdp.RdpAccountant(neighboring_relation=dp.NeighboringRelation.REPLACE_ONE)


def noise_multiplier_for(target_epsilon: float, delta: float, rounds: int, sample_size: int, population: int) -> float:
    """The central-DP noise multiplier z (noise std z x C on a sum of updates clipped to C) whose
    ``rounds`` rounds spend ``target_epsilon`` at ``delta`` (dp-accounting's calibration)."""
    dp = _dp_accounting()

    def event(z: float) -> Any:
        return dp.SelfComposedDpEvent(RoundMechanism(sample_size, population, (z / 2,)).event(), rounds)

    return float(
        dp.calibrate_dp_mechanism(new_accountant, event, target_epsilon, delta, dp.LowerEndpointAndGuess(0.05, 1.0), tol=1e-4)
    )
