"""The strategy seam: what an aggregation algorithm decides, and what the engine hands it.

The engine (aggregator/engine.py) owns the protocol: who owes what, deadlines, admission,
replay after a restart. A :class:`Strategy` owns the algorithm: whom to ask each round
(``select``), what per-round config to send them (``configure``, keys declared in
``config_schema``), how to fold their replies (``accumulator``), how many replies it needs
(``min_replies``), the step from the folded replies to the next model (``finish``), and its
own state (``snapshot``/``restore``, journaled so a restart resumes it exactly).

An algorithm is one small file: subclass :class:`Strategy` and override the hooks it needs.
Every hook is pure (no I/O, threads or clocks), so the engine stays pure too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from accord.errors import AccordError
from accord.messages import ConfigValue, as_declared
from accord.strategies.mean import BoundedMean
from accord.strategies.seam import EVERYONE, Accumulator, Aggregate, ClientSampling, RoundContext, RoundPhases, StrategyState
from accord.tensors.state import ModelState


class Strategy:
    """FedAvg's behaviour by default: everyone sampled, no config, the bounded sample-weighted
    mean, one reply needed, no state. Subclasses override the hooks their algorithm changes."""

    #: per-round config keys this strategy sends, with their types; a site accepts only these
    config_schema: ClassVar[Mapping[str, type]] = {}
    #: whether the algorithm needs each update on its own (robust ones): secure aggregation,
    #: which reveals only the sum, refuses such strategies
    needs_individual_updates: ClassVar[bool] = False

    def select(self, round_number: int, candidates: Sequence[str], sampling: ClientSampling = EVERYONE) -> Sequence[str]:
        """The collaborators asked to train in ``round_number``: the plan's ``sampling`` of the
        ``candidates`` (those the assigner gives any task this round)."""
        return sampling.sample(round_number, candidates)

    def configure(self, round_number: int) -> dict[str, ConfigValue]:
        """The per-round config sent with the training tasks (keys of ``config_schema``)."""
        return {}

    def checked_config(self, round_number: int) -> dict[str, ConfigValue]:
        """``configure``'s config, refused (AccordError) unless every key is declared in
        ``config_schema`` with its value's type (an int passes for a float): a site refuses
        anything else, so a strategy's bug is said here, at the aggregator. Not to override."""
        config = self.configure(round_number)
        schema, name = self.config_schema, type(self).__name__
        undeclared = sorted(set(config) - set(schema))
        if undeclared:
            raise AccordError(
                f"strategy {name} sends config keys {undeclared} that its config_schema does not declare",
                "declare every key the strategy's configure() returns in its config_schema",
            )
        for key, value in config.items():
            if as_declared(value, schema[key]) is None:
                raise AccordError(
                    f"strategy {name} sends config key {key!r} as a {type(value).__name__}; its config_schema declares a {schema[key].__name__}",
                    "return plain Python values of the declared types from configure() (float(x), not a NumPy scalar)",
                )
        return config

    def accumulator(self, context: RoundContext) -> Accumulator:
        """A fresh accumulator for the round ``context`` describes."""
        return BoundedMean(context)

    def phased(self, context: RoundContext) -> RoundPhases | None:
        """The phases of the training round ``context`` describes beyond ``train`` (None: one
        phase, ``train``, whose replies the ``accumulator`` folds). Secure aggregation returns
        its advert, share, mask and unmask phases (strategies/secure.py)."""
        return None

    def min_replies(self, cohort_size: int) -> int:
        """Replies without which the round does not close (the straggler policy respects it)."""
        return 1

    def finish(self, context: RoundContext, aggregate: Aggregate) -> ModelState:
        """The next global model from the folded replies (a server optimizer steps here)."""
        return aggregate.model

    def stop_reason(self, context: RoundContext) -> str | None:
        """Why training must stop before the round ``context`` describes (a privacy budget
        spent), or None; the engine then goes to the final validation."""
        return None

    def report(self) -> dict[str, float]:
        """Figures the strategy reports after each training round's ``finish``, as
        ``group/name`` keys (``privacy/epsilon``): logged, in metrics.jsonl and the summary."""
        return {}

    def snapshot(self) -> StrategyState:
        """The state a restart needs (saved with each round's start)."""
        return StrategyState()

    def restore(self, state: StrategyState) -> None:
        """Take back what ``snapshot`` returned."""
