"""What a simulated client is, and one client's tasks of a round run in a worker.

``client_fn(cid)`` returns either a :class:`Site` (a TaskRunner and its DataLoader, as a
deployment's site has: the plan's tasks run through the same Executor and client mods) or a
:class:`NumpyClient` (``fit``/``evaluate`` on NumPy arrays). It is called for each task of a
round, in a worker, and the client dropped after: nothing of it is kept between rounds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from accord.collaborator.executor import Executor, SiteFailure, chain, read_only, stamp
from accord.data.base import DataLoader
from accord.errors import AccordError
from accord.messages import ConfigValue, Task, TaskResult
from accord.mods.base import Instruction, Mod
from accord.runners.base import TaskOutput, TaskRunner
from accord.tensors.state import ModelState


@runtime_checkable
class NumpyClient(Protocol):
    """A client on NumPy arrays: the plan's ``train`` tasks call ``fit``, its ``validate``
    tasks ``evaluate`` (on the round's global model, or on ``fit``'s model for
    ``apply: local``). ``parameters`` are read-only: return new arrays."""

    def fit(self, parameters: ModelState, config: Mapping[str, Any]) -> tuple[ModelState, int, Mapping[str, float]]:
        """Train from ``parameters`` (``config``: the task's kwargs and the round's config);
        the trained tensors, the number of samples and metrics such as ``{"loss": ...}``."""

    def evaluate(self, parameters: ModelState, config: Mapping[str, Any]) -> tuple[int, Mapping[str, float]]:
        """The number of samples and metrics such as ``{"accuracy": ...}`` of ``parameters``."""


@dataclass(frozen=True)
class Site:
    """A client as a deployment's site is: the TaskRunner and this client's DataLoader."""

    runner: TaskRunner
    data: DataLoader | None


ClientFn = Callable[[str], "Site | NumpyClient"]


class NumpyRunner:
    """A TaskRunner over a :class:`NumpyClient`: it holds the tensors the executor loads."""

    def __init__(self, client: NumpyClient) -> None:
        self.client = client
        self.weights: ModelState = {}

    def get_weights(self, with_optimizer: bool = False) -> ModelState:
        return dict(self.weights)

    def set_weights(self, state: ModelState, with_optimizer: bool = False) -> None:
        self.weights = dict(state)

    def reset_optimizer(self) -> None:
        """A NumpyClient keeps no optimizer state between tasks."""

    def train(self, data: Any, **kwargs: Any) -> TaskOutput:
        weights, samples, metrics = self.client.fit(self.weights, kwargs)
        self.weights = {name: np.asarray(value) for name, value in weights.items()}
        return TaskOutput(dict(metrics), int(samples))

    def validate(self, data: Any, **kwargs: Any) -> TaskOutput:
        samples, metrics = self.client.evaluate(self.weights, kwargs)
        return TaskOutput(dict(metrics), int(samples))


class _NoData:
    """The data of a NumpyClient: its own business (the executor only hands it on)."""

    batch_size = 0


def as_site(client: Any, cid: str) -> Site:
    """``client_fn``'s return value as a Site; AccordError naming ``cid`` if it is neither."""
    if isinstance(client, Site):
        return client
    if isinstance(client, NumpyClient):
        return Site(NumpyRunner(client), _NoData())  # type: ignore[arg-type]
    raise AccordError(
        f"client_fn({cid!r}) returned a {type(client).__name__}, neither a Site nor a NumpyClient",
        "return accord.simulation.Site(runner, data_loader) or an object with fit() and evaluate()",
    )


def initial_weights(client: Any, cid: str, with_optimizer: bool) -> ModelState:
    """The first global model, from a client: its runner's weights, or a NumpyClient's
    ``get_parameters()``."""
    if not isinstance(client, Site) and hasattr(client, "get_parameters"):
        return dict(client.get_parameters())
    site = as_site(client, cid)
    if isinstance(site.runner, NumpyRunner):
        raise AccordError(
            "no initial model: the NumpyClient has no get_parameters() and the plan's init_state_path has no file",
            "pass run_simulation(..., initial=model) or give the client a get_parameters() method",
        )
    return site.runner.get_weights(with_optimizer=with_optimizer)


@dataclass(frozen=True)
class SiteSetup:
    """How every simulated site runs its tasks: the plan's collaborator settings and mods."""

    opt_treatment: str = "RESET"
    delta_updates: bool = False
    mods: tuple[Mod, ...] = ()


@dataclass(frozen=True)
class ClientJob:
    """One round's work for some clients: their tasks, the round's config, model digest, phase."""

    round_number: int
    tasks: tuple[Task, ...]
    config: Mapping[str, ConfigValue]
    model_digest: str
    phase: str = "train"


@dataclass
class ClientRun:
    """What one client's tasks of a round gave: its results (a failure last, if one failed) and
    the error raised at the site, if any (kept in this process, never sent)."""

    cid: str
    results: list[TaskResult] = field(default_factory=list)
    error: BaseException | None = None


def run_clients(client_fn: ClientFn, setup: SiteSetup, job: ClientJob, model: ModelState, cids: Sequence[str]) -> list[ClientRun]:
    """Each of ``cids``' tasks of ``job`` on the round's global ``model`` (what a worker runs)."""
    view = read_only(model)
    return [run_client(client_fn, setup, job, view, cid) for cid in cids]


def run_client(client_fn: ClientFn, setup: SiteSetup, job: ClientJob, model: ModelState, cid: str) -> ClientRun:
    """One client made by ``client_fn``, its tasks of ``job`` run through the executor and the
    mods as at a deployment's site; a failure is reported as a deployment's site reports it."""
    run = ClientRun(cid)
    task = job.tasks[0]
    try:
        try:
            site = as_site(client_fn(cid), cid)
        except AccordError:
            raise
        except Exception as exc:
            raise SiteFailure(
                f"client_fn({cid!r}) failed with {type(exc).__name__}: {str(exc)[:300]}",
                "fix the client_fn",
                report=f"client_fn failed ({type(exc).__name__})",
            ) from exc
        executor = Executor(site.runner, site.data, setup.opt_treatment, setup.delta_updates)
        execute = chain(executor.execute, setup.mods)
        for task in job.tasks:
            started = time.perf_counter()
            config = dict(job.config) if task.function == "train" else {}
            instruction = Instruction(cid, job.round_number, task, model, job.model_digest, config, job.phase)
            run.results.append(stamp(execute(instruction), instruction, time.perf_counter() - started))
    except (SiteFailure, AccordError) as exc:
        report = exc.report if isinstance(exc, SiteFailure) else f"the client failed ({type(exc).__name__})"
        run.error = (exc.__cause__ if isinstance(exc, SiteFailure) else None) or exc
        run.results.append(TaskResult(cid, job.round_number, task.name, 0, {}, failure=report, phase=job.phase))
    return run
