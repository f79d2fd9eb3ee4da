"""The collaborator's task loop, independent of the transport and of the ML framework."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from accord.collaborator.accept import PHASES, Refused, accept
from accord.collaborator.executor import Executor, SiteFailure, chain, read_only, stamp
from accord.collaborator.secure_site import SecureSite
from accord.data.base import DataLoader
from accord.errors import AccordError, RefusedError
from accord.messages import Action, ConfigValue, Task, TaskAssignment, TaskResult
from accord.mods.base import Instruction, Mod
from accord.plan.aggregator_settings import SecureAggregationSettings
from accord.plan.compression import NO_COMPRESSION, CompressionSettings
from accord.plan.round_settings import TaskSpec
from accord.runners.base import TaskRunner
from accord.strategies import secure_phases
from accord.tensors.compression import Encoded, UpdateEncoder
from accord.tensors.digest import model_digest
from accord.tensors.state import ModelState, tensor_specs
from accord.transport.base import AggregatorClient, TensorSpecs

if TYPE_CHECKING:
    from accord.audit.site_record import SiteRecord
    from accord.collaborator.site_report import SiteReport
    from accord.secagg.signing import Signing

log = logging.getLogger("accord.collaborator")

OPT_TREATMENTS = ("RESET", "CONTINUE_LOCAL", "CONTINUE_GLOBAL")
T = TypeVar("T")

__all__ = ["OPT_TREATMENTS", "Collaborator", "SiteFailure"]


class Collaborator:
    """Runs the tasks the aggregator assigns, round after round, until told to quit.

    Each task goes in as an Instruction (the site's own definition of the task, the round's
    accepted config, its global model) through the chain of client ``mods`` to the Executor
    (collaborator/executor.py), and its reply goes back to the aggregator.
    ``opt_treatment``: RESET clears the optimizer before each training task;
    CONTINUE_LOCAL keeps this site's optimizer state across rounds; CONTINUE_GLOBAL
    ships optimizer state with the model so it is aggregated too.
    ``delta_updates``: send (trained - global) instead of the trained weights.
    ``config_schema``: the per-round config keys (and types) this site accepts, its own plan's
    strategy's; an assignment with another key, or a wrongly typed value, is refused
    (RefusedError kind ``plan``, the aggregator told) before anything runs. ``strategy`` names
    that strategy in the refusal.
    ``data_error``: why this site's data loader could not be built (``data`` is then None):
    the collaborator still joins, reports it (its ``report`` only) as the failure of its
    first task, and stops.
    Each result carries the digest of the round's global model (tensors/digest.py).
    ``compression``: the plan's pipeline; a training result is encoded after the mods (they see
    full precision), its float tensors as changes from the round's global model, and the
    site's error-feedback residuals live in this object (tensors/compression.py).
    ``secure``: its plan's secure aggregation (enabled): the site runs secure aggregation's phases
    (collaborator/secure_site.py), masks its training reply after the mods, and refuses to send
    an update in the clear; ``signing`` (the deployment's: secure_site.site_signing) signs them;
    ``secure_cohort``: the cohort its own plan expects a round to ask (site.expected_cohort), the
    floor of the threshold it accepts; ``secure_state``: the file where it keeps the seeds it
    advertised under and the rounds it revealed in (None: in memory only).
    ``report`` (collaborator/site_report.py) shows each task and round this site works in, and
    each model download and result upload as it goes (its ``transfers``, the client's byte counter).
    ``record``: the site's signed audit record (accord/audit/site_record.py; the deployment's):
    each global model received and each result acknowledged.
    """

    def __init__(
        self,
        name: str,
        client: AggregatorClient,
        runner: TaskRunner,
        data: DataLoader | None,
        opt_treatment: str = "RESET",
        delta_updates: bool = False,
        clock: Callable[[], float] = time.perf_counter,
        tasks: Mapping[str, TaskSpec] | None = None,
        data_error: SiteFailure | None = None,
        config_schema: Mapping[str, type] | None = None,
        mods: Sequence[Mod] = (),
        strategy: str = "FedAvg",
        compression: CompressionSettings = NO_COMPRESSION,
        secure: SecureAggregationSettings | None = None,
        signing: Signing | None = None,
        secure_cohort: int = 0,
        secure_state: Path | None = None,
        report: SiteReport | None = None,
        record: SiteRecord | None = None,
    ) -> None:
        if opt_treatment not in OPT_TREATMENTS:
            raise AccordError(f"opt_treatment {opt_treatment!r} is not one of {OPT_TREATMENTS}")
        self.name = name
        self.client = client
        self.runner = runner
        self.clock = clock
        self.tasks = tasks
        self.data_error = data_error
        self.config_schema = dict(config_schema or {})
        self.strategy = strategy
        self.executor = Executor(runner, data, opt_treatment, delta_updates)
        self._execute = chain(self.executor.execute, mods)
        self._with_optimizer = opt_treatment == "CONTINUE_GLOBAL"
        self._global: ModelState | None = None
        self._global_round = -1
        self._global_digest = ""
        self.record = record
        self._own_specs: TensorSpecs | None = None
        self._own_bytes = 0
        self.report = report
        self._encoder = UpdateEncoder(compression) if compression.upload else None
        self._secure = SecureSite(name, secure, signing, secure_cohort, secure_state) if secure is not None and secure.enabled else None
        self._phases = PHASES | frozenset(secure_phases.SIGNED_PHASES) if self._secure is not None else PHASES

    def run(self) -> int:
        """Join, then run rounds until QUIT; returns the number of rounds this site worked in."""
        info = self.client.join()
        log.info("%s joined the federation (%d rounds, now at round %d)", self.name, info.rounds_to_train, info.round_number)
        worked = 0
        while True:
            assignment = self.client.get_tasks()
            if assignment.action is Action.QUIT:
                log.info("%s: the federation has finished", self.name)
                if self.data_error is not None:  # never asked to work, but its data is still broken
                    raise self.data_error
                return worked
            if assignment.action is Action.WAIT:
                continue
            tasks = assignment.phase not in secure_phases.REPLY_PHASES
            if tasks and self.report is not None:
                self.report.round_started()
            config = self._accepted(assignment)
            try:
                if not tasks:
                    self._send((self._phase_reply(assignment), None))
                else:
                    for task in assignment.tasks:
                        sent = self._run_or_report(assignment, task, config)
                        self._send(sent)
                        if self.report is not None:
                            self.report.task_done(sent[0])
            except PhaseRefused as refusal:
                log.error("%s: %s", self.name, refusal)
                self._tell_failure(assignment.round_number, assignment.tasks[0], refusal.report, assignment.phase)
                continue
            except RefusedError as exc:
                if exc.kind != "state":
                    raise
                log.warning("%s: %s; asking for the current tasks", self.name, exc.message)
                self._global_round = -1  # the aggregator may have rolled back: fetch again (and load it)
                continue
            worked += 1
            if tasks and self.report is not None:
                self.report.round_done(assignment.round_number)

    def _accepted(self, assignment: TaskAssignment) -> dict[str, ConfigValue]:
        """The assignment's config as this site accepts it; if refused, the aggregator is told
        (as the failure of the first task, so the round need not wait) and Refused is raised."""
        try:
            config = accept(assignment, self.config_schema, self.strategy, self._phases)
            if self._secure is not None and assignment.phase == "train" and any(self._local(t).returns_model for t in assignment.tasks):
                raise Refused(
                    "the aggregator asks for a training task in the clear (phase 'train'), but this site's plan "
                    "enables secure aggregation: it sends its update masked only",
                    "a training task in the clear refused by the site: its plan enables secure aggregation",
                )
        except Refused as refusal:
            log.error("%s: round %d refused: %s", self.name, assignment.round_number, refusal.message)
            if assignment.tasks:
                self._tell_failure(assignment.round_number, assignment.tasks[0], refusal.report, assignment.phase)
            raise
        if config:
            log.info("%s: round %d config %s", self.name, assignment.round_number, _shown(config))
        return config

    def _send(self, sent: tuple[TaskResult, Encoded | None]) -> None:
        """Send a result, with its encoding when it has one (raw: called as by any client)."""
        result, encoded = sent
        size = sum(value.nbytes for value in (result.tensors or {}).values())
        with self._shown(f"round {result.round_number}: sending the {result.task} result", size):
            if encoded is None:
                self.client.send_result(result)
            else:
                self.client.send_result(result, encoded)
        if self.record is not None and result.phase == "train" and self._secure is None:  # acknowledged
            self.record.sent(result, encoded)

    def _shown(self, what: str, size: int) -> AbstractContextManager[None]:
        """The transfer of ``what`` (at most ``size`` bytes) shown while inside, if this site reports."""
        return nullcontext() if self.report is None else self.report.transfers.shown(what, size)

    def held(self) -> str:
        """What this site holds now, for the line that says it stopped."""
        if self._global_round < 0:
            return "it holds no global model yet"
        return f"it holds the global model of round {self._global_round} (digest {self._global_digest[:16]}...)"

    def _phase_reply(self, assignment: TaskAssignment) -> TaskResult:
        """This site's reply to a secure aggregation phase beyond its tasks (its payload, and in
        ``unmask`` its correction); PhaseRefused if the site refuses what the aggregator asks."""
        self._fetch_global(assignment.round_number)  # the reply is bound to this round's model
        secure, global_model = self._secure, self._global
        assert secure is not None and global_model is not None
        phase, round_number = assignment.phase, assignment.round_number
        payload = self._secured(lambda: secure.answer(phase, round_number, assignment.payload, global_model))
        tensors = self._secured(lambda: secure.tensors(phase, round_number))
        task = assignment.tasks[0].name if assignment.tasks else phase
        return TaskResult(
            self.name, round_number, task, 0, {}, tensors, model_digest=self._global_digest, phase=phase, payload=payload
        )

    def _secured(self, call: Callable[[], T]) -> T:
        """A secure aggregation step; its refusal (a malformed, out-of-order or unsafe request) as PhaseRefused."""
        try:
            return call()
        except RefusedError as exc:
            raise PhaseRefused(exc.message, exc.fix) from exc

    def _run_or_report(
        self, assignment: TaskAssignment, task: Task, config: Mapping[str, ConfigValue]
    ) -> tuple[TaskResult, Encoded | None]:
        """``run_task`` and the result's encoding (None: raw; masked under secure aggregation); if
        the site's data, task code, a mod or the encoding fails, the aggregator is told (so the
        round need not wait for this site) and SiteFailure is raised."""
        round_number = assignment.round_number
        try:
            if self.data_error is not None:
                raise self.data_error
            result = self.run_task(round_number, task, config, assignment.phase)
            if self._secure is not None and result.tensors:  # masked after the mods: the last step before it leaves
                assert self._global is not None
                secure, global_model = self._secure, self._global
                return self._secured(lambda: secure.masked(result, assignment.payload, global_model)), None
            return result, self._encoded(result)
        except SiteFailure as failure:
            log.warning(
                "%s: task %s of round %d failed at this site; telling the aggregator only: %s",
                self.name,
                task.name,
                round_number,
                failure.report,
            )
            self._tell_failure(round_number, task, failure.report, assignment.phase)
            raise

    def _encoded(self, result: TaskResult) -> Encoded | None:
        """The result's tensors encoded by the plan's pipeline (None: raw, or no tensors)."""
        if self._encoder is None or not result.tensors:
            return None
        assert self._global is not None
        try:
            return self._encoder.encode(result.tensors, self._global, result.is_delta)
        except AccordError as exc:
            raise SiteFailure(exc.message, exc.fix, report="the update could not be encoded (compression_pipeline)") from exc

    def _tell_failure(self, round_number: int, task: Task, report: str, phase: str = "train") -> None:
        try:
            self.client.send_result(TaskResult(self.name, round_number, task.name, 0, {}, failure=report, phase=phase))
        except AccordError as exc:
            log.warning("%s: the aggregator was not told of the failure: %s", self.name, exc.message)

    def run_task(
        self, round_number: int, task: Task, config: Mapping[str, ConfigValue] | None = None, phase: str = "train"
    ) -> TaskResult:
        """Run one task of ``round_number`` through the mods and the executor and build its result.

        With the site's own task definitions (``tasks``), only the task's name is taken from
        the aggregator: function and arguments come from this site's plan. ``config`` (already
        accepted) reaches training tasks only.
        """
        task = self._local(task)
        started = self.clock()
        self._fetch_global(round_number)  # every result carries the digest of this round's model
        assert self._global is not None
        instruction = Instruction(
            collaborator=self.name,
            round_number=round_number,
            task=task,
            global_model=read_only(self._global),
            model_digest=self._global_digest,
            config=dict(config or {}) if task.function == "train" else {},
            phase=phase,
        )
        reply = self._execute(instruction)
        return stamp(reply, instruction, self.clock() - started)

    def _local(self, task: Task) -> Task:
        if self.tasks is None:
            return task
        spec = self.tasks.get(task.name)
        if spec is None:
            raise RefusedError(
                f"the aggregator asked for task {task.name!r}, which this site's plan does not define",
                "make sure both sides run the same plan",
                kind="plan",
            )
        return Task(task.name, spec.function, dict(spec.kwargs), spec.returns_model)

    def _fetch_global(self, round_number: int) -> None:
        """Receive the global model of ``round_number`` (once), checked against this site's own
        model's tensors before anything is allocated, and compute its digest."""
        if self._global_round == round_number:
            return
        if self._own_specs is None:
            own = self.runner.get_weights(with_optimizer=self._with_optimizer)
            self._own_specs = tensor_specs(own)
            self._own_bytes = sum(value.nbytes for value in own.values())
        # the last round's model dropped first: the client receives into its arrays if nothing else holds them
        self._global, self._global_round, self._global_digest = None, -1, ""
        self.executor.forget()  # a new round's model: load it when a task needs it
        with self._shown(f"round {round_number}: receiving the global model", self._own_bytes):
            self._global = self.client.get_model(round_number, expected=self._own_specs)
        self._global_digest = model_digest(self._global, round_number)
        self._global_round = round_number
        if self.record is not None:
            self.record.received(round_number, self._global_digest)


class PhaseRefused(AccordError):
    """This site refuses what the aggregator asks in a secure aggregation phase: it logs why,
    tells the aggregator (the phase's failure) and goes on with the next request."""

    @property
    def report(self) -> str:
        """What the aggregator is told."""
        return f"refused by the site: {self.message[:300]}"


def _shown(config: Mapping[str, ConfigValue]) -> str:
    """``key=value`` pairs for the site's log (e.g. ``proximal_mu=0.01``)."""
    return ", ".join(f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}" for key, value in sorted(config.items()))
