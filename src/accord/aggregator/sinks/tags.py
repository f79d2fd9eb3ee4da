"""The name a metric record goes by in TensorBoard and MLflow: ``aggregator/task/metric`` for the
aggregator's (aggregated metrics, the round's timing and bytes), ``site/NAME/task/metric`` for
a site's. No name is a prefix folder of another (MLflow's file store keeps each as a file)."""

from __future__ import annotations

from accord.metric_records import MetricRecord

AGGREGATOR = "aggregator"


def tag(record: MetricRecord) -> str:
    """The record's series name (metric and site names are checked on arrival: result_checks.py)."""
    origin = AGGREGATOR if record.origin == AGGREGATOR else f"site/{record.origin}"
    return f"{origin}/{record.task}/{record.metric}"
