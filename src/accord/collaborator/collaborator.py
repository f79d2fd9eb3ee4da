"""The collaborator's task loop, independent of the transport and of the ML framework."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

import numpy as np

from accord.data.base import DataLoader
from accord.errors import AccordError, RefusedError
from accord.messages import Action, Task, TaskResult
from accord.plan.schema import TaskSpec, validates_global
from accord.runners.base import TaskOutput, TaskRunner
from accord.tensors.digest import model_digest
from accord.tensors.state import ModelState, tensor_specs
from accord.transport.base import AggregatorClient, TensorSpecs

log = logging.getLogger("accord.collaborator")

OPT_TREATMENTS = ("RESET", "CONTINUE_LOCAL", "CONTINUE_GLOBAL")


class SiteFailure(AccordError):
    """A task failed at this site (its data loader or task code): reported to the aggregator,
    then the collaborator stops (exit code 2).

    ``message`` and ``fix`` stay at the site (its console and log: they may name local paths
    and quote its data); the aggregator is sent ``report`` only: a category naming the loader
    class or the task and the exception's type, never its text.
    """

    def __init__(self, message: str, fix: str | None = None, *, report: str = "the task failed at the site") -> None:
        super().__init__(message, fix)
        self.report = report


class Collaborator:
    """Runs the tasks the aggregator assigns, round after round, until told to quit.

    ``opt_treatment``: RESET clears the optimizer before each training task;
    CONTINUE_LOCAL keeps this site's optimizer state across rounds; CONTINUE_GLOBAL
    ships optimizer state with the model so it is aggregated too.
    ``delta_updates``: send (trained - global) instead of the trained weights.
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
    ) -> None:
        if opt_treatment not in OPT_TREATMENTS:
            raise AccordError(f"opt_treatment {opt_treatment!r} is not one of {OPT_TREATMENTS}")
        self.name = name
        self.client = client
        self.runner = runner
        self.data = data
        self.opt_treatment = opt_treatment
        self.delta_updates = delta_updates
        self.clock = clock
        self.tasks = tasks
        self.data_error = data_error
        self._global: ModelState | None = None
        self._global_round = -1
        self._global_digest = ""
        self._loaded_round = -1
        self._own_specs: TensorSpecs | None = None

    @property
    def with_optimizer(self) -> bool:
        return self.opt_treatment == "CONTINUE_GLOBAL"

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
            try:
                for task in assignment.tasks:
                    self.client.send_result(self._run_or_report(assignment.round_number, task))
            except RefusedError as exc:
                if exc.kind != "state":
                    raise
                log.warning("%s: %s; asking for the current tasks", self.name, exc.message)
                self._global_round = self._loaded_round = -1  # the aggregator may have rolled back: fetch again
                continue
            worked += 1

    def _run_or_report(self, round_number: int, task: Task) -> TaskResult:
        """``run_task``; if the site's data or task code fails, the aggregator is told (so the
        round need not wait for this site) and SiteFailure is raised."""
        try:
            if self.data_error is not None:
                raise self.data_error
            return self.run_task(round_number, task)
        except SiteFailure as failure:
            log.warning(
                "%s: task %s of round %d failed at this site; telling the aggregator only: %s",
                self.name,
                task.name,
                round_number,
                failure.report,
            )
            report = TaskResult(self.name, round_number, task.name, 0, {}, failure=failure.report)
            try:
                self.client.send_result(report)
            except AccordError as exc:
                log.warning("%s: the aggregator was not told of the failure: %s", self.name, exc.message)
            raise

    def _site_data(self) -> DataLoader:
        """The site's data loader; it is None only with data_error, which is reported before any task runs."""
        if self.data is None:
            raise AccordError("this site has no data loader", "check this site's data path in plan/data.yaml")
        return self.data

    def _compute(self, what: str, call: Callable[[], TaskOutput]) -> TaskOutput:
        """Run the site's task code; its error becomes a SiteFailure naming the loader and path
        (for the site) and reporting only ``what`` and the error's type (to the aggregator)."""
        try:
            return call()
        except AccordError as exc:
            raise SiteFailure(f"{what}: {exc.message}", exc.fix, report=f"{what} failed ({type(exc).__name__})") from exc
        except Exception as exc:
            loader = type(self.data).__name__
            path = getattr(self.data, "data_path", None)
            raise SiteFailure(
                f"{what} failed with {type(exc).__name__}: {str(exc)[:300]} (data loader {loader}"
                + (f", data path {path})" if path is not None else ")"),
                f"check this site's data at that path and the task code (runner {type(self.runner).__name__}); "
                "then start the collaborator again",
                report=f"{what} failed ({type(exc).__name__})",
            ) from exc

    def run_task(self, round_number: int, task: Task) -> TaskResult:
        """Run one task of ``round_number`` and build its result.

        With the site's own task definitions (``tasks``), only the task's name is taken from
        the aggregator: function and arguments come from this site's plan.
        """
        task = self._local(task)
        started = self.clock()
        tensors: ModelState | None = None
        if task.function == "train":
            self._load_global(round_number)
            if self.opt_treatment == "RESET":
                self.runner.reset_optimizer()
            output = self._compute(f"task {task.name}", lambda: self.runner.train(self._site_data(), **task.kwargs))
            tensors = self._trained_tensors()
        elif task.function == "validate":
            if validates_global(task.function, task.kwargs):
                self._load_global(round_number)
            else:
                self._fetch_global(round_number)  # for its digest: the result belongs to this round's model
            kwargs = _without(task.kwargs, "apply")
            output = self._compute(f"task {task.name}", lambda: self.runner.validate(self._site_data(), **kwargs))
        else:
            raise AccordError(f"task {task.name!r} asks for unknown function {task.function!r}")
        return self._result(round_number, task, output, tensors, self.clock() - started)

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
            self._own_specs = tensor_specs(self.runner.get_weights(with_optimizer=self.with_optimizer))
        self._global = self.client.get_model(round_number, expected=self._own_specs)
        self._global_digest = model_digest(self._global, round_number)
        self._global_round = round_number

    def _load_global(self, round_number: int) -> None:
        self._fetch_global(round_number)
        if self._loaded_round != round_number:
            assert self._global is not None
            self.runner.set_weights(self._global, with_optimizer=self.with_optimizer)
            self._loaded_round = round_number

    def _trained_tensors(self) -> ModelState:
        trained = self.runner.get_weights(with_optimizer=self.with_optimizer)
        self._loaded_round = -1
        if not self.delta_updates:
            return trained
        assert self._global is not None
        return {name: _delta(value, self._global[name]) for name, value in trained.items()}

    def _result(self, round_number: int, task: Task, output: TaskOutput, tensors: ModelState | None, seconds: float) -> TaskResult:
        return TaskResult(
            collaborator=self.name,
            round_number=round_number,
            task=task.name,
            sample_count=int(output.sample_count),
            metrics={k: float(v) for k, v in output.metrics.items()},
            tensors=tensors,
            is_delta=self.delta_updates and tensors is not None,
            task_seconds=seconds,
            model_digest=self._global_digest,
        )


def _without(kwargs: dict, key: str) -> dict:
    return {k: v for k, v in kwargs.items() if k != key}


def _delta(trained: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """trained - reference for floating-point tensors; other tensors travel as values."""
    return np.subtract(trained, reference, dtype=trained.dtype) if trained.dtype.kind == "f" else trained


