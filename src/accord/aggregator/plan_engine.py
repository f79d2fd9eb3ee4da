"""The RoundEngine a plan describes: its members checked, its assigner, policy, bounds, sampling
and strategy built (the strategy's state restored from the saved round, if any)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from accord.aggregation.bounds import UpdateBounds
from accord.aggregator.assigner import Assigner
from accord.aggregator.engine import RoundEngine
from accord.aggregator.phase_checkpoint import PhaseCheckpoint
from accord.aggregator.saved import SavedRound
from accord.aggregator.stragglers import StragglerPolicy
from accord.errors import PlanError, RefusedError
from accord.plan.loader import Plan
from accord.plan.objects import build
from accord.strategies.base import Strategy
from accord.strategies.seam import ClientSampling
from accord.tensors.space import MEMORY, TensorSpace
from accord.tensors.state import ModelState

log = logging.getLogger("accord.aggregator")


def assigner_for(plan: Plan) -> Assigner:
    """The plan's task assigner, once its collaborators list is checked (none listed, or one
    without a certificate, is refused before any saved state is touched)."""
    collaborators = plan.model.collaborators
    if not collaborators:
        raise RefusedError(
            "the plan lists no collaborators",
            "add names under `collaborators:` in the plan (fx collaborator certify does it)",
            kind="identity",
        )
    problem = plan.model.membership_problem()
    if problem:
        raise PlanError(
            f"{plan.path or 'the plan'}: {problem}",
            "certify the missing collaborators (fx collaborator certify) or change the plan",
        )
    return plan_assigner(plan, collaborators)


def plan_assigner(plan: Plan, collaborators: Sequence[str]) -> Assigner:
    """The plan's task assigner over ``collaborators`` (no certificates asked: a simulation's
    clients have none)."""
    section = plan.model.assigner
    assigner: Assigner = build(
        "assigner",
        section.template,
        section.settings.model_dump(),
        plan.workspace,
        expect=Assigner,
        collaborators=collaborators,
    )
    return assigner


def engine_for(
    plan: Plan,
    assigner: Assigner,
    strategy: Strategy,
    model: ModelState,
    clock: Callable[[], float],
    saved: SavedRound | None,
    collaborators: Sequence[str] | None = None,
    space: TensorSpace = MEMORY,
    resume: PhaseCheckpoint | None = None,
) -> RoundEngine:
    """The plan's RoundEngine starting from ``model``, at the ``saved`` round (or round 0);
    ``collaborators`` are the plan's unless given (a simulation's clients); its rounds compute
    the next model in ``space`` (memory, or files on disk: aggregator/placement.py); a restart's
    ``resume`` reopens the saved round at its phase checkpoint (aggregator/phase_checkpoint.py)."""
    settings = plan.model.aggregator.settings
    if saved is not None and saved.strategy is not None:
        strategy.restore(saved.strategy)
    return RoundEngine(
        collaborators=plan.model.collaborators if collaborators is None else collaborators,
        tasks=plan.model.tasks.settings,
        assigner=assigner,
        rounds_to_train=settings.rounds_to_train,
        model=model,
        clock=clock,
        best_metric=settings.best_metric,
        maximize=settings.best_direction == "maximize",
        final_validation=settings.final_validation,
        delta_updates=plan.model.collaborator.settings.delta_updates,
        policy=StragglerPolicy.from_settings(plan.model.straggler_handling_policy.settings),
        strategy=strategy,
        bounds=UpdateBounds(**settings.update_bounds.model_dump()),
        sampling=ClientSampling(**settings.sampling.model_dump()),
        round_number=saved.round_number if saved else 0,
        best_score=saved.best_score if saved else None,
        space=space,
        resume=resume,
    )


def strategy_for(plan: Plan, collaborators: Sequence[str] | None = None) -> Strategy:
    """The plan's strategy, refused if the federation (the plan's ``collaborators`` unless
    given) is too small for it (Krum needs n >= 2f+3)."""
    strategy: Strategy = plan.strategy()
    members = plan.model.collaborators if collaborators is None else collaborators
    sites = len(members)
    sampling = ClientSampling(**plan.model.aggregator.settings.sampling.model_dump())
    cohort = len(sampling.sample(0, members))
    needed = strategy.min_replies(cohort)
    if needed > cohort:
        raise PlanError(
            f"{plan.path or 'the plan'}: strategy {type(strategy).__name__} needs at least {needed} replies a round, "
            f"but a round asks {cohort} of the {sites} collaborators",
            "certify more collaborators, sample more of them (aggregator.settings.sampling), or change "
            "aggregator.settings.strategy's settings",
        )
    spec = plan.model.aggregator.settings.strategy
    log.info("aggregation strategy %s %s (at least %d replies a round)", spec.template, spec.settings or "", needed)
    return strategy
