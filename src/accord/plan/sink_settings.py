"""The plan's aggregator.settings.metrics: the metrics sinks (TensorBoard, MLflow, Prometheus, a callback)."""

from __future__ import annotations

from pydantic import Field, field_validator

from accord.plan.strict import Strict
from accord.plan.templates import WORKSPACE_TEMPLATE


class TensorBoardSettings(Strict):
    """TensorBoard event files (the extra accord[tensorboard]) in ``log_dir``, inside the workspace."""

    log_dir: str = "logs/tensorboard"


class MlflowSettings(Strict):
    """An MLflow run (the extra accord[mlflow]) per aggregator start in ``experiment``:
    ``tracking_uri`` an ``http(s)://`` tracking server, or a folder inside the workspace (MLflow's
    file store)."""

    tracking_uri: str = Field("logs/mlruns", min_length=1)
    experiment: str = Field("accord", min_length=1, max_length=256)
    run_name: str | None = Field(None, min_length=1, max_length=256)

    @field_validator("tracking_uri")
    @classmethod
    def _server_or_folder(cls, value: str) -> str:
        if ":" in value.split("/", 1)[0] and not is_tracking_server(value):
            raise ValueError("expected an http:// or https:// tracking server, or a folder inside the workspace")
        return value


def is_tracking_server(uri: str) -> bool:
    """Whether an MLflow ``tracking_uri`` names a server (else it is a folder of the workspace)."""
    return uri.startswith(("http://", "https://"))


class PrometheusSettings(Strict):
    """A Prometheus ``/metrics`` endpoint on the aggregator (the extra accord[prometheus]); no
    authentication: keep it on a loopback or otherwise private address."""

    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(9464, ge=0, le=65535)


class CallbackSettings(Strict):
    """A function of the workspace (OpenFL's ``log_metric_callback``), ``src.module.function``,
    called on a thread of its own with each closed round's metrics, one call a record, as
    ``function(origin, task, metric, value, round)``."""

    template: str

    @field_validator("template")
    @classmethod
    def _workspace_function(cls, value: str) -> str:
        if not WORKSPACE_TEMPLATE.fullmatch(value):
            raise ValueError(f"{value!r} is not allowed: name a function of the workspace's src package (src.module.function)")
        return value


class MetricsSinksSettings(Strict):
    """Where the aggregator reports each round besides metrics.jsonl: each sink off (null) by default."""

    tensorboard: TensorBoardSettings | None = None
    mlflow: MlflowSettings | None = None
    prometheus: PrometheusSettings | None = None
    callback: CallbackSettings | None = None
