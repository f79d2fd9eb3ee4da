"""LocalGaussianNoise: Gaussian noise added to this site's update before it leaves the site
(local differential privacy's mechanism; put ClipUpdate before it to bound the sensitivity)."""

from __future__ import annotations

import hashlib
import logging
import math

import numpy as np

from accord.dp.seeds import check_seed
from accord.errors import AccordError
from accord.messages import TaskResult
from accord.mods._update import changes, with_changes
from accord.mods.base import CallNext, Instruction, Mod

log = logging.getLogger("accord.mods")


class LocalGaussianNoise(Mod):
    """Add independent N(0, ``std``²) noise to every element of a training reply's update
    (float tensors, optimizer state excluded).

    ``seed`` None (the default, and the right one for privacy): fresh operating-system entropy
    each time. An integer: reproducible noise, drawn from (seed, round, site name, task name),
    so two sites sharing the plan's seed still draw different noise, but everyone with the plan
    (the aggregator included) can draw it too and subtract it: the noise then protects nothing.
    A seed is refused unless ``seed_for_tests_only`` is also set, and warned about. This adds
    the noise; the privacy it buys (epsilon, delta) depends on the clipping bound, ``std`` and the rounds, and
    Accord does not account for it (LocalDP, mods/local_dp.py, does).
    """

    adds_noise = True

    def __init__(self, std: float, seed: int | None = None, seed_for_tests_only: bool = False) -> None:
        if not (math.isfinite(std) and std >= 0):
            raise AccordError(
                f"LocalGaussianNoise std is {std}; it must be a finite number >= 0",
                "set collaborator.settings.mods[].settings.std",
            )
        check_seed(type(self).__name__, "collaborator.settings.mods[].settings", seed, seed_for_tests_only)
        self.std = float(std)
        self.seed = seed

    def rng(self, instruction: Instruction) -> np.random.Generator:
        """The generator for this instruction's noise."""
        if self.seed is None:
            return np.random.default_rng()
        words = [_word(instruction.collaborator), _word(instruction.task.name)]
        return np.random.default_rng([self.seed, instruction.round_number, *words])

    def __call__(self, instruction: Instruction, call_next: CallNext) -> TaskResult:
        result = call_next(instruction)
        if not instruction.trains or not result.tensors or self.std == 0:
            return result
        rng = self.rng(instruction)
        noisy = ((name, change + rng.normal(0.0, self.std, change.shape)) for name, change in changes(instruction, result))
        noised = with_changes(instruction, result, noisy)
        log.info("%s: Gaussian noise (std %.6g) added to the %s update", instruction.collaborator, self.std, instruction.task.name)
        return noised


def _word(text: str) -> int:
    """A stable 64-bit number for ``text`` (Python's hash() changes between processes)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


