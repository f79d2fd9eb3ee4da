"""The command that starts a stopped ``fx aggregator`` or ``fx collaborator`` again, as its
operator typed it (the same workspace, plan and overrides: the same plan hash)."""

from __future__ import annotations

import shlex
from pathlib import Path

DEFAULT_PLAN = "plan/plan.yaml"


def resume_command(command: str, workspace: Path, plan_path: str, overrides: tuple[str, ...], *extra: str) -> str:
    """``fx COMMAND [EXTRA] -w WORKSPACE [-p PLAN] [-o KEY=VALUE ...]``, quoted for a shell."""
    words = ["fx", *command.split(), *extra, "-w", str(workspace)]
    if plan_path != DEFAULT_PLAN:
        words += ["-p", plan_path]
    for override in overrides:
        words += ["-o", override]
    return shlex.join(words)
