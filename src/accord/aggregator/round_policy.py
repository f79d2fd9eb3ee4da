"""The straggler policy applied to an open round (pure): close, wait, or fail with why."""

from __future__ import annotations

from accord.aggregator.open_round import OpenRound
from accord.aggregator.stragglers import Decision, StragglerPolicy
from accord.errors import AccordError


class RoundDeadlineError(AccordError):
    """A round reached its deadline with fewer reports than the straggler policy's minimum."""


def decide(current: OpenRound, policy: StragglerPolicy, now: float) -> tuple[Decision, bool]:
    """The policy's decision for ``current`` at clock time ``now``, and whether the open phase
    was ready to close but its replies do not let it end (``unready``)."""
    reported, members = current.reported_count, len(current.members)
    elapsed = now - current.phase_opened_at
    decision = policy.decide(elapsed, reported, members, current.phase_failed, current.min_replies)
    if current.phases is not None and members < current.min_replies:  # a phase cannot reach its threshold
        decision = Decision.FAIL
    unready = decision is Decision.CLOSE and current.phases is not None and not current.phases.can_close(current.phase)
    if unready:  # wait for the others until nobody owes more or the deadline
        timely = elapsed < policy.round_deadline_seconds
        decision = Decision.WAIT if current.owing() and timely else Decision.FAIL
    return decision, unready


def deadline_error(current: OpenRound, policy: StragglerPolicy, unready: bool) -> RoundDeadlineError:
    """Why ``current`` failed: who it waited for, who failed, what it needed, and the fix."""
    reported, members = current.reported_count, len(current.members)
    waiting = sorted(current.owing())
    failed = "; ".join(f"{c} failed: {why}" for c, why in sorted(current.failed.items()))
    when = (
        f"reached its deadline of {policy.round_deadline_seconds:g} s"
        if waiting
        else "cannot close (nobody owes anything more)"
    )
    needed = current.min_replies if current.phases is not None else policy.needed(members, current.min_replies)
    where = f"phase {current.phase!r} of round {current.number}" if current.phases is not None else f"round {current.number}"
    return RoundDeadlineError(
        f"{where} {when} with {reported} of {members} reports "
        f"(at least {needed} needed)"
        + (f"; still waiting for {', '.join(waiting)}" if waiting else "")
        + (f"; {failed}" if failed else "")
        + ("; its replies do not let the phase end (secure aggregation: too few reveals to unmask)" if unready else ""),
        "bring the missing collaborators back (fix the failed ones) and restart the aggregator "
        "(it resumes this round), or lower straggler_handling_policy.settings.min_reports",
    )
