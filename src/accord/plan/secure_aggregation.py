"""The SecAgg+ parameters of a round, from the plan's ``aggregator.settings.secure_aggregation``
and the round's cohort size: the same at the aggregator and at every site (both read the same
plan, whose hash they compare), so neither takes them from the other."""

from __future__ import annotations

import dataclasses

from accord.errors import AccordError, PlanError
from accord.plan.aggregator_settings import SecureAggregationSettings
from accord.secagg.params import SecAggParams, default_threshold

WHERE = "aggregator.settings.secure_aggregation"


def secagg_params(settings: SecureAggregationSettings, cohort_size: int) -> SecAggParams:
    """The round's SecAggParams: the plan's settings, with ``threshold`` and ``neighbours``
    derived from the cohort (SecAggParams.for_cohort) where the plan leaves them out; PlanError
    if the cohort is too small for the threshold or the ring cannot hold the sum."""
    if settings.threshold is not None and settings.threshold > cohort_size:
        raise PlanError(
            f"{WHERE}.threshold is {settings.threshold}, but a round asks {cohort_size} sites",
            f"lower {WHERE}.threshold (at most the sites a round asks) or certify and sample more sites",
        )
    try:
        derived = SecAggParams.for_cohort(
            cohort_size, clip=settings.clip, fraction_bits=settings.fraction_bits, max_weight=settings.max_weight
        )
        params = dataclasses.replace(
            derived,
            threshold=settings.threshold or derived.threshold,
            neighbours=settings.neighbours or derived.neighbours,
        )
        params.check_capacity(cohort_size)
    except AccordError as exc:  # SecAggParams names the setting and the fix
        raise PlanError(f"{WHERE}: {exc.message}", exc.fix) from exc
    return params


def threshold_floor(settings: SecureAggregationSettings, expected_cohort: int) -> int:
    """The smallest threshold a site accepts, from its OWN plan: the plan's ``threshold``, else the
    default threshold of the cohort its plan expects a round to ask (``expected_cohort``: its
    sampling of its collaborators list). The aggregator names the cohort; without this floor it
    would pick the threshold (and so how few updates a revealed sum holds) by naming few sites."""
    if settings.threshold is not None:
        return settings.threshold
    return default_threshold(expected_cohort)
