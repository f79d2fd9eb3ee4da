"""The sinks a plan's ``aggregator.settings.metrics`` turns on, opened when the aggregator starts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from accord.aggregator.events import Sink
from accord.aggregator.guarded import Guarded
from accord.aggregator.sinks import mlflow_run, prometheus, tensorboard
from accord.aggregator.sinks.callback import CallbackSink
from accord.aggregator.sinks.mlflow_run import MlflowSink
from accord.aggregator.sinks.prometheus import PrometheusSink
from accord.aggregator.sinks.tensorboard import TensorBoardSink
from accord.imports import optional_module
from accord.metric_records import RecordSink
from accord.plan.loader import Plan
from accord.plan.objects import workspace_function
from accord.plan.sink_settings import is_tracking_server


@dataclass
class PlanSinks:
    """The open sinks: ``engine`` (engine events), ``records`` (each closed round's records),
    ``refused`` (the gRPC server's refusal hook); ``close`` them once serving ends. A sink that
    raises is warned of once, then counted (guarded.py): it never fails a round's close."""

    tensorboard: TensorBoardSink | None = None
    mlflow: MlflowSink | None = None
    prometheus: PrometheusSink | None = None
    callback: CallbackSink | None = None
    _closers: list[Callable[[bool], object]] = field(default_factory=list)

    @property
    def engine(self) -> list[Sink]:
        if self.prometheus is None:
            return []
        return [Guarded(self.prometheus, self.prometheus.name, "an engine event was not counted")]

    @property
    def records(self) -> list[RecordSink]:
        sinks: list[RecordSink | None] = [
            self.tensorboard,
            self.mlflow,
            self.prometheus.records if self.prometheus else None,
            self.callback,
        ]
        return [s for s in sinks if s is not None]

    def refused(self, reason: str) -> None:
        if self.prometheus is not None:
            self.prometheus.refused(reason)

    def opened(self, round_number: int) -> None:
        """The round open as serving starts (its RoundOpened came before the sinks subscribed)."""
        if self.prometheus is not None:
            self.prometheus.opened(round_number)

    def close(self, finished: bool) -> None:
        """Close every sink, the last opened first (``finished``: whether the federation ran to its end)."""
        while self._closers:
            self._closers.pop()(finished)


def open_sinks(plan: Plan) -> PlanSinks:
    """Open the sinks ``plan`` turns on; every extra they need is checked before any opens (one
    AccordError naming ``pip install 'accord[...]'``), and those opened are closed if a later one fails."""
    settings = plan.model.aggregator.settings.metrics
    needed = (
        (settings.tensorboard, "tensorboard", "tensorboard", tensorboard.INSTALL),
        (settings.mlflow, "mlflow", "mlflow", mlflow_run.INSTALL),
        (settings.prometheus, "prometheus", "prometheus_client", prometheus.INSTALL),
    )
    for section, name, module, install in needed:
        if section is not None:
            optional_module(module, f"aggregator.settings.metrics.{name}", install)
    sinks = PlanSinks()
    try:
        if settings.tensorboard is not None:
            key = "aggregator.settings.metrics.tensorboard.log_dir"
            board = sinks.tensorboard = TensorBoardSink(plan.resolve_path(settings.tensorboard.log_dir, key))
            sinks._closers.append(lambda _: board.end())
        if settings.mlflow is not None:
            wanted = settings.mlflow
            uri = wanted.tracking_uri
            if not is_tracking_server(uri):
                uri = mlflow_run.tracking_uri(plan.resolve_path(uri, "aggregator.settings.metrics.mlflow.tracking_uri"))
            run = sinks.mlflow = MlflowSink(uri, wanted.experiment, wanted.run_name, plan.hash)
            sinks._closers.append(run.end)
        if settings.callback is not None:
            key = "aggregator.settings.metrics.callback.template"
            function = workspace_function(key, settings.callback.template, plan.workspace)
            called = sinks.callback = CallbackSink(function, settings.callback.template)
            sinks._closers.append(lambda _: called.close())
        if settings.prometheus is not None:
            endpoint = sinks.prometheus = PrometheusSink(settings.prometheus.host, settings.prometheus.port)
            sinks._closers.append(lambda _: endpoint.close())
    except BaseException:
        sinks.close(False)
        raise
    return sinks
