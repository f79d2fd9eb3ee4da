"""LocalDP: local differential privacy at the site level, as one mod: this site's update is
clipped to L2 norm ``max_norm`` (ClipUpdate), then Gaussian noise of std z x ``max_norm`` is
added (LocalGaussianNoise), so the order is right by construction. Its own (epsilon, delta) is
reported in the training reply's metrics (``local_dp_epsilon``), by dp-accounting.

The guarantee is against whoever sees this site's update (the aggregator's operator, an
eavesdropper past TLS): replacing all of this site's data moves its clipped update by at most
2 ``max_norm``, so one round is a Gaussian mechanism of multiplier z / 2 (replace-one), and
after round r it has composed r + 1 of them: an upper bound (a round this site sat out costs
it nothing, but a mod keeps no state across a restart, so it counts every round).
"""

from __future__ import annotations

import dataclasses
import math

from accord.dp.accountant import RoundMechanism, Rounds, noise_multiplier_for
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
        self.clip = ClipUpdate(max_norm)
        self.noise = LocalGaussianNoise(noise_multiplier * self.clip.max_norm, seed)
        self.noise_multiplier, self.delta = noise_multiplier, delta

    def epsilon_after(self, round_number: int) -> float:
        """This site's epsilon at ``delta`` after rounds 0..``round_number`` (every one counted)."""
        return Rounds([(round_number + 1, RoundMechanism(1, 1, (self.noise_multiplier / 2,)))]).epsilon(self.delta)

    def __call__(self, instruction: Instruction, call_next: CallNext) -> TaskResult:
        result = self.noise(instruction, lambda inner: self.clip(inner, call_next))
        if not instruction.trains or not result.tensors:
            return result
        metrics = {**result.metrics, "local_dp_epsilon": self.epsilon_after(instruction.round_number)}
        return dataclasses.replace(result, metrics=metrics)
