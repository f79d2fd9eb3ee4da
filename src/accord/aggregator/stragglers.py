"""Straggler policies: when a round may close without every collaborator's report.

Pure decisions over (seconds since the round opened, reports in, collaborators assigned,
collaborators whose task failed at their site); the engine asks, the runtime's watcher makes
sure it is asked when a deadline passes.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from accord.plan.round_settings import StragglerSettings


class Decision(enum.Enum):
    WAIT = "wait"
    CLOSE = "close"
    FAIL = "fail"


@dataclass(frozen=True)
class StragglerPolicy:
    """One of ``wait_for_all``, ``cutoff_time`` or ``percentage``, with the plan's limits.

    A collaborator *reports* when all its tasks of the round are in; one whose task failed at
    its site owes nothing more but is not a report (``min_reports`` and ``percentage`` count
    successful reports only). Every policy closes a round when nobody owes anything more, if
    ``min_reports`` reported (else FAIL at once: nothing more can come). Besides:

    - ``cutoff_time``: after ``cutoff_seconds``, closes as soon as ``min_reports`` reported;
    - ``percentage``: closes when ``max(min_reports, ceil(percentage x assigned))`` reported;
    - all, at ``round_deadline_seconds``: close with what came if ``min_reports`` reported,
      else FAIL (the aggregator stops with an error; its saved state lets a restart resume).
    """

    policy: str = "wait_for_all"
    cutoff_seconds: float | None = None
    min_reports: int = 1
    percentage: float | None = None
    round_deadline_seconds: float = 86400.0

    @classmethod
    def from_settings(cls, settings: StragglerSettings) -> StragglerPolicy:
        return cls(**settings.model_dump())

    def needed(self, assigned: int, at_least: int = 1) -> int:
        """Reports without which a round never closes: ``min_reports``, or the strategy's
        ``at_least`` if more (at most everyone assigned)."""
        return min(max(self.min_reports, at_least), assigned)

    def decide(self, elapsed: float, reported: int, assigned: int, failed: int = 0, at_least: int = 1) -> Decision:
        """Whether a round with ``reported`` of ``assigned`` reports (and ``failed`` sites that
        owe nothing more) after ``elapsed`` s may close; ``at_least``: the replies the round's
        strategy needs (``Strategy.min_replies``), which raise ``min_reports``."""
        needed = self.needed(assigned, at_least)
        enough = reported >= needed
        if reported + failed >= assigned:
            return Decision.CLOSE if enough else Decision.FAIL
        if elapsed >= self.round_deadline_seconds:
            return Decision.CLOSE if enough else Decision.FAIL
        if self.policy == "cutoff_time" and self.cutoff_seconds is not None:
            return Decision.CLOSE if enough and elapsed >= self.cutoff_seconds else Decision.WAIT
        if self.policy == "percentage" and self.percentage is not None:
            share = max(needed, math.ceil(self.percentage * assigned - 1e-9))
            return Decision.CLOSE if reported >= share else Decision.WAIT
        return Decision.WAIT

    def next_check(self, elapsed: float) -> float:
        """Seconds from now until the passing of time alone may change the decision: the next
        of the cut-off and the round deadline still ahead (0 once both have passed)."""
        marks = [self.round_deadline_seconds]
        if self.policy == "cutoff_time" and self.cutoff_seconds is not None:
            marks.append(self.cutoff_seconds)
        ahead = [mark - elapsed for mark in marks if mark > elapsed]
        return min(ahead, default=0.0)
