"""What the aggregator tells its operator of results and closed rounds: log lines and the
metrics records of a round (pure formatting: the runtime decides when)."""

from __future__ import annotations

import logging

from accord.aggregator.events import EngineEvent, RoundClosed, RoundOutcome, Sink
from accord.aggregator.metrics import MetricRecord, MetricsLog
from accord.messages import TaskResult

log = logging.getLogger("accord.aggregator")


def log_result(result: TaskResult) -> None:
    """One line per result taken: its metrics, or that its task failed at the site."""
    if result.failure:
        log.warning(
            "round %d  %s failed %s at its site: %s (it owes nothing more this round)",
            result.round_number,
            result.collaborator,
            result.task,
            result.failure,
        )
        return
    shown = "  ".join(f"{k}={v:.4f}" for k, v in result.metrics.items())
    log.info(
        "round %d  %-12s %-32s %s  (n=%d, %.2fs)",
        result.round_number,
        result.collaborator,
        result.task,
        shown,
        result.sample_count,
        result.task_seconds,
    )


def warn_left_out(outcome: RoundOutcome, policy: str) -> tuple[str, ...]:
    """Warn of the sites a closed round went without and of every update bound that bit in it
    (naming the site); returns the bounds as ``fx aggregator status`` shows them."""
    if outcome.stragglers:
        log.warning(
            "round %d closed without the reports of %s (straggler policy %s); their late results "
            "will be dropped and they get the next round's tasks",
            outcome.round_number,
            ", ".join(outcome.stragglers),
            policy,
        )
    for event in outcome.bounds:
        log.warning("round %d: update bound: %s", outcome.round_number, event.describe())
    return tuple(f"{e.collaborator}: {e.kind}" for e in outcome.bounds)


def round_records(outcome: RoundOutcome) -> list[MetricRecord]:
    """The metrics.jsonl records of a closed round: the sites', the aggregated ones, its timing
    and what the update bounds did."""
    number = outcome.round_number
    records = list(outcome.records)
    for key, value in outcome.metrics.items():
        task, metric = key.split("/", 1)  # WeightedMetrics keys are task/metric
        records.append(MetricRecord(number, "aggregator", task, metric, value))
    timing = {"round_seconds": outcome.wall_seconds, "overhead_seconds": outcome.overhead_seconds}
    records += [MetricRecord(number, "aggregator", "round", k, v) for k, v in timing.items()]
    records += [MetricRecord(number, e.collaborator, "aggregator/bounds", e.kind, e.value) for e in outcome.bounds]
    return records


def metrics_sink(metrics_log: MetricsLog) -> Sink:
    """The sink that appends each closed round's records to ``metrics_log`` (logs/metrics.jsonl)."""

    def write(event: EngineEvent) -> None:
        if isinstance(event, RoundClosed):
            metrics_log.write(round_records(event.outcome))

    return write


def log_round(outcome: RoundOutcome, label: str, best_metric: str) -> None:
    """The line that says a round (``label``) is done: its time, aggregated metrics and a new best."""
    shown = "  ".join(f"{k}={v:.4f}" for k, v in sorted(outcome.metrics.items()))
    best = f"  new best {best_metric}={outcome.best_score:.4f}" if outcome.best_model is not None else ""
    log.info("%s done in %.3fs (overhead %.3fs): %s%s", label, outcome.wall_seconds, outcome.overhead_seconds, shown, best)
