"""Task assigners: which tasks each collaborator runs in a round."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from accord.errors import PlanError


class Assigner(Protocol):
    """Maps (collaborator, round) to the names of the tasks it runs that round.

    An assigner may also define ``uniform_tasks(round_number)``: the tasks every collaborator
    runs that round when they are the same for all (None otherwise), so a round that samples
    a cohort never asks it about every member (see :func:`uniform_tasks`).
    """

    def tasks_for(self, collaborator: str, round_number: int) -> tuple[str, ...]: ...


def uniform_tasks(assigner: Assigner, round_number: int) -> tuple[str, ...] | None:
    """The tasks every collaborator gets in ``round_number`` if the assigner says they are the
    same for all (its optional ``uniform_tasks``), else None."""
    shared = getattr(assigner, "uniform_tasks", None)
    return None if shared is None else shared(round_number)


def _group_field(group: Any, key: str) -> Any:
    return group.get(key) if isinstance(group, Mapping) else getattr(group, key, None)


class RandomGroupedAssigner:
    """Each round, shuffle the collaborators (seeded by round) and cut them into groups by percentage.

    ``task_groups``: ``[{name, percentage, tasks}]`` whose percentages sum to 1.
    """

    def __init__(self, collaborators: Sequence[str], task_groups: Sequence[Any], seed: int = 0) -> None:
        self.collaborators = sorted(collaborators)
        self.groups = [(_group_field(g, "name"), _group_field(g, "percentage"), tuple(_group_field(g, "tasks"))) for g in task_groups]
        if any(p is None for _, p, _ in self.groups):
            raise PlanError(
                "RandomGroupedAssigner needs a percentage for every task group",
                "set assigner.settings.task_groups[*].percentage (they must sum to 1.0)",
            )
        total = sum(p for _, p, _ in self.groups)
        if abs(total - 1.0) > 1e-6:
            raise PlanError(
                f"assigner task group percentages sum to {total}, not 1.0",
                "make assigner.settings.task_groups[*].percentage add up to 1.0",
            )
        self.seed = seed
        self._cache: dict[int, dict[str, tuple[str, ...]]] = {}

    def _round_table(self, round_number: int) -> dict[str, tuple[str, ...]]:
        table = self._cache.get(round_number)
        if table is None:
            rng = np.random.default_rng([self.seed, round_number])
            order = [self.collaborators[i] for i in rng.permutation(len(self.collaborators))]
            table, start, cumulative = {}, 0, 0.0
            for index, (_, percentage, tasks) in enumerate(self.groups):
                cumulative += percentage
                end = len(order) if index == len(self.groups) - 1 else round(cumulative * len(order))
                for name in order[start:end]:
                    table[name] = tasks
                start = end
            self._cache = {round_number: table}
        return table

    def tasks_for(self, collaborator: str, round_number: int) -> tuple[str, ...]:
        return self._round_table(round_number).get(collaborator, ())

    def uniform_tasks(self, round_number: int) -> tuple[str, ...] | None:
        """One group: everyone runs its tasks (no shuffle of the members needed)."""
        return self.groups[0][2] if len(self.groups) == 1 and self.collaborators else None


class StaticGroupedAssigner:
    """Named collaborators per group: ``task_groups: [{name, collaborators, tasks}]``."""

    def __init__(self, collaborators: Sequence[str], task_groups: Sequence[Any], seed: int = 0) -> None:
        self.table: dict[str, tuple[str, ...]] = {}
        for group in task_groups:
            members = _group_field(group, "collaborators")
            if not members:
                raise PlanError(
                    f"StaticGroupedAssigner group {_group_field(group, 'name')!r} lists no collaborators",
                    "set assigner.settings.task_groups[*].collaborators",
                )
            for name in members:
                if name in self.table:
                    raise PlanError(f"collaborator {name!r} is in two StaticGroupedAssigner groups")
                self.table[name] = tuple(_group_field(group, "tasks"))
        kinds = set(self.table.values())
        self._uniform = kinds.pop() if len(kinds) == 1 else None
        missing = [c for c in collaborators if c not in self.table]
        if missing:
            shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
            raise PlanError(
                f"collaborators {shown} are in no StaticGroupedAssigner group",
                "add them to assigner.settings.task_groups[*].collaborators",
            )

    def tasks_for(self, collaborator: str, round_number: int) -> tuple[str, ...]:
        return self.table.get(collaborator, ())

    def uniform_tasks(self, round_number: int) -> tuple[str, ...] | None:
        """Every group runs the same tasks: those (None if the groups differ)."""
        return self._uniform
