"""What a site accepts of an assignment: the phases it runs, and only the per-round config keys
its own plan's strategy declares (``Strategy.config_schema``), each of its declared type."""

from __future__ import annotations

from collections.abc import Mapping

from accord.errors import RefusedError
from accord.messages import ConfigValue, TaskAssignment, as_declared

#: the phases this site's collaborator runs
PHASES = frozenset({"train"})
_FIX = (
    "make sure the aggregator and this site run the same plan (aggregator.settings.strategy); "
    "a site takes only the config its own plan's strategy declares"
)


class Refused(RefusedError):
    """The site refuses an assignment (kind ``plan``); ``report`` is what the aggregator is told."""

    def __init__(self, message: str, report: str) -> None:
        super().__init__(message, _FIX, kind="plan")
        self.report = report


def accept(
    assignment: TaskAssignment, schema: Mapping[str, type], strategy: str, phases: frozenset[str] = PHASES
) -> dict[str, ConfigValue]:
    """The assignment's config as this site takes it (an int for a float key becomes a float), or
    Refused naming the key (or phase) and the fix. ``strategy`` names the site's plan's strategy;
    ``phases`` are those its plan runs (secure aggregation's besides ``train``)."""
    if assignment.phase not in phases:
        raise Refused(
            f"the aggregator asks for phase {assignment.phase!r}, which this site does not run (it runs {sorted(phases)})",
            f"phase {assignment.phase!r} refused by the site",
        )
    accepted: dict[str, ConfigValue] = {}
    for key, value in assignment.config.items():
        wanted = schema.get(key)
        if wanted is None:
            raise Refused(
                f"the aggregator sent config key {key!r}, which this site's plan's strategy {strategy} does not declare "
                f"(it declares {sorted(schema) or 'none'})",
                f"config key {key!r} refused by the site: its plan's strategy does not declare it",
            )
        taken = as_declared(value, wanted)
        if taken is None:
            raise Refused(
                f"the aggregator sent config key {key!r} as a {type(value).__name__}; this site's plan's strategy "
                f"{strategy} declares it a {wanted.__name__}",
                f"config key {key!r} refused by the site: not a {wanted.__name__}",
            )
        accepted[key] = taken
    return accepted
