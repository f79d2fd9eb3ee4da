"""The site's entry point: an Instruction in, a TaskResult out, through the plan's chain of
client mods (accord/mods) around the :class:`Executor`, which runs the task through the
TaskRunner (the ML seam beneath it)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from accord.data.base import DataLoader
from accord.dp.ledger import BudgetSpent
from accord.errors import AccordError
from accord.messages import TaskResult
from accord.mods.base import CallNext, Instruction, Mod
from accord.plan.round_settings import validates_global
from accord.runners.base import TaskOutput, TaskRunner
from accord.tensors.state import ModelState


class SiteFailure(AccordError):
    """A task failed at this site (its data loader, task code or a client mod): reported to the
    aggregator, then the collaborator stops (exit code 2).

    ``message`` and ``fix`` stay at the site (its console and log: they may name local paths
    and quote its data); the aggregator is sent ``report`` only: a category naming the loader
    class, the task or the mod and the exception's type, never its text.
    """

    def __init__(self, message: str, fix: str | None = None, *, report: str = "the task failed at the site") -> None:
        super().__init__(message, fix)
        self.report = report


class Executor:
    """Runs one instruction's task through the runner: a training task on the round's global
    model (with the accepted config on top of the task's own kwargs), a validation task on the
    global model or on the locally trained one, as the task says.

    ``opt_treatment`` RESET clears the optimizer before each training task; ``with_optimizer``
    (CONTINUE_GLOBAL) moves optimizer state with the model; ``delta_updates`` replies with
    trained - global. The reply's ``task_seconds`` is the collaborator's to stamp.
    """

    def __init__(
        self,
        runner: TaskRunner,
        data: DataLoader | None,
        opt_treatment: str = "RESET",
        delta_updates: bool = False,
    ) -> None:
        self.runner = runner
        self.data = data
        self.reset_optimizer = opt_treatment == "RESET"
        self.with_optimizer = opt_treatment == "CONTINUE_GLOBAL"
        self.delta_updates = delta_updates
        self._loaded_round = -1

    def forget(self) -> None:
        """The runner no longer holds a known round's global model (load it again when asked)."""
        self._loaded_round = -1

    def execute(self, instruction: Instruction) -> TaskResult:
        task = instruction.task
        tensors: ModelState | None = None
        if instruction.trains:
            self._load(instruction)
            if self.reset_optimizer:
                self.runner.reset_optimizer()
            kwargs = {**task.kwargs, **instruction.config}  # the round's config wins (docs/plan.md)
            output = self._compute(f"task {task.name}", lambda: self.runner.train(self._site_data(), **kwargs))
            tensors = self._trained(instruction.global_model)
        elif task.function == "validate":
            if validates_global(task.function, task.kwargs):
                self._load(instruction)
            kwargs = {k: v for k, v in task.kwargs.items() if k != "apply"}
            output = self._compute(f"task {task.name}", lambda: self.runner.validate(self._site_data(), **kwargs))
        else:
            raise AccordError(f"task {task.name!r} asks for unknown function {task.function!r}")
        return TaskResult(
            collaborator=instruction.collaborator,
            round_number=instruction.round_number,
            task=task.name,
            sample_count=int(output.sample_count),
            metrics={k: float(v) for k, v in output.metrics.items()},
            tensors=tensors,
            is_delta=self.delta_updates and tensors is not None,
            model_digest=instruction.model_digest,
            phase=instruction.phase,
        )

    def _load(self, instruction: Instruction) -> None:
        if self._loaded_round != instruction.round_number:
            self.runner.set_weights(instruction.global_model, with_optimizer=self.with_optimizer)
            self._loaded_round = instruction.round_number

    def _trained(self, global_model: ModelState) -> ModelState:
        trained = self.runner.get_weights(with_optimizer=self.with_optimizer)
        self._loaded_round = -1
        if not self.delta_updates:
            return trained
        return {name: _delta(value, global_model[name]) for name, value in trained.items()}

    def _site_data(self) -> DataLoader:
        """The site's data loader; it is None only with a data error, reported before any task runs."""
        if self.data is None:
            raise AccordError("this site has no data loader", "check this site's data path in plan/data.yaml")
        return self.data

    def _compute(self, what: str, call: Callable[[], TaskOutput]) -> TaskOutput:
        """Run the site's task code; its error becomes a SiteFailure naming the loader and path
        (for the site) and reporting only ``what`` and the error's type (to the aggregator)."""
        try:
            return call()
        except BudgetSpent as spent:
            raise SiteFailure(f"{what}: {spent.message}", spent.fix, report=f"{what} refused: {spent.report}") from spent
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


def chain(execute: CallNext, mods: Sequence[Mod]) -> CallNext:
    """``execute`` wrapped by ``mods``: the first mod is the innermost (it sees the reply first,
    the instruction last), so a reply passes through the mods in the plan's order. A mod's own
    error becomes a SiteFailure naming the mod."""
    call = execute
    for mod in mods:
        call = _link(mod, call)
    return call


def _link(mod: Mod, call_next: CallNext) -> CallNext:
    name = type(mod).__name__

    def call(instruction: Instruction) -> TaskResult:
        try:
            reply = mod(instruction, call_next)
        except BudgetSpent as spent:  # a refusal the aggregator is told of, with its reason
            raise SiteFailure(spent.message, spent.fix, report=spent.report) from spent
        except AccordError:
            raise
        except Exception as exc:
            raise SiteFailure(
                f"client mod {name} failed with {type(exc).__name__}: {str(exc)[:300]}",
                "fix the mod or its settings in collaborator.settings.mods; then start the collaborator again",
                report=f"client mod {name} failed ({type(exc).__name__})",
            ) from exc
        if not isinstance(reply, TaskResult):
            raise SiteFailure(
                f"client mod {name} returned a {type(reply).__name__}, not a TaskResult",
                "return call_next(instruction)'s reply (or a changed copy of it) from the mod",
                report=f"client mod {name} failed (no reply)",
            )
        return reply

    return call


def read_only(state: ModelState) -> ModelState:
    """Read-only views of ``state``'s arrays (what mods see of the global model)."""
    views = {}
    for name, value in state.items():
        view = np.asarray(value).view()
        view.flags.writeable = False
        views[name] = view
    return views


def stamp(reply: TaskResult, instruction: Instruction, seconds: float) -> TaskResult:
    """The chain's reply with the protocol's fields set from the instruction (a mod cannot change
    whose result it is, its round, task, phase or model digest) and the task's time."""
    return dataclasses.replace(
        reply,
        collaborator=instruction.collaborator,
        round_number=instruction.round_number,
        task=instruction.task.name,
        model_digest=instruction.model_digest,
        phase=instruction.phase,
        task_seconds=seconds,
    )


def _delta(trained: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """trained - reference for floating-point tensors; other tensors travel as values."""
    return np.subtract(trained, reference, dtype=trained.dtype) if trained.dtype.kind == "f" else trained
