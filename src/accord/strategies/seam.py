"""The values that cross the strategy seam (strategies/base.py): the round's context, the
replies an accumulator folds, what it returns, a strategy's saved state, client sampling."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from accord.aggregation.bounds import UNBOUNDED, BoundEvent, Update, UpdateBounds, change_norms
from accord.tensors.space import MEMORY, TensorSpace
from accord.tensors.state import ModelState


@dataclass(frozen=True)
class ClientSampling:
    """The plan's ``aggregator.settings.sampling``: ask a seeded random ``fraction`` or ``count``
    of the candidates each round (neither: all of them). Reproducible: the same seed, round
    and candidates give the same cohort."""

    fraction: float | None = None
    count: int | None = None
    seed: int = 0

    def sample(self, round_number: int, candidates: Sequence[str]) -> tuple[str, ...]:
        """The sampled cohort of ``round_number``, in the candidates' order."""
        size = len(candidates)
        if self.count is not None:
            size = min(self.count, size)
        if self.fraction is not None:
            size = min(size, max(1, int(np.ceil(self.fraction * len(candidates) - 1e-9))))
        if size >= len(candidates):
            return tuple(candidates)
        rng = np.random.default_rng([self.seed, round_number])
        chosen = np.sort(rng.choice(len(candidates), size=size, replace=False))
        return tuple(candidates[int(i)] for i in chosen)


#: every candidate, every round.
EVERYONE = ClientSampling()


@dataclass(frozen=True)
class RoundContext:
    """What a strategy knows of the round it aggregates."""

    round_number: int
    #: the round's global model (read-only: never modify its arrays)
    global_model: Mapping[str, np.ndarray]
    #: the plan's ``aggregator.settings.update_bounds`` (count caps, norm bounds)
    bounds: UpdateBounds = UNBOUNDED
    #: the collaborators asked to train this round
    cohort: tuple[str, ...] = ()
    #: how many collaborators the plan lists (a privacy accountant's population)
    population: int = 0
    #: where the models the strategy computes are written (the next model, a mean, moments):
    #: memory, or files mapped from disk when the model is large (tensors/space.py)
    space: TensorSpace = MEMORY


@dataclass(frozen=True, eq=False)
class Reply:
    """One accepted training result, as an accumulator receives it.

    ``update`` is what arrived (read it now, e.g. to measure norms); ``stored`` holds the same
    values as a lazy, memory-mapped view of the copy saved on disk: keep that one to read at
    the round's close, so memory stays O(model) whatever the number of replies. ``norms``: the
    change norms of ``update`` measured as it arrived (aggregation/bounds.py StreamedChecks),
    against the round's global model; None: ``change_norms`` reads ``update``.
    """

    collaborator: str
    update: Mapping[str, np.ndarray]
    weight: float
    is_delta: bool = False
    stored: Mapping[str, np.ndarray] | None = None
    norms: Mapping[str, float] | None = None

    def change_norms(self, global_model: Mapping[str, np.ndarray]) -> Mapping[str, float]:
        """The norm of each normed tensor's change from ``global_model`` (the round's): measured on arrival, else read."""
        if self.norms is not None:
            return self.norms
        return change_norms(global_model, Update(self.collaborator, self.update, self.weight, self.is_delta, {}))

    @property
    def kept(self) -> Mapping[str, np.ndarray]:
        """The tensors to keep until the close: the saved copy's view, else the update itself."""
        return self.update if self.stored is None else self.stored


@dataclass
class Aggregate:
    """What an accumulator folded: the combined model and what its bounds did."""

    model: ModelState
    events: list[BoundEvent] = field(default_factory=list)


class Accumulator(Protocol):
    """Folds one round's replies; ``result`` is called once, at the close."""

    def add(self, reply: Reply) -> None:
        """Take one reply (it was checked: the model's tensor names, shapes and dtypes, finite)."""

    def result(self) -> Aggregate:
        """The combined model (the global model unchanged when no reply is usable)."""


class RoundPhases(Protocol):
    """The phases of a round beyond ``train`` (``Strategy.phased``: secure aggregation's advert,
    share, mask, unmask). The engine owns who owes what in each phase, its deadline and its
    minimum replies; this object owns what each site is sent and what its replies mean.

    A phase's members are the previous phase's who replied (the first phase's: the cohort).
    In ``tasks_phase`` each member owes the assigner's tasks (train, validations): its
    training reply comes to ``take`` with its tensors (``tensor_specs`` says which), not to
    an accumulator; in every other phase it owes one reply named as the phase, carrying bytes
    and, if ``tensor_specs`` of that phase names any, tensors (secure aggregation's correction).
    """

    #: the phases, in order
    names: tuple[str, ...]
    #: the phase in which the round's tasks are owed (one of ``names``)
    tasks_phase: str

    def begin(self, phase: str, members: tuple[str, ...]) -> None:
        """``phase`` opens with ``members`` (the previous phase's repliers, in cohort order)."""

    def min_replies(self, phase: str, members: int) -> int:
        """Replies without which ``phase`` of ``members`` does not end (the straggler policy respects it)."""

    def can_close(self, phase: str) -> bool:
        """Whether ``phase`` may end now that the straggler policy says so (secure aggregation's
        unmask: once every secret has its share threshold of reveals); while False the phase
        waits for more replies, and fails at the round's deadline."""

    def excused(self, phase: str) -> Mapping[str, str]:
        """Members of ``phase`` who owe nothing more though they did not reply -> why (secure
        aggregation's unmask: a site whose reveal was refused as wrong, excluded from it). The
        engine asks when it refuses a member's reply, and stops waiting for an excused one."""

    def checkpoint(self, phase: str) -> bytes | None:
        """The state to resume ``phase`` from after a restart (``resume``), taken as it opens;
        None: a restart runs the round's phases again from the first."""

    def resume(self, phase: str, state: bytes) -> None:
        """Take this fresh object to where ``checkpoint(phase)`` returned ``state``; RefusedError
        if it does not fit (the round's phases then run again from the first)."""

    def payload(self, phase: str, collaborator: str) -> bytes:
        """What ``collaborator`` is sent with its assignment in ``phase`` (bounded, bytes)."""

    def tensor_specs(self, phase: str) -> Mapping[str, tuple[str, tuple[int, ...]]]:
        """name -> (dtype, shape) of the tensors a reply in ``phase`` may carry: in ``tasks_phase``
        the training reply's; in another phase none (empty), unless its reply carries some."""

    def take(self, phase: str, collaborator: str, payload: bytes, tensors: Mapping[str, np.ndarray] | None, weight: float) -> None:
        """Fold one member's reply; RefusedError (kind ``payload``) if it is malformed."""

    def result(self) -> Aggregate:
        """The combined model at the close (after the last phase)."""


@dataclass
class StrategyState:
    """A strategy's state that must survive a restart: JSON ``values`` and ``tensors``."""

    values: dict[str, Any] = field(default_factory=dict)
    tensors: ModelState = field(default_factory=dict)
