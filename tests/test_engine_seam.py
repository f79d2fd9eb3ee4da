"""The engine through the strategy seam: events to sinks, config to sites, the strategy's
minimum replies held by the straggler policy, a strategy's finish step; no network, no threads."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest
from test_engine import FakeClock, full_round, make_engine

from accord.aggregator.events import ResultAccepted, RoundClosed, RoundOpened
from accord.aggregator.stragglers import StragglerPolicy
from accord.errors import AccordError
from accord.strategies import Aggregate, ClientSampling, RoundContext, Strategy


class Halving(Strategy):
    """Sends a config key, needs every reply, and moves the global halfway to the mean."""

    config_schema: ClassVar = {"proximal_mu": float}

    def configure(self, round_number: int) -> dict:
        return {"proximal_mu": 0.5 + round_number}

    def min_replies(self, cohort_size: int) -> int:
        return cohort_size

    def finish(self, context: RoundContext, aggregate: Aggregate) -> dict:
        return {k: (context.global_model[k] + v) / 2 for k, v in aggregate.model.items()}


def test_sinks_hear_every_event_in_order() -> None:
    engine = make_engine(collaborators=("a", "b"), rounds=1)
    heard: list = []
    engine.events.subscribe(heard.append)
    outcome = full_round(engine, {"a": (1.0, 1), "b": (3.0, 3)})
    assert [type(e).__name__ for e in heard] == ["ResultAccepted"] * 6 + ["RoundClosed"]
    assert heard[1] == ResultAccepted(0, "a", "train", 1, {"loss": 1.0})
    assert isinstance(heard[-1], RoundClosed) and heard[-1].outcome is outcome


def test_the_next_round_is_announced_with_its_cohort_and_config() -> None:
    engine = make_engine(collaborators=("a", "b", "c"), rounds=2, strategy=Halving(), sampling=ClientSampling(count=2, seed=3))
    heard: list = []
    engine.events.subscribe(heard.append)
    first = engine.current.assigned
    assert len(first) == 2 and engine.assignment(first[0]).config == {"proximal_mu": 0.5}
    left_out = ({"a", "b", "c"} - set(first)).pop()
    assert not engine.assignment(left_out).tasks  # not in the cohort: nothing to do this round
    full_round(engine, {name: (2.0, 1) for name in first})
    opened = [e for e in heard if isinstance(e, RoundOpened)]
    assert len(opened) == 1 and opened[0].round_number == 1 and opened[0].config == {"proximal_mu": 1.5}
    assert len(opened[0].cohort) == 2


def test_finish_steps_from_the_aggregate_and_min_replies_hold_the_cutoff() -> None:
    clock = FakeClock()
    engine = make_engine(collaborators=("a", "b"), rounds=1, clock=clock, strategy=Halving())
    engine.policy = StragglerPolicy(policy="cutoff_time", cutoff_seconds=1.0)
    full_round(engine, {"a": (2.0, 1)})
    clock.now = 5.0
    assert engine.tick() is None  # past the cut-off, but the strategy needs both replies
    outcome = full_round(engine, {"b": (2.0, 1)})
    np.testing.assert_allclose(outcome.model["w"], np.full((2, 2), 1.0))  # halfway from 0 to the mean 2


def test_a_config_key_the_strategy_does_not_declare_is_an_error_at_the_aggregator() -> None:
    class Undeclared(Strategy):
        def configure(self, round_number: int) -> dict:
            return {"lr": 0.1}

    with pytest.raises(AccordError, match=r"config keys \['lr'\].*config_schema"):
        make_engine(strategy=Undeclared())


def test_a_config_value_of_another_type_than_declared_is_an_error_at_the_aggregator() -> None:
    class NumpyValue(Strategy):
        config_schema: ClassVar = {"proximal_mu": float}

        def configure(self, round_number: int) -> dict:
            return {"proximal_mu": np.float32(0.1)}

    with pytest.raises(AccordError, match=r"config key 'proximal_mu' as a float32; its config_schema declares a float"):
        make_engine(strategy=NumpyValue())


def test_a_result_for_another_phase_is_refused() -> None:
    import dataclasses

    from test_engine import result

    from accord.errors import RefusedError

    engine = make_engine(rounds=1)
    stray = dataclasses.replace(result("a", "aggregated_model_validation", metrics={"accuracy": 0.5}), phase="unmask", model_digest=engine.model_digest)
    with pytest.raises(RefusedError, match="phase 'unmask' of round 0, which is in phase 'train'") as refused:
        engine.submit(stray)
    assert refused.value.kind == "state" and engine.current.reported_count == 0


def test_a_step_that_overflows_keeps_the_rounds_input_model_and_says_so() -> None:
    class Overshoot(Strategy):
        def finish(self, context: RoundContext, aggregate: Aggregate) -> dict:
            return {k: np.full_like(v, np.inf) if k == "w" else v for k, v in aggregate.model.items()}

    engine = make_engine(collaborators=("a", "b"), rounds=1, strategy=Overshoot())
    before = engine.model
    outcome = full_round(engine, {"a": (1.0, 1), "b": (3.0, 3)})
    assert outcome.model is before and np.isfinite(outcome.model["w"]).all()
    [event] = outcome.bounds
    assert event.kind == "held" and "strategy Overshoot's update: its step made tensor 'w' non-finite" in event.describe()


def test_the_saved_strategy_state_is_taken_before_the_next_round_is_configured() -> None:
    class Counting(Strategy):
        """Changes its state in configure: a restart from the saved state must redo it once."""

        config_schema: ClassVar = {"proximal_mu": float}

        def __init__(self) -> None:
            self.calls = 0

        def configure(self, round_number: int) -> dict:
            self.calls += 1
            return {"proximal_mu": float(self.calls)}

        def snapshot(self):
            from accord.strategies import StrategyState

            return StrategyState({"calls": self.calls})

    engine = make_engine(collaborators=("a", "b"), rounds=2, strategy=Counting())
    full_round(engine, {"a": (1.0, 1), "b": (3.0, 3)})
    assert engine.strategy.calls == 2 and engine.strategy_state.values == {"calls": 1}
