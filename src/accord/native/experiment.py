"""init / setup / run_experiment: a whole federation in this process, as in OpenFL's native API.

The plan is built in memory and validated like a workspace's. Up to THREAD_PER_SITE_UP_TO
sites, the real AggregatorRuntime serves one Collaborator thread per site over the in-process
transport (the same codec checks as gRPC), so what runs here runs the same way across sites;
more sites run on accord.simulation (the same RoundEngine and plan, a few threads in all).
"""

from __future__ import annotations

import functools
import logging
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accord.aggregator.runtime import AggregatorRuntime
from accord.collaborator.collaborator import Collaborator, SiteFailure
from accord.collaborator.site import site_options
from accord.errors import AccordError, PlanError
from accord.experiment.local import FederationReport
from accord.export.consensus import is_keras_model, is_torch_module
from accord.logs import configure_logging, ensure_logging
from accord.messages import Action, TaskAssignment
from accord.metric_records import read_metrics
from accord.native.model import FederatedModel, save_native
from accord.plan.loader import Plan, apply_overrides, read_yaml, resolve, validate_plan
from accord.tensors.state import ModelState, load_state, save_state
from accord.transport.inprocess import InProcessClient
from accord.workspace.create import TEMPLATES_DIR, list_templates

log = logging.getLogger("accord.native")

#: plan sections that the native API takes from Python objects, not from the plan.
PYTHON_SECTIONS = ("data_loader", "task_runner")
#: how long a collaborator's get_tasks waits before asking again (bounds how fast it stops).
_POLL_SECONDS = 1.0
#: up to this many sites, one Collaborator thread each over the in-process transport; more
#: run as simulated clients on a few threads (accord.simulation: no thread per site)
THREAD_PER_SITE_UP_TO = 16
#: OpenFL's native-API template names -> Accord's templates of the same framework and task
OPENFL_TEMPLATES = {"keras_cnn_mnist": "keras_cnn_digits", "torch_cnn_mnist": "torch_digits"}


@dataclass
class ExperimentResult(FederationReport):
    """What ``run_experiment`` did: the plan, per-round metrics and the final FederatedModel.

    ``aggregated("aggregated_model_validation/accuracy")`` lists a metric per round;
    ``final(key)`` is its last value; ``records`` has every collaborator's metrics too.
    """

    plan: Plan | None = None
    model: FederatedModel | None = None
    errors: dict[str, BaseException] = field(default_factory=dict)

    def final(self, key: str = "aggregated_model_validation/accuracy") -> float:
        """The last aggregated value of ``task/metric``."""
        values = self.aggregated(key)
        if not values:
            raise AccordError(f"no aggregated metric {key!r} was recorded")
        return values[-1]


@dataclass
class Session:
    """Module-level defaults: the plan from ``init``, the latest model and run."""

    plan: dict[str, Any] = field(default_factory=dict)
    #: the collaborators' names ``init`` was given (OpenFL's ``col_names``): setup's default names
    col_names: list[str] | None = None
    last_model: FederatedModel | None = None
    last_run: ExperimentResult | None = None


SESSION = Session()


def init(
    template: str | Path = "torch_digits", log_level: str | None = "INFO", col_names: Sequence[str] | None = None
) -> dict[str, Any]:
    """Take the plan of a workspace template (or a plan.yaml, or a workspace folder) as default.

    Returns the resolved plan as a dict (Accord's defaults merged in). ``log_level`` sets
    up Accord's logging on stdout (None leaves logging alone). ``col_names`` (OpenFL's
    spelling) names the collaborators: ``setup``'s default names, and the only names
    ``run_experiment`` then takes.
    """
    if log_level is not None:
        configure_logging(log_level)
    names = None if col_names is None else list(col_names)
    if names is not None and (not names or not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names)):
        raise AccordError(f"col_names {names!r} must be distinct, non-empty names", "pass e.g. col_names=['one', 'two']")
    SESSION.col_names = names
    SESSION.plan = _read_plan(template)
    return resolve(SESSION.plan, Path.cwd())


