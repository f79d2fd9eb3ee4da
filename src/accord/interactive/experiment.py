"""FLExperiment: prepare an experiment's workspace archive for the sites, then run its aggregator.

``prepare_workspace_distribution`` writes the notebook's code (as source), the plan and the
initial model into the federation's workspace, freezes the plan and exports the archive
the sites import (``fx workspace import``). ``start_experiment`` serves the federation
from this Python process over gRPC with mutual TLS (the same ``start_aggregator`` as
``fx aggregator start``) while the sites run ``fx collaborator start``.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from accord.errors import AccordError
from accord.experiment.local import FederationReport
from accord.interactive.data import DataInterface
from accord.interactive.distribution import PLAN_FILE, write_distribution
from accord.interactive.federation import Federation
from accord.interactive.model import ModelInterface
from accord.interactive.tasks import TaskInterface
from accord.logs import ensure_logging
from accord.metric_records import MetricRecord, read_metrics
from accord.plan.loader import Plan, load_plan
from accord.plan.schema import NAME_PATTERN
from accord.runners.from_plan import build_runner
from accord.tensors.state import load_state


class FLExperiment:
    """One experiment of ``federation``; ``experiment_name`` names its archive (``NAME.zip``)."""

    def __init__(self, federation: Federation, experiment_name: str = "experiment") -> None:
        if not isinstance(federation, Federation):
            raise AccordError(f"federation is a {type(federation).__name__}", "pass a Federation(workspace=...)")
        if not isinstance(experiment_name, str) or not re.fullmatch(NAME_PATTERN, experiment_name):
            raise AccordError(
                f"experiment name {experiment_name!r} must match {NAME_PATTERN}", "use letters, digits, '_', '-', '.'"
            )
        self.federation = federation
        self.experiment_name = experiment_name
        self.run: ExperimentRun | None = None

    @property
    def workspace(self) -> Path:
        return self.federation.workspace

    def prepare_workspace_distribution(
        self,
        model_provider: ModelInterface,
        task_keeper: TaskInterface,
        data_loader: DataInterface,
        rounds_to_train: int = 10,
        opt_treatment: str = "RESET",
        delta_updates: bool = False,
        device: str = "cpu",
        seed: int = 0,
        override_config: Mapping[str, Any] | None = None,
        output: str | os.PathLike[str] | None = None,
    ) -> Path:
        """Write code, plan and initial model, freeze the plan, export the archive; returns its path.

        ``device`` (torch only: ``cpu``, ``cuda``, ``auto``) is where the sites put the model;
        ``override_config`` holds further dotted plan keys (``aggregator.settings.best_metric``);
        the archive goes to ``output`` (default ``WORKSPACE/EXPERIMENT_NAME.zip``).
        """
        result = write_distribution(
            self.workspace,
            self.experiment_name,
            model_provider,
            task_keeper,
            data_loader,
            network={"agg_addr": self.federation.aggregator_address, "agg_port": self.federation.port},
            settings={
                "rounds_to_train": rounds_to_train, "opt_treatment": opt_treatment, "delta_updates": delta_updates,
                "device": device, "seed": seed, "overrides": dict(override_config or {}),
            },
            output=Path(output) if output is not None else self.workspace / f"{self.experiment_name}.zip",
        )
        logging.getLogger("accord.interactive").info(
            "workspace archive %s (%d files, plan hash %s)", result.path, len(result.files), result.plan_hash
        )
        return result.path

    def start_experiment(self, fresh: bool = False) -> ExperimentRun:
        """Start the aggregator in this process (a background thread); returns the run to wait on.

        As ``fx aggregator start``: an unfinished run of this plan saved in the workspace
        (the kernel died, the machine restarted) is resumed at its open round, unless ``fresh``.
        """
        if self.run is not None and not self.run.done:
            raise AccordError("this experiment's aggregator is already running", "wait() for it to finish")
        plan = load_plan(self.workspace / PLAN_FILE, workspace=self.workspace)
        if not plan.model.collaborators:
            raise AccordError(
                "no site has been certified for this experiment yet",
                "sign each site's request with federation.certify_collaborator(PACKAGE) first",
            )
        ensure_logging()
        self.run = ExperimentRun(plan, fresh)
        return self.run


class ExperimentRun:
    """The aggregator serving ``plan`` in a background thread of this process."""

    def __init__(self, plan: Plan, fresh: bool = False) -> None:
        self.plan = plan
        self.fresh = fresh
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="accord-aggregator", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        from accord.aggregator.serve import start_aggregator

        try:
            start_aggregator(self.plan, fresh=self.fresh, stop=self._stop)
        except BaseException as exc:  # raised in the caller's thread by wait()
            self._error = exc

    @property
    def done(self) -> bool:
        """Whether the aggregator has stopped (every round served, or an error)."""
        return not self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every round ran (True) or ``timeout`` seconds passed (False); raises the aggregator's error."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            return False
        if self._error is not None:
            raise self._error
        return True

    def stop(self, timeout: float = 30.0) -> None:
        """Stop serving before the end; the saved state lets ``start_experiment()`` resume it."""
        self._stop.set()
        self._thread.join(timeout)

    @property
    def records(self) -> list[MetricRecord]:
        """Every metric the aggregator recorded so far (``logs/metrics.jsonl``)."""
        return read_metrics(self.plan.resolve_path(self.plan.model.aggregator.settings.metrics_path))

    def aggregated(self, key: str = "aggregated_model_validation/accuracy") -> list[float]:
        """Per-round aggregated values of ``task/metric`` (the final validation last)."""
        return FederationReport(self.plan.workspace, {}, self.records).aggregated(key)

    def get_last_model(self) -> Any:
        """The framework's model (nn.Module, keras.Model) holding the last global weights."""
        return self._model(self.plan.model.aggregator.settings.last_state_path, "last")

    def get_best_model(self) -> Any:
        """The framework's model holding the best global weights (by the plan's best_metric)."""
        return self._model(self.plan.model.aggregator.settings.best_state_path, "best")

    def _model(self, relative: str, which: str) -> Any:
        path = self.plan.resolve_path(relative)
        if not path.is_file():
            best = self.plan.model.aggregator.settings.best_metric
            needs = f"; the best model needs {best} among the validation metrics" if which == "best" else ""
            raise AccordError(f"no {which} model yet ({path})", "wait() for the run first" + needs)
        runner = build_runner(self.plan)  # the workspace's own code, as the sites run it
        runner.set_weights(load_state(path))
        return runner.model  # type: ignore[attr-defined]  # the interactive runners hold .model; TaskRunner does not require it
