"""An MLflow run (the extra accord[mlflow]) per aggregator start: each closed round's records
as metrics, their step the round number, logged in batches by the sink's own thread
(queued.py). A folder of the workspace is MLflow's file store (the sqlite store needs
SQLAlchemy, which mlflow-skinny leaves out)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

from accord.aggregator.sinks.queued import QueuedSink
from accord.aggregator.sinks.tags import tag
from accord.errors import AccordError
from accord.imports import optional_module
from accord.metric_records import MetricRecord

log = logging.getLogger("accord.aggregator")

INSTALL = "pip install 'accord[mlflow]'"
#: MLflow takes at most this many metrics in one batch
BATCH = 1000


def tracking_uri(folder: Path) -> str:
    """The file-store URI of ``folder``; MLflow 3 refuses its file store unless it is opted in."""
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return folder.as_uri()


def metric_key(record: MetricRecord) -> str:
    """The record's MLflow key (MLflow allows letters, digits and ``_ - . : /`` and space: no ``+``)."""
    return tag(record).replace("+", "_")


class MlflowSink(QueuedSink):
    """Logs each closed round's records to one run of ``experiment`` at ``uri``."""

    def __init__(self, uri: str, experiment: str, run_name: str | None, plan_hash: str) -> None:
        optional_module("mlflow", "aggregator.settings.metrics.mlflow", INSTALL)
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        self._metric = Metric
        try:
            self._client = client = MlflowClient(tracking_uri=uri)
            found = client.get_experiment_by_name(experiment)
            experiment_id = found.experiment_id if found is not None else client.create_experiment(experiment)
            run = client.create_run(experiment_id, run_name=run_name, tags={"accord.plan_hash": plan_hash})
        except Exception as exc:  # MLflow raises its own and the HTTP library's errors
            raise AccordError(
                f"aggregator.settings.metrics.mlflow: MLflow at {uri} did not open a run: {exc!r}"[:500],
                "check tracking_uri (a running tracking server, or a folder inside the workspace)",
            ) from None
        self.run_id: str = run.info.run_id
        super().__init__(self._log, f"MLflow run {self.run_id}")
        log.info("MLflow run %s of experiment %r at %s", self.run_id, experiment, uri)

    def _log(self, records: Sequence[MetricRecord]) -> None:
        stamp = int(time.time() * 1000)
        metrics = [self._metric(metric_key(r), r.value, stamp, r.round) for r in records]
        for start in range(0, len(metrics), BATCH):
            self._client.log_batch(self.run_id, metrics=metrics[start : start + BATCH])

    def end(self, finished: bool) -> None:
        """Log what is queued, then end the run (FINISHED, or KILLED when the federation stopped
        early), both on the sink's thread: a server that stopped answering holds this CLOSE_SECONDS at most."""

        def terminate() -> None:
            try:
                self._client.set_terminated(self.run_id, "FINISHED" if finished else "KILLED")
            except Exception as exc:
                log.warning("MLflow run %s could not be ended: %r", self.run_id, exc)

        self.close(terminate)