def setup(
    num_collaborators: int = 2,
    model: FederatedModel | None = None,
    names: Sequence[str] | None = None,
    partition: str = "iid",
    alpha: float = 0.5,
    seed: int = 0,
) -> dict[str, FederatedModel]:
    """``{name: FederatedModel on its shard}``; ``model`` defaults to the latest one created.

    Names are ``init``'s ``col_names`` when there are as many, else ``collaborator1..N``, unless given.
    """
    model = model or SESSION.last_model
    if model is None:
        raise AccordError("no FederatedModel yet", "create one with fx.FederatedModel(...) first")
    if names is None and SESSION.col_names is not None and len(SESSION.col_names) == num_collaborators:
        names = SESSION.col_names
    names = list(names) if names is not None else [f"collaborator{i}" for i in range(1, num_collaborators + 1)]
    if len(names) != num_collaborators:
        raise AccordError(f"{len(names)} names given for {num_collaborators} collaborators")
    return dict(zip(names, model.setup(num_collaborators, partition, alpha, seed)))


def run_experiment(
    collaborators: Mapping[str, FederatedModel] | Sequence[FederatedModel],
    override_config: Mapping[str, Any] | None = None,
    workspace: str | Path | None = None,
    timeout: float | None = None,
) -> Any:
    """Run a federation of ``collaborators`` in this process; return the final framework model
    (a torch or Keras one also has ``save_native(path)``, as OpenFL's returned model does).

    ``override_config`` holds dotted plan keys (``aggregator.settings.rounds_to_train``);
    ``workspace`` (a new temporary folder by default) gets ``save/`` and ``logs/``. The
    result, with metrics and the final FederatedModel, is also kept as ``fx.last_run``.
    A collaborator's exception stops the others and is raised here.
    """
    sites = _named(collaborators)
    root = Path(workspace) if workspace is not None else Path(tempfile.mkdtemp(prefix="accord-native-"))
    root.mkdir(parents=True, exist_ok=True)
    plan = build_plan(list(sites), override_config or {}, root)
    ensure_logging()
    result = _federate(plan, sites, timeout)
    SESSION.last_run = result
    assert result.model is not None
    framework_model = result.model.model
    if is_torch_module(framework_model) or is_keras_model(framework_model):
        framework_model.save_native = functools.partial(save_native, framework_model)  # OpenFL's final_fl_model.save_native(path)
    return framework_model


def build_plan(names: list[str], overrides: Mapping[str, Any], workspace: Path, source: str = "run_experiment plan") -> Plan:
    """The session's plan with ``names`` as collaborators and ``overrides`` applied, validated."""
    for key in overrides:
        if key.split(".")[0] in PYTHON_SECTIONS:
            raise PlanError(
                f"override {key}: the native API takes the data and the model from Python objects",
                "set them on FederatedDataSet / FederatedModel instead",
            )
    raw = apply_overrides(SESSION.plan, {**overrides, "collaborators": names})
    return validate_plan(raw, workspace, source=source)


def _federate(plan: Plan, sites: dict[str, FederatedModel], timeout: float | None) -> ExperimentResult:
    started = time.perf_counter()
    settings = plan.model.collaborator.settings
    with_optimizer = settings.opt_treatment == "CONTINUE_GLOBAL"
    first = next(iter(sites.values()))
    initial = first.runner.get_weights(with_optimizer=with_optimizer)
    agg = plan.model.aggregator.settings
    save_state(plan.resolve_path(agg.init_state_path), initial)
    if len(sites) > THREAD_PER_SITE_UP_TO:
        errors, finished = _simulate_sites(plan, sites, initial, timeout)
    else:
        runtime = AggregatorRuntime(plan, model=initial)
        try:
            errors = _run_sites(runtime, plan, sites, timeout)
        finally:
            runtime.close()
        finished = runtime.finished
    codes = {name: int(name in errors) for name in sites}
    result = ExperimentResult(plan.workspace, codes, read_metrics(plan.resolve_path(agg.metrics_path)),
                              time.perf_counter() - started, plan=plan, errors=errors)
    SESSION.last_run = result
    if errors:
        name, exc = next(iter(errors.items()))
        exc.add_note(f"raised by collaborator {name!r} during accord.native.run_experiment")
        raise exc
    if not finished:
        raise AccordError(f"the federation did not finish within {timeout} s", "raise run_experiment's timeout")
    final = first.with_data(first.source_data)
    final.runner.set_weights(load_state(plan.resolve_path(agg.last_state_path)), with_optimizer=with_optimizer)
    result.model = final
    return result


