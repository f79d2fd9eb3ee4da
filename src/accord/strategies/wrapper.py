"""Wrapper: a strategy around another one (NormClipping, SecureAggregation), every hook the
wrapped strategy's until a subclass overrides it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from accord.messages import ConfigValue
from accord.strategies.base import Strategy
from accord.strategies.seam import EVERYONE, Accumulator, Aggregate, ClientSampling, RoundContext, RoundPhases, StrategyState
from accord.tensors.state import ModelState


class Wrapper(Strategy):
    """Delegates every hook to ``strategy``; a subclass overrides what it changes."""

    def __init__(self, strategy: Strategy) -> None:
        self.strategy = strategy

    @property
    def config_schema(self) -> Mapping[str, type]:  # type: ignore[override]
        return self.strategy.config_schema

    @property
    def needs_individual_updates(self) -> bool:  # type: ignore[override]
        return self.strategy.needs_individual_updates

    def select(self, round_number: int, candidates: Sequence[str], sampling: ClientSampling = EVERYONE) -> Sequence[str]:
        return self.strategy.select(round_number, candidates, sampling)

    def configure(self, round_number: int) -> dict[str, ConfigValue]:
        return self.strategy.configure(round_number)

    def accumulator(self, context: RoundContext) -> Accumulator:
        return self.strategy.accumulator(context)

    def phased(self, context: RoundContext) -> RoundPhases | None:
        return self.strategy.phased(context)

    def min_replies(self, cohort_size: int) -> int:
        return self.strategy.min_replies(cohort_size)

    def finish(self, context: RoundContext, aggregate: Aggregate) -> ModelState:
        return self.strategy.finish(context, aggregate)

    def stop_reason(self, context: RoundContext) -> str | None:
        return self.strategy.stop_reason(context)

    def report(self) -> dict[str, float]:
        return self.strategy.report()

    def snapshot(self) -> StrategyState:
        return self.strategy.snapshot()

    def restore(self, state: StrategyState) -> None:
        self.strategy.restore(state)
