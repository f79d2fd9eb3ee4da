"""What the aggregator tells its operator of results and closed rounds: log lines (a bounded
number per round, whatever the number of sites) and the metrics records of a round (the
runtime decides when)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from accord.aggregator.events import EngineEvent, PhaseOpened, RoundClosed, RoundOutcome, Sink
from accord.aggregator.guarded import Guarded
from accord.messages import TaskResult
from accord.metric_records import MetricRecord, MetricsLog, RecordSink, RoundRecords

if TYPE_CHECKING:
    from accord.aggregator.engine import RoundEngine
    from accord.transport.traffic import Traffic

log = logging.getLogger("accord.aggregator")


#: the results of a round logged a line each; after them, one progress line per PROGRESS_SECONDS
RESULT_LINES = 32
PROGRESS_SECONDS = 5.0


class ResultLog:
    """The log lines of the results taken: every failure at a site, a line for each of the
    first RESULT_LINES results of a round, then at most one progress line per PROGRESS_SECONDS
    (each result still at DEBUG), so a round of a thousand sites writes tens of lines, not
    three thousand. O(1) per result. Not thread-safe: the runtime calls it under its lock."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._round = -1
        self._taken = 0
        self._next_progress = 0.0

    def took(self, result: TaskResult) -> None:
        """Log ``result``, just taken by the engine."""
        if result.failure:
            log.warning(
                "round %d  %s failed %s at its site: %s (it owes nothing more this round)",
                result.round_number,
                result.collaborator,
                result.task,
                result.failure,
            )
            return
        if result.round_number != self._round:
            self._round, self._taken = result.round_number, 0
        self._taken += 1
        if self._taken <= RESULT_LINES:
            _log_result(logging.INFO, result)
            self._next_progress = self._clock() + PROGRESS_SECONDS
            return
        now = self._clock()
        if now >= self._next_progress:
            self._next_progress = now + PROGRESS_SECONDS
            log.info(
                "round %d: %d results taken so far (one line each for the first %d, then at DEBUG); the last: %s %s",
                result.round_number,
                self._taken,
                RESULT_LINES,
                result.collaborator,
                result.task,
            )
        if log.isEnabledFor(logging.DEBUG):
            _log_result(logging.DEBUG, result)


def _log_result(level: int, result: TaskResult) -> None:
    shown = "  ".join(f"{k}={v:.4f}" for k, v in result.metrics.items())
    log.log(
        level,
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


def round_records(outcome: RoundOutcome, more: Sequence[MetricRecord] = ()) -> Sequence[MetricRecord]:
    """The metrics.jsonl records of a closed round: the sites', the aggregated ones, its timing,
    what the update bounds did, then ``more`` (the sites' kept as columns when the engine kept
    them so: no record object per site made until one is read)."""
    number = outcome.round_number
    extra = []
    for key, value in outcome.metrics.items():
        task, metric = key.split("/", 1)  # WeightedMetrics keys are task/metric
        extra.append(MetricRecord(number, "aggregator", task, metric, value))
    timing = {"round_seconds": outcome.wall_seconds, "overhead_seconds": outcome.overhead_seconds}
    extra += [MetricRecord(number, "aggregator", "round", k, v) for k, v in timing.items()]
    extra += [MetricRecord(number, e.collaborator, "aggregator/bounds", e.kind, e.value) for e in outcome.bounds]
    extra += more
    if isinstance(outcome.records, RoundRecords):
        return outcome.records.extended(extra)
    return [*outcome.records, *extra]


def phase_sink(event: EngineEvent) -> None:
    """Log each phase of a multi-phase round as it opens (whom it asks)."""
    if isinstance(event, PhaseOpened):
        log.info("round %d: phase %s opened for %d sites", event.round_number, event.phase, len(event.members))


def metrics_sink(metrics_log: MetricsLog, traffic: Traffic | None = None, writers: Sequence[RecordSink] = ()) -> Sink:
    """The sink that appends each closed round's records to ``metrics_log`` (logs/metrics.jsonl),
    with the bytes ``traffic`` counted on the wire since the previous close (``round/bytes_received``,
    ``round/bytes_sent``) when there is a wire, then hands the same records to each of ``writers``
    (a writer that raises is warned of once, then counted: guarded.py; the round's close goes on)."""
    guarded = [Guarded(writer, _name(writer)) for writer in writers]

    def write(event: EngineEvent) -> None:
        if isinstance(event, RoundClosed):
            more = []
            if traffic is not None:
                received, sent = traffic.take()
                number = event.outcome.round_number
                more = [
                    MetricRecord(number, "aggregator", "round", "bytes_received", float(received)),
                    MetricRecord(number, "aggregator", "round", "bytes_sent", float(sent)),
                ]
            records = round_records(event.outcome, more)
            metrics_log.write(records)
            for writer in guarded:
                writer(records)

    return write


def _name(writer: RecordSink) -> str:
    """The name a record sink goes by in a warning: its ``name`` (or its object's: a bound method)."""
    named = getattr(writer, "name", None) or getattr(getattr(writer, "__self__", None), "name", None)
    return str(named or getattr(writer, "__qualname__", "a metrics sink"))


def report_closed(engine: RoundEngine, outcome: RoundOutcome) -> tuple[str, ...]:
    """Warn of what a closed round went without (``warn_left_out``) and log its line; returns
    the update bounds that bit, as ``fx aggregator status`` shows them."""
    bounded = warn_left_out(outcome, engine.policy.policy)
    label = (
        "final validation of the last model"
        if engine.is_final_validation(outcome.round_number)
        else f"round {outcome.round_number} of {engine.rounds_to_train}"
    )
    log_round(outcome, label, engine.best_metric)
    if engine.stopped and not engine.is_final_validation(outcome.round_number):
        log_stop(engine.stopped)
    return bounded


def log_stop(reason: str) -> None:
    """The line that says the strategy stopped training early, and why."""
    log.warning("training stops early: %s", reason)


def log_round(outcome: RoundOutcome, label: str, best_metric: str) -> None:
    """The line that says a round (``label``) is done: its time, aggregated metrics and a new best."""
    shown = "  ".join(f"{k}={_figure(v)}" for k, v in sorted(outcome.metrics.items()))
    best = f"  new best {best_metric}={outcome.best_score:.4f}" if outcome.best_model is not None else ""
    log.info("%s done in %.3fs (overhead %.3fs): %s%s", label, outcome.wall_seconds, outcome.overhead_seconds, shown, best)


def _figure(value: float) -> str:
    """4 decimals; 3 significant digits below 0.001 (a delta of 1e-05 is not 0.0000)."""
    return f"{value:.4f}" if value == 0 or abs(value) >= 1e-3 else f"{value:.3g}"
