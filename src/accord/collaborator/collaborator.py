"""The collaborator's task loop, independent of the transport and of the ML framework."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence

from accord.collaborator.accept import Refused, accept
from accord.collaborator.executor import Executor, SiteFailure, chain, read_only, stamp
from accord.data.base import DataLoader
from accord.errors import AccordError, RefusedError
from accord.messages import Action, ConfigValue, Task, TaskAssignment, TaskResult
from accord.mods.base import Instruction, Mod
from accord.plan.schema import TaskSpec
from accord.runners.base import TaskRunner
from accord.tensors.digest import model_digest
from accord.tensors.state import ModelState, tensor_specs
from accord.transport.base import AggregatorClient, TensorSpecs

log = logging.getLogger("accord.collaborator")

OPT_TREATMENTS = ("RESET", "CONTINUE_LOCAL", "CONTINUE_GLOBAL")

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
        self._own_specs: TensorSpecs | None = None

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
            config = self._accepted(assignment)
            try:
                for task in assignment.tasks:
                    self.client.send_result(self._run_or_report(assignment.round_number, task, config))
            except RefusedError as exc:
                if exc.kind != "state":
                    raise
                log.warning("%s: %s; asking for the current tasks", self.name, exc.message)
                self._global_round = -1  # the aggregator may have rolled back: fetch again (and load it)
                continue
            worked += 1

    def _accepted(self, assignment: TaskAssignment) -> dict[str, ConfigValue]:
        """The assignment's config as this site accepts it; if refused, the aggregator is told
        (as the failure of the first task, so the round need not wait) and Refused is raised."""
        try:
            config = accept(assignment, self.config_schema, self.strategy)
        except Refused as refusal:
            log.error("%s: round %d refused: %s", self.name, assignment.round_number, refusal.message)
            if assignment.tasks:
                self._tell_failure(assignment.round_number, assignment.tasks[0], refusal.report)
            raise
        if config:
            log.info("%s: round %d config %s", self.name, assignment.round_number, _shown(config))
        return config

    def _run_or_report(self, round_number: int, task: Task, config: Mapping[str, ConfigValue]) -> TaskResult:
        """``run_task``; if the site's data, task code or a mod fails, the aggregator is told (so
        the round need not wait for this site) and SiteFailure is raised."""
        try:
            if self.data_error is not None:
                raise self.data_error
            return self.run_task(round_number, task, config)
        except SiteFailure as failure:
            log.warning(
                "%s: task %s of round %d failed at this site; telling the aggregator only: %s",
                self.name,
                task.name,
                round_number,
                failure.report,
            )
            self._tell_failure(round_number, task, failure.report)
            raise

    def _tell_failure(self, round_number: int, task: Task, report: str) -> None:
        try:
            self.client.send_result(TaskResult(self.name, round_number, task.name, 0, {}, failure=report))
        except AccordError as exc:
            log.warning("%s: the aggregator was not told of the failure: %s", self.name, exc.message)

    def run_task(self, round_number: int, task: Task, config: Mapping[str, ConfigValue] | None = None) -> TaskResult:
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
            self._own_specs = tensor_specs(self.runner.get_weights(with_optimizer=self._with_optimizer))
        self._global = self.client.get_model(round_number, expected=self._own_specs)
        self._global_digest = model_digest(self._global, round_number)
        self._global_round = round_number
        self.executor.forget()  # a new round's model: load it when a task needs it


def _shown(config: Mapping[str, ConfigValue]) -> str:
    """``key=value`` pairs for the site's log (e.g. ``proximal_mu=0.01``)."""
    return ", ".join(f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}" for key, value in sorted(config.items()))
