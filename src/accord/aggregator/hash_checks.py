"""The hashes a collaborator must share with the aggregator: the plan's (every call) and the
workspace's (at join); a mismatch is refused with the fix."""

from __future__ import annotations

from accord.errors import RefusedError
from accord.plan.identity import shown_hash


def check_plan_hash(collaborator: str, plan_hash: str, expected: str) -> None:
    """Refuse (RefusedError) a collaborator whose plan hash is not the aggregator's ``expected``."""
    if plan_hash != expected:
        raise RefusedError(
            f"collaborator {collaborator!r} has plan hash {shown_hash(plan_hash)}, the aggregator's "
            f"is {shown_hash(expected)}: the plans differ",
            "use the same plan.yaml as the aggregator (fx workspace import)",
            kind="plan",
        )


def check_workspace_hash(collaborator: str, workspace_hash: str, expected: str) -> None:
    """Refuse (RefusedError) a collaborator whose workspace hash is not the aggregator's ``expected``."""
    if workspace_hash != expected:
        raise RefusedError(
            f"collaborator {collaborator!r} has workspace hash {shown_hash(workspace_hash)}, the "
            f"aggregator's is {shown_hash(expected)}: its code (src/, requirements.txt) or plan differs",
            "import the federation's workspace archive again (fx workspace import) and compare the "
            "workspace hash it prints with the operator's",
            kind="plan",
        )
