"""The message vocabulary shared by the aggregator, the transports and the collaborator.

The same dataclasses travel in simulation (in-process transport) and in deployment
(gRPC), so a behaviour tested in one is the behaviour of the other.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: a value of a strategy's per-round config (typed on the wire: a bool stays a bool)
ConfigValue = bool | int | float | str


def as_declared(value: object, declared: type) -> ConfigValue | None:
    """``value`` as a config value of the ``declared`` type (``Strategy.config_schema``), or
    None if it is not one: exactly that type, except that an int passes for a float (and
    becomes one); a bool is not an int, nor a NumPy scalar a float."""
    if declared is float and type(value) is int:
        return float(value)
    return value if type(value) is declared and isinstance(value, bool | int | float | str) else None


class Action(str, enum.Enum):
    """What a collaborator should do after asking for tasks."""

    RUN = "run"  # run the tasks of ``round_number``
    WAIT = "wait"  # nothing yet: ask again (the transport long-polls, no sleep)
    QUIT = "quit"  # the federation has finished


@dataclass(frozen=True)
class Task:
    """One task of a round: its plan name, the runner function and its arguments."""

    name: str
    function: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    returns_model: bool = False


@dataclass(frozen=True)
class TaskAssignment:
    """The aggregator's answer to "what should I do now?"."""

    action: Action
    round_number: int
    tasks: tuple[Task, ...] = ()
    #: the strategy's per-round config (e.g. FedProx's ``proximal_mu``); a site takes only the
    #: keys its own plan's strategy declares, for its training tasks
    config: dict[str, ConfigValue] = field(default_factory=dict)
    #: the round's phase (one phase, ``train``, unless the strategy declares more: RoundPhases)
    phase: str = "train"
    #: what this site is sent in that phase (secure aggregation's roster, shares, unmask request)
    payload: bytes = b""


@dataclass(frozen=True)
class FederationInfo:
    """What a collaborator learns when it joins."""

    plan_hash: str
    rounds_to_train: int
    round_number: int
    workspace_hash: str = ""


@dataclass(frozen=True, eq=False)
class Measured:
    """What the aggregator measured of a result's tensors while they arrived
    (aggregation/bounds.py ``StreamedChecks``), against the global model ``reference`` (that
    very object: the engine uses it only while its model is that one) and ``is_delta``: each
    normed tensor's change norm, in the model's order, and the tensors holding NaN or Inf."""

    reference: Mapping[str, np.ndarray]
    is_delta: bool
    norms: Mapping[str, float]
    non_finite: frozenset[str]


@dataclass
class TaskResult:
    """A collaborator's result for one task of one round."""

    collaborator: str
    round_number: int
    task: str
    sample_count: int
    metrics: dict[str, float]
    #: name -> array; at the aggregator, a read-only view of the file the tensors were received into
    tensors: Mapping[str, np.ndarray] | None = None
    is_delta: bool = False
    task_seconds: float = 0.0
    #: digest of the global model the task ran on; a result for another model is refused
    model_digest: str = ""
    #: non-empty when the task failed at the site: why (then no tensors and no metrics)
    failure: str = ""
    #: the phase of the round this result belongs to (the assignment's)
    phase: str = "train"
    #: a phase reply's bytes (secure aggregation's advert, shares, reveals)
    payload: bytes = b""
    #: at the aggregator, set by the transport that received it (the audit trail, accord/audit/):
    #: the digest of its tensor chunks as they arrived (tensors/digest.py UpdateDigest) and the
    #: serial (hex) of the certificate that sent it
    update_digest: str = ""
    sender_serial: str = ""
    #: at the aggregator, what was measured of the tensors as they arrived (None: nothing; the
    #: checks read the saved copy)
    measured: Measured | None = None
