"""run_simulation: a plan's federation with simulated clients in this process or on Ray."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accord.aggregation.robust import one_blas_thread
from accord.aggregator.plan_engine import engine_for, plan_assigner, strategy_for
from accord.aggregator.reporting import metrics_sink
from accord.errors import AccordError, PlanError
from accord.metric_records import MetricsLog
from accord.plan.loader import Plan, load_plan
from accord.simulation.backends import make_backend
from accord.simulation.clients import ClientFn, SiteSetup, initial_weights
from accord.simulation.driver import RoundDriver, Stopped, TimedOut
from accord.simulation.plan_clients import PlanClients
from accord.simulation.spool import RoundSpool
from accord.tensors.state import ModelState, load_state, save_state

log = logging.getLogger("accord.simulation")


@dataclass(frozen=True)
class RoundSummary:
    """One closed round: its cohort's size, wall time and aggregated metrics."""

    round_number: int
    clients: int
    seconds: float
    metrics: dict[str, float]
    final_validation: bool = False


@dataclass
class SimulationResult:
    """What ``run_simulation`` did: each round, the final model, the clients that failed."""

    plan: Plan
    registered: int
    rounds: list[RoundSummary] = field(default_factory=list)
    model: ModelState = field(default_factory=dict)
    best_score: float | None = None
    #: the first error of each failed client (up to 100), and how many failed in all
    errors: dict[str, BaseException] = field(default_factory=dict)
    failed_clients: int = 0
    finished: bool = False

    @property
    def clients_per_second(self) -> float:
        """Clients trained per second over the training rounds."""
        trained = [r for r in self.rounds if not r.final_validation]
        seconds = sum(r.seconds for r in trained)
        return sum(r.clients for r in trained) / seconds if seconds > 0 else 0.0

    def final(self, key: str = "aggregated_model_validation/accuracy") -> float:
        """The last round's aggregated ``task/metric``."""
        values = [r.metrics[key] for r in self.rounds if key in r.metrics]
        if not values:
            raise AccordError(f"no aggregated metric {key!r} was recorded")
        return values[-1]


def run_simulation(
    plan: Plan | str | Path,
    client_fn: ClientFn | None = None,
    clients: int | Sequence[str] = 2,
    *,
    backend: str = "threads",
    workers: int | None = None,
    ray_address: str | None = None,
    ray_init: Mapping[str, Any] | None = None,
    initial: ModelState | None = None,
    overrides: Mapping[str, Any] | None = None,
    timeout: float | None = None,
    stop_on_error: bool = False,
) -> SimulationResult:
    """Run ``plan``'s federation (a Plan, a workspace folder or a plan.yaml) with simulated
    ``clients`` (a count: names ``"1".."N"``; or the names), on the deployment's RoundEngine
    and the plan's strategy, sampling, assigner and straggler policy.

    ``client_fn(cid)`` makes a client for each round's tasks (a Site or a NumpyClient,
    simulation/clients.py); by default the workspace's own task runner and data loader.
    ``backend``: ``"threads"`` (``workers`` threads, default one per core) or ``"ray"``
    (``ray_address``: ``"auto"`` for the cluster ``ray start`` made; ``ray_init``: more
    ``ray.init`` arguments). The first global model is ``initial``, else the plan's
    init_state_path, else the first client's. A client that fails is reported to the engine as
    a deployment's site is (the round goes on without it) unless ``stop_on_error``. Metrics go
    to the plan's metrics_path, the last and best models to its paths.
    """
    plan = _plan_of(plan, overrides)
    if plan.model.aggregator.settings.secure_aggregation.enabled:
        raise PlanError(
            "aggregator.settings.secure_aggregation is enabled, but the simulation does not run secure aggregation's phases",
            "run the federation with fx aggregator start / fx collaborator start, or disable secure aggregation to simulate",
        )
    names = _names(clients)
    client_fn = client_fn or PlanClients(plan)
    settings, site = plan.model.aggregator.settings, plan.model.collaborator.settings
    with_optimizer = site.opt_treatment == "CONTINUE_GLOBAL"
    if initial is None:
        init_path = plan.resolve_path(settings.init_state_path)
        initial = load_state(init_path) if init_path.is_file() else initial_weights(client_fn(names[0]), names[0], with_optimizer)
    strategy = strategy_for(plan, names)
    engine = engine_for(plan, plan_assigner(plan, names), strategy, dict(initial), time.monotonic, None, collaborators=names)
    engine.events.subscribe(metrics_sink(MetricsLog(plan.resolve_path(settings.metrics_path))))
    setup = SiteSetup(site.opt_treatment, site.delta_updates, tuple(plan.mods()))
    result = SimulationResult(plan, len(names))
    runner = make_backend(backend, workers, ray_address, **dict(ray_init or {}))
    log.info("simulating %d clients on %s (%d workers)", len(names), backend, runner.workers)
    spool = RoundSpool(plan.resolve_path(settings.state_dir))
    driver = RoundDriver(engine, runner, client_fn, setup, spool, stop_on_error=stop_on_error)
    deadline = None if timeout is None else time.monotonic() + timeout
    best: ModelState | None = None
    timed_out = False
    try:
        # BLAS on one thread, as the aggregator serves (aggregator/serve.py): the driver's change
        # norms and means are small products, and BLAS threads spin-waiting for each other took
        # the CPU the clients' worker threads need on a busy machine
        with one_blas_thread():
            while engine.current is not None:
                cohort, final = len(engine.current.assigned), engine.is_final_validation(engine.round_number)
                outcome = driver.run_round(deadline)
                best = outcome.best_model if outcome.best_model is not None else best
                result.rounds.append(RoundSummary(outcome.round_number, cohort, outcome.wall_seconds, dict(outcome.metrics), final))
        result.finished = True
    except Stopped:
        pass
    except TimedOut:
        timed_out = True  # a client may hang: its thread is not waited for
        raise
    finally:
        runner.close(wait=not timed_out)
        result.errors, result.failed_clients = dict(driver.errors.first), driver.errors.count
    result.model, result.best_score = engine.model, engine.best_score
    save_state(plan.resolve_path(settings.last_state_path), engine.model)
    if best is not None:
        save_state(plan.resolve_path(settings.best_state_path), best)
    return result


def _plan_of(plan: Plan | str | Path, overrides: Mapping[str, Any] | None) -> Plan:
    """The plan itself, or that of a workspace folder or plan.yaml file, with ``overrides``."""
    if isinstance(plan, Plan):
        if overrides:
            raise AccordError("overrides were given with a Plan object", "pass the workspace folder (or plan.yaml) instead")
        return plan
    path = Path(plan)
    if path.is_dir():
        return load_plan(path / "plan" / "plan.yaml", overrides, workspace=path)
    if path.is_file():
        return load_plan(path, overrides)
    raise PlanError(f"{path} is neither a workspace folder nor a plan file", "pass a workspace made by fx workspace create")


def _names(clients: int | Sequence[str]) -> tuple[str, ...]:
    """The clients' names: ``"1".."N"`` for a count (a built-in set's shard numbers)."""
    if isinstance(clients, bool) or not isinstance(clients, (int, Sequence)) or isinstance(clients, str):
        raise AccordError(f"clients is {clients!r}", "pass the number of clients or a list of their names")
    if isinstance(clients, int):
        if clients < 1:
            raise AccordError(f"clients is {clients}; a simulation needs at least 1", "pass clients >= 1")
        return tuple(str(i) for i in range(1, clients + 1))
    names = tuple(clients)
    if not names or len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
        raise AccordError("the clients' names must be distinct non-empty strings (at least one)", "pass a list of unique names")
    return names