def _simulate_sites(
    plan: Plan, sites: dict[str, FederatedModel], initial: ModelState, timeout: float | None
) -> tuple[dict[str, BaseException], bool]:
    """The sites run as simulated clients (accord.simulation, a thread per core): the first
    failure stops the federation. Returns the errors and whether it finished."""
    from accord.simulation import Site, run_simulation
    from accord.simulation.driver import TimedOut

    def client_fn(name: str) -> Site:
        return Site(sites[name].runner, sites[name].data_loader)

    try:
        result = run_simulation(plan, client_fn, list(sites), initial=initial, timeout=timeout, stop_on_error=True)
    except TimedOut:
        return {}, False
    return dict(result.errors), result.finished


def _run_sites(runtime: AggregatorRuntime, plan: Plan, sites: dict[str, FederatedModel], timeout: float | None) -> dict[str, BaseException]:
    """One Collaborator thread per site; the first failure tells the others to quit."""
    stop = threading.Event()
    errors: dict[str, BaseException] = {}

    def work(name: str, site: FederatedModel) -> None:
        client = _StoppableClient(stop, runtime, name, plan.hash, _POLL_SECONDS)
        try:
            if site.data_loader is None:
                raise AccordError(f"collaborator {name!r} has no data", "use FederatedModel.setup() or fx.setup()")
            Collaborator(name, client, site.runner, site.data_loader, **site_options(plan)).run()
        except BaseException as exc:  # raised in the caller's thread by _federate
            cause = exc.__cause__ if isinstance(exc, SiteFailure) else None  # the task code's own error
            errors.setdefault(name, cause or exc)
            stop.set()

    threads = [threading.Thread(target=work, args=item, name=f"accord-{item[0]}", daemon=True) for item in sites.items()]
    for thread in threads:
        thread.start()
    deadline = None if timeout is None else time.monotonic() + timeout
    for thread in threads:
        thread.join(None if deadline is None else max(deadline - time.monotonic(), 0.0))
    if any(t.is_alive() for t in threads):  # timed out: let them see QUIT
        stop.set()
        for thread in threads:
            thread.join(2 * _POLL_SECONDS + 5)
    return errors


class _StoppableClient(InProcessClient):
    """An InProcessClient that answers QUIT once ``stop`` is set."""

    def __init__(self, stop: threading.Event, *args: Any) -> None:
        super().__init__(*args)
        self._stop = stop

    def get_tasks(self) -> TaskAssignment:
        if self._stop.is_set():
            return TaskAssignment(Action.QUIT, -1)
        return super().get_tasks()


def _named(collaborators: Mapping[str, FederatedModel] | Sequence[FederatedModel]) -> dict[str, FederatedModel]:
    if isinstance(collaborators, Mapping):
        sites = dict(collaborators)
    else:
        sites = {f"collaborator{i}": site for i, site in enumerate(collaborators, start=1)}
    if not sites:
        raise AccordError("run_experiment needs at least one collaborator", "pass fx.setup(num_collaborators=2)")
    unknown = [name for name in sites if SESSION.col_names is not None and name not in SESSION.col_names]
    if unknown:
        raise AccordError(
            f"collaborator(s) {unknown} are not among fx.init's col_names {SESSION.col_names}",
            "name them in fx.init(..., col_names=[...]) or use those names",
        )
    bad = [name for name, site in sites.items() if not isinstance(site, FederatedModel)]
    if bad:
        raise AccordError(f"collaborators {bad} are not FederatedModel objects", "pass the result of fx.setup()")
    return sites


def _read_plan(template: str | Path) -> dict[str, Any]:
    """The raw plan mapping of a template name, a plan.yaml file or a workspace folder."""
    if isinstance(template, str) and template in OPENFL_TEMPLATES:
        log.info("OpenFL's template %s is Accord's %s here", template, OPENFL_TEMPLATES[template])
        template = OPENFL_TEMPLATES[template]
    if isinstance(template, str) and template in list_templates():
        return read_yaml(TEMPLATES_DIR / template / "plan" / "plan.yaml")
    path = Path(template)
    if path.is_dir():
        path = path / "plan" / "plan.yaml"
    if not path.is_file():
        raise PlanError(
            f"{template!s} is neither a workspace template nor a plan file",
            f"use one of {', '.join(list_templates())}, a plan.yaml or a workspace folder",
        )
    return read_yaml(path)
