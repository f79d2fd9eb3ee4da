"""A round's cohort and its tasks (pure): the assigner's tasks, the strategy's selection."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from accord.aggregator.assigner import Assigner, uniform_tasks
from accord.plan.round_settings import TaskSpec
from accord.strategies.base import Strategy
from accord.strategies.seam import ClientSampling


def cohort_tasks(
    number: int,
    *,
    collaborators: Sequence[str],
    assigner: Assigner,
    strategy: Strategy,
    sampling: ClientSampling,
    tasks: Mapping[str, TaskSpec],
    final_validation: bool,
) -> dict[str, list[str]]:
    """The tasks of round ``number`` of the strategy's cohort of those the assigner gives tasks
    (all of them, and only global-validating tasks, in the ``final_validation``); drawn from
    the members themselves, in O(cohort), when the assigner gives everyone the same tasks
    (``uniform_tasks``)."""
    shared = None if final_validation else uniform_tasks(assigner, number)
    if shared is not None:
        return {c: list(shared) for c in strategy.select(number, collaborators if shared else (), sampling)}
    outstanding = {}
    for c in collaborators:
        names = list(assigner.tasks_for(c, number))
        if final_validation:
            names = [n for n in names if tasks[n].validates_global]
        if names:
            outstanding[c] = names
    if final_validation:
        return outstanding
    cohort = frozenset(strategy.select(number, list(outstanding), sampling))
    return {c: names for c, names in outstanding.items() if c in cohort}
