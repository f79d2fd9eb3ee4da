"""Whether a result is owed now (pure): the engine's admission checks of a result."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from accord.aggregator.open_round import OpenRound
from accord.errors import RefusedError

if TYPE_CHECKING:
    from accord.aggregator.events import RoundOutcome


class ExcusedRefusal(RefusedError):
    """A phase reply refused, whose sender the round's phases then excused (RoundPhases.excused):
    it owes nothing more, and ``outcome`` is the round's if excusing it closed the round (the
    caller closes it, then reports the refusal)."""

    def __init__(self, refused: RefusedError, outcome: RoundOutcome | None) -> None:
        super().__init__(refused.message, refused.fix, kind=refused.kind)
        self.outcome = outcome


def check_member(members: Collection[str], collaborator: str) -> None:
    """Refuse a name that the plan does not list."""
    if collaborator not in members:
        raise RefusedError(
            f"collaborator {collaborator!r} is not in the plan's collaborators list",
            "have the federation operator add it (fx collaborator certify) and share the plan",
            kind="identity",
        )


def check_owed(
    current: OpenRound | None,
    round_now: int,
    members: Collection[str],
    collaborator: str,
    round_number: int,
    task: str,
    model_digest: str,
    failure: bool = False,
) -> list[str]:
    """Refuse a result that is not owed in ``current`` (the engine's round ``round_now``), or
    (unless it reports a ``failure``, which carries no update) was not computed from this
    round's global model (``model_digest``: tensors/digest.py); returns the collaborator's
    outstanding tasks.

    Membership is the caller's admission check (``check_member``), not repeated here: a name
    ``members`` does not list has no entry in the round, and is refused as at admission.
    """
    if round_number < round_now:
        now = "the federation has finished" if current is None else f"the current round is {current.number}"
        raise RefusedError(
            f"result from {collaborator} for {task[:64]!r} of round {round_number} came after that "
            f"round closed ({now}): dropped, unless an earlier copy was received in time",
            "nothing to do: the collaborator goes on with the current round",
            kind="state",
        )
    if current is None or round_number != current.number:
        raise RefusedError(
            f"result from {collaborator} is for round {round_number}, but the current round is {round_now}",
            kind="state",
        )
    owed = current.outstanding.get(collaborator)
    if owed is None:  # a member outside the round's cohort (or a name the plan does not list)
        check_member(members, collaborator)
        owed = []
    if task not in owed:
        raise RefusedError(
            f"result from {collaborator} for task {task[:64]!r} of round "
            f"{round_number} was not assigned or was already received",
            kind="state",
        )
    if not failure and model_digest != current.model_digest:
        raise RefusedError(
            f"result from {collaborator} for {task[:64]!r} of round {round_number} was computed from "
            f"another model (digest {model_digest[:16]!r}) than this round's global model (digest "
            f"{current.model_digest[:16]}...): a replayed or stale result, dropped",
            "nothing to do for an honest collaborator: it fetches this round's model again "
            "(the aggregator may have rolled back to an earlier saved state)",
            kind="state",
        )
    return owed
