"""ClipUpdate: bound the L2 norm of this site's update before it leaves the site."""

from __future__ import annotations

import logging
import math

from accord.errors import AccordError
from accord.messages import TaskResult
from accord.mods._update import changes, with_changes
from accord.mods.base import CallNext, Instruction, Mod

log = logging.getLogger("accord.mods")


class ClipUpdate(Mod):
    """Scale a training reply's update (trained - global, or the delta itself; float tensors,
    optimizer state excluded) so that its L2 norm over all those tensors is at most
    ``max_norm``. An update already within the bound is sent unchanged, bit for bit."""

    clips = True

    def __init__(self, max_norm: float) -> None:
        if not (math.isfinite(max_norm) and max_norm > 0):
            raise AccordError(
                f"ClipUpdate max_norm is {max_norm}; it must be a finite number > 0",
                "set collaborator.settings.mods[].settings.max_norm",
            )
        self.max_norm = float(max_norm)

    def __call__(self, instruction: Instruction, call_next: CallNext) -> TaskResult:
        result = call_next(instruction)
        if not instruction.trains or not result.tensors:
            return result
        norm = math.sqrt(sum(float((change * change).sum()) for _, change in changes(instruction, result)))
        if norm <= self.max_norm:
            return result
        scale = self.max_norm / norm
        log.info(
            "%s: the %s update's norm %.6g is clipped to %.6g", instruction.collaborator, instruction.task.name, norm, self.max_norm
        )
        return with_changes(instruction, result, ((name, change * scale) for name, change in changes(instruction, result)))
