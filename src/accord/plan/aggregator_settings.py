"""The plan's aggregator.settings: rounds, saved files, update bounds, strategy, sampling, secure aggregation, sinks."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator

from accord.plan.sink_settings import MetricsSinksSettings
from accord.plan.strict import Strict
from accord.plan.templates import template_problem


class UpdateBoundsSettings(Strict):
    """What one site's update can weigh: see docs/failure-model.md (null switches a bound off)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    sample_count_multiple: float | None = Field(1.1, ge=1)
    norm_multiple: float | None = Field(1.5, ge=1)
    max_update_norm: float | None = Field(None, gt=0)
    on_norm_exceeded: Literal["clip", "refuse"] = "clip"


class StrategySettings(Strict):
    """The aggregation algorithm: a Strategy class and its constructor's arguments (built and
    type-checked when the plan loads: plan/strategy.py). A wrapper (NormClipping) takes the
    strategy it wraps as its ``strategy`` setting, itself a ``{template, settings}`` mapping."""

    template: str = "accord.strategies.FedAvg"
    settings: dict[str, Any] = Field(default_factory=dict)

    @field_validator("template")
    @classmethod
    def _allowed(cls, value: str) -> str:
        why = template_problem("strategy", value)
        if why:
            raise ValueError(why)
        return value


class SamplingSettings(Strict):
    """Client sampling: a seeded random ``fraction`` or ``count`` of the sites each round."""

    fraction: float | None = Field(None, gt=0, le=1)
    count: int | None = Field(None, ge=1)
    seed: int = Field(0, ge=0)


class SecureAggregationSettings(Strict):
    """Secure aggregation (SecAgg+, docs/privacy.md "Running it"): the aggregator sees only the
    sum of the cohort's weighted updates. ``threshold``: the fewest sites each phase needs (None:
    ceil(2n/3) of a cohort of n); ``neighbours``: each site's neighbourhood (None: SecAgg+'s
    derivation from n; n - 1 or more is plain SecAgg); each update value is clipped to
    [-clip, clip] and encoded with ``fraction_bits`` of precision; a site's sample count is at
    most ``max_weight``."""

    enabled: bool = False
    threshold: int | None = Field(None, ge=2)
    neighbours: int | None = Field(None, ge=2)
    clip: float = Field(1.0, gt=0)
    fraction_bits: int = Field(24, ge=0, le=52)
    max_weight: int = Field(1_000_000, ge=1)


class AggregatorSettings(Strict):
    rounds_to_train: int = Field(10, ge=1)
    init_state_path: str = "save/init.safetensors"
    best_state_path: str = "save/best.safetensors"
    last_state_path: str = "save/last.safetensors"
    best_metric: str = "aggregated_model_validation/accuracy"
    best_direction: Literal["maximize", "minimize"] = "maximize"
    metrics_path: str = "logs/metrics.jsonl"
    state_dir: str = "save/state"
    max_concurrent_uploads: int = Field(2, ge=1)
    #: a model file larger than this (MB) is aggregated from disk (aggregator/placement.py); 0: always
    in_memory_limit_mb: int = Field(1024, ge=0)
    final_validation: bool = True
    update_bounds: UpdateBoundsSettings = Field(default_factory=UpdateBoundsSettings)
    strategy: StrategySettings = Field(default_factory=StrategySettings)
    sampling: SamplingSettings = Field(default_factory=SamplingSettings)
    secure_aggregation: SecureAggregationSettings = Field(default_factory=SecureAggregationSettings)
    metrics: MetricsSinksSettings = Field(default_factory=MetricsSinksSettings)

    @field_validator("best_metric")
    @classmethod
    def _task_slash_metric(cls, value: str) -> str:
        if value.count("/") != 1 or not all(value.split("/")):
            raise ValueError("expected 'task/metric', e.g. aggregated_model_validation/accuracy")
        return value
