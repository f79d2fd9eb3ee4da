"""The name a metric record goes by in TensorBoard and MLflow: ``task/metric`` for the
aggregator's (aggregated metrics, the round's timing and bytes), ``task/metric/site`` for a
site's, so that each site's curve sits beside the aggregated one."""

from __future__ import annotations

from accord.aggregator.metrics import MetricRecord

AGGREGATOR = "aggregator"


def tag(record: MetricRecord) -> str:
    """The record's series name (metric and site names are checked on arrival: result_checks.py)."""
    name = f"{record.task}/{record.metric}"
    return name if record.origin == AGGREGATOR else f"{name}/{record.origin}"
