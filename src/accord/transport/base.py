"""The interfaces the transports connect: what the collaborator calls, what the aggregator serves."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Protocol

from accord.messages import FederationInfo, TaskAssignment, TaskResult
from accord.tensors.codec import Destination
from accord.tensors.compression import Encoded
from accord.tensors.state import ModelState

#: name -> (dtype, shape) of each tensor of a model
TensorSpecs = dict[str, tuple[str, tuple[int, ...]]]


class AggregatorClient(Protocol):
    """What a collaborator uses to talk to the aggregator (gRPC client or in-process)."""

    def join(self) -> FederationInfo:
        """Introduce this collaborator; refused (RefusedError) on a wrong name or plan hash."""

    def get_tasks(self) -> TaskAssignment:
        """Ask for work; may block until a round opens (long-poll), never sleeps on a timer."""

    def get_model(self, round_number: int, expected: TensorSpecs | None = None) -> ModelState:
        """Fetch the global model of ``round_number``; with ``expected`` (this site's own
        model: name -> (dtype, shape)), a tensor that differs is refused before it is allocated."""

    def send_result(self, result: TaskResult, encoded: Encoded | None = None) -> None:
        """Send one task's metrics (and tensors for a training task; ``encoded``: as the plan's
        compression pipeline encoded them); RefusedError if refused."""

    def close(self) -> None:
        """Release the channel."""


class AggregatorService(Protocol):
    """What the aggregator offers to any transport (implemented by AggregatorRuntime).

    ``collaborator`` is the authenticated identity: the gRPC server passes the common
    name of the caller's certificate after checking it equals the claimed name.
    Methods raise RefusedError with a reason the caller is told.
    """

    def check_member(self, collaborator: str) -> None:
        """Refuse a name the plan does not list (checked as a call arrives, before its request)."""

    def join(self, collaborator: str, plan_hash: str, workspace_hash: str | None = None) -> FederationInfo:
        """Admit ``collaborator``; ``workspace_hash`` is the one it sent (None: the transport has none)."""

    def get_tasks(self, collaborator: str, plan_hash: str, timeout: float) -> TaskAssignment:
        """Wait up to ``timeout`` for tasks (a blocking long poll, for the in-process transport)."""

    def poll_tasks(self, collaborator: str, plan_hash: str, final: bool) -> TaskAssignment | None:
        """The tasks now, without waiting: None while the answer would be WAIT, unless ``final``."""

    def watch(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Have ``listener`` called (it must not block) when ``poll_tasks`` may answer otherwise;
        returns the function that stops it."""

    def get_model(self, collaborator: str, plan_hash: str, round_number: int) -> ModelState: ...

    def expect(
        self, collaborator: str, plan_hash: str, round_number: int, task: str, model_digest: str, failure: str = ""
    ) -> None:
        """Refuse a result that is not owed now, or not computed from the current round's
        model (``model_digest``, unless it reports a ``failure``), before its tensors are received."""

    def submit(self, result: TaskResult, plan_hash: str) -> None: ...

    def upload_slot(self) -> AbstractContextManager[None]:
        """Held while a result's tensors are being received, bounding buffered uploads."""

    def receiving(self, collaborator: str, round_number: int, task: str, is_delta: bool = False) -> Destination:
        """Where the tensors of an upload expected now go as they arrive (``expected_tensors``;
        ``is_delta``: the header's, for what is measured of them as they arrive);
        ``submit`` takes the result whose tensors it holds. RefusedError (busy) if it cannot be made now."""

    def expected_tensors(self) -> TensorSpecs:
        """name -> (dtype, shape) of the global model, to refuse a bad stream early."""
