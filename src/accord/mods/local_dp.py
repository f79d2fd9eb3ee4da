"""LocalDP: local differential privacy at the site level, as one mod: this site's update is
clipped to L2 norm ``max_norm`` (ClipUpdate), then Gaussian noise of std z x ``max_norm`` is
added (LocalGaussianNoise), so the order is right by construction. Its own (epsilon, delta) is
reported in the training reply's metrics (``local_dp_epsilon``), by dp-accounting.

The guarantee is against whoever sees this site's update (the aggregator's operator, an
eavesdropper past TLS): replacing all of this site's data moves its clipped update by at most
2 ``max_norm``, so one round is a Gaussian mechanism of multiplier z / 2 (replace-one), and
every noised training reply this site sent is one release: the epsilon reported composes all
of them, a round asked twice (a restarted or failed secure round) counting twice. The releases
are counted in the site's own state folder (dp/ledger.py), so a restarted site goes on from
its count. With ``epsilon`` and ``rounds`` the budget is enforced: after ``rounds`` releases the
site refuses to train (BudgetSpent, reported to the aggregator). A planned ``seed`` (tests
only) lets whoever has the plan remove the noise: the epsilon reported is then infinite.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from accord.dp.accountant import RoundMechanism, Rounds, noise_multiplier_for
from accord.dp.ledger import BudgetSpent, Ledger
from accord.dp.seeds import check_seed
from accord.errors import AccordError
from accord.messages import TaskResult
from accord.mods.base import CallNext, Instruction, Mod
from accord.mods.clip_update import ClipUpdate
from accord.mods.gaussian_noise import LocalGaussianNoise

FIX = "set collaborator.settings.mods[].settings of accord.mods.LocalDP"


class LocalDP(Mod):
    """Clip, then noise, this site's update; the noise from ``noise_multiplier`` z, or
    calibrated so that ``rounds`` rounds spend ``epsilon`` at ``delta``."""

    adds_noise = True

    def __init__(
        self,
        max_norm: float,
        noise_multiplier: float | None = None,
        epsilon: float | None = None,
        rounds: int | None = None,
        delta: float = 1e-5,
        seed: int | None = None,
        seed_for_tests_only: bool = False,
    ) -> None:
        if (noise_multiplier is None) == (epsilon is None):
            raise AccordError(
                "LocalDP needs exactly one of noise_multiplier and epsilon", FIX + ": noise_multiplier, or epsilon with rounds"
            )
        if not 0 < delta < 1:
            raise AccordError(f"LocalDP delta is {delta}; it must be in (0, 1)", FIX + ": delta")
        if epsilon is not None:
            if not (math.isfinite(epsilon) and epsilon > 0) or rounds is None or rounds < 1:
                raise AccordError(
                    f"LocalDP epsilon is {epsilon} over rounds {rounds}; it needs a finite epsilon > 0 and rounds >= 1",
                    FIX + ": epsilon and rounds (the rounds this site trains, its budget spread over them)",
                )
            noise_multiplier = noise_multiplier_for(epsilon, delta, rounds, 1, 1)
        assert noise_multiplier is not None
        if not (math.isfinite(noise_multiplier) and noise_multiplier > 0):
            raise AccordError(
                f"LocalDP noise_multiplier is {noise_multiplier}; it must be a finite number > 0", FIX + ": noise_multiplier"
            )
        check_seed(type(self).__name__, "collaborator.settings.mods[].settings", seed, seed_for_tests_only)
        self.clip = ClipUpdate(max_norm)
        self.noise = LocalGaussianNoise(noise_multiplier * self.clip.max_norm, seed, seed_for_tests_only)
        self.noise_multiplier, self.delta = noise_multiplier, delta
        #: the releases the budget allows (None: no budget planned, only reported)
        self.budget = rounds if epsilon is not None else None
        self.epsilon = epsilon
        self._kept: Ledger | None = None
        self._in_memory: dict[str, Ledger] = {}

    def keep_state_in(self, folder: Path) -> None:
        """Count this site's releases in ``folder`` (its own state), from what it spent before."""
        self._kept = Ledger(folder / "local_dp.json")

    def ledger(self, site: str) -> Ledger:
        """``site``'s releases: the kept ledger (a deployed site), else one in memory per site
        name (the simulation runs many sites through one mod)."""
        return self._kept if self._kept is not None else self._in_memory.setdefault(site, Ledger())

    def epsilon_after(self, releases: int) -> float:
        """This site's epsilon at ``delta`` after ``releases`` noised training replies (infinite
        when the noise is seeded from the plan: whoever has the plan can remove it)."""
        if self.noise.seed is not None:
            return math.inf
        return Rounds([(releases, RoundMechanism(1, 1, (self.noise_multiplier / 2,)))]).epsilon(self.delta)

    def __call__(self, instruction: Instruction, call_next: CallNext) -> TaskResult:
        ledger = self.ledger(instruction.collaborator)
        spent = len(ledger.rows)
        if instruction.trains and self.budget is not None and spent >= self.budget:
            raise BudgetSpent(
                f"LocalDP's privacy budget is spent: {spent} noised updates sent of the {self.budget} that "
                f"epsilon {self.epsilon:g} (delta {self.delta:g}) allows; round {instruction.round_number} not trained",
                "start a new federation with a new budget (this site's count is in its state folder), or raise "
                "LocalDP's rounds and epsilon in the plan",
            )
        result = self.noise(instruction, lambda inner: self.clip(inner, call_next))
        if not instruction.trains or not result.tensors:
            return result
        ledger.add([instruction.round_number, instruction.task.name])  # before the reply leaves
        metrics = {**result.metrics, "local_dp_epsilon": self.epsilon_after(spent + 1)}
        return dataclasses.replace(result, metrics=metrics)
