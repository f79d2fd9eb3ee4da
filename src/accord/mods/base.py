"""The site's narrow entry point: an :class:`Instruction` in, a TaskResult out, and the
:class:`Mod` that wraps it (clipping, local DP noise, later quantization or masking).

A mod is called as ``mod(instruction, call_next)`` and returns the reply: it may change the
instruction before passing it on, change the reply ``call_next`` returned, or both. The
chain ends in the collaborator's Executor (collaborator/executor.py), which runs the task
through the TaskRunner. A mod must not change ``instruction.global_model`` (its arrays are
read-only views) nor a reply's arrays in place: it returns new ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from accord.messages import ConfigValue, Task, TaskResult
from accord.tensors.state import ModelState


@dataclass(frozen=True)
class Instruction:
    """One task of one round for this site: the task as this site's plan defines it, the
    round's config (only keys this site's plan accepts) and its global model (read-only)."""

    collaborator: str
    round_number: int
    task: Task
    global_model: ModelState
    model_digest: str
    config: Mapping[str, ConfigValue] = field(default_factory=dict)
    phase: str = "train"

    @property
    def trains(self) -> bool:
        """Whether the task trains (its reply then carries the model or its delta)."""
        return self.task.function == "train"


CallNext = Callable[[Instruction], TaskResult]


class Mod:
    """A link of the site's chain. This base class passes everything through unchanged;
    subclasses override ``__call__``. Settings are the constructor's typed arguments (the
    plan's ``collaborator.settings.mods`` entries are type-checked against them)."""

    #: it adds noise to the update: a clipping mod after it is refused (plan/mods.py)
    adds_noise: ClassVar[bool] = False
    #: it bounds the update's norm
    clips: ClassVar[bool] = False

    def keep_state_in(self, folder: Path) -> None:
        """Called once by the deployment's collaborator with this site's own state folder, for a
        mod that must remember across restarts (LocalDP's spent budget); the default keeps none."""

    def __call__(self, instruction: Instruction, call_next: CallNext) -> TaskResult:
        return call_next(instruction)
