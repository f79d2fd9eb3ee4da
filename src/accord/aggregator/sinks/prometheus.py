"""A Prometheus ``/metrics`` endpoint on the aggregator (the extra accord[prometheus]): the open
round, results accepted and failed, calls refused, the last closed round's seconds, bytes on
the wire and aggregated metrics, in a registry of its own, served by prometheus-client's HTTP
thread. Every update is O(1) per event; sites are not labels (a scrape's size does not grow
with them), and the distinct aggregated metrics shown are capped (MAX_METRIC_SERIES): a site
reports its metrics' names, so it could otherwise grow the endpoint round after round."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from accord.aggregator.events import EngineEvent, ResultAccepted, ResultFailed, RoundOpened
from accord.aggregator.sinks.tags import AGGREGATOR
from accord.errors import AccordError
from accord.imports import optional_module
from accord.metric_records import MetricRecord

log = logging.getLogger("accord.aggregator")

INSTALL = "pip install 'accord[prometheus]'"
#: the most distinct (task, metric) pairs shown as accord_metric gauges
MAX_METRIC_SERIES = 256
#: the round's records (task "round") shown as gauges of their own
ROUND_GAUGES = {
    "round_seconds": ("accord_round_seconds", "wall time of the last closed round (s)"),
    "overhead_seconds": ("accord_round_overhead_seconds", "the last closed round's time less its slowest task's (s)"),
    "bytes_received": ("accord_round_received_bytes", "bytes of gRPC messages received in the last closed round"),
    "bytes_sent": ("accord_round_sent_bytes", "bytes of gRPC messages sent in the last closed round"),
}


class PrometheusSink:
    """Serves the federation's figures on ``http://host:port/metrics`` (port 0: a free one, logged)."""

    name = "Prometheus"

    def __init__(self, host: str, port: int) -> None:
        client = optional_module("prometheus_client", "aggregator.settings.metrics.prometheus", INSTALL)
        self.registry = registry = client.CollectorRegistry(auto_describe=True)
        gauge, counter = client.Gauge, client.Counter
        self._round = gauge("accord_round", "the round open now (past the last: the federation finished)", registry=registry)
        self._closed = gauge("accord_last_closed_round", "the number of the last round that closed", registry=registry)
        self._closed.set(-1)
        self._accepted = counter("accord_results_accepted", "task results the aggregator accepted", registry=registry)
        self._failed = counter("accord_results_failed", "task results a site reported as failed", registry=registry)
        self._refused = counter(
            "accord_calls_refused", "calls the aggregator refused or cut (any RPC, results included)", registry=registry
        )
        self._bytes_received = counter("accord_received_bytes", "bytes of gRPC messages received", registry=registry)
        self._bytes_sent = counter("accord_sent_bytes", "bytes of gRPC messages sent", registry=registry)
        self._gauges = {metric: gauge(name, text, registry=registry) for metric, (name, text) in ROUND_GAUGES.items()}
        self._metrics = gauge(
            "accord_metric", "aggregated metrics of the last closed round that reported them", ["task", "metric"], registry=registry
        )
        self._series: set[tuple[str, str]] = set()
        self._capped = False
        try:
            self._server, self._thread = client.start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            raise AccordError(
                f"aggregator.settings.metrics.prometheus: cannot serve on {host}:{port}: {exc.strerror or exc}",
                "choose a free port (or 0 for any) and an address of this machine",
            ) from None
        self.port: int = self._server.server_port
        log.info("Prometheus metrics on http://%s:%d/metrics", host, self.port)

    def opened(self, round_number: int) -> None:
        """The round open when the aggregator starts (the engine opened it before any sink subscribed)."""
        self._round.set(round_number)

    def __call__(self, event: EngineEvent) -> None:
        """The engine's events: the round opened, results accepted and failed."""
        if isinstance(event, RoundOpened):
            self._round.set(event.round_number)
        elif isinstance(event, ResultAccepted):
            self._accepted.inc()
        elif isinstance(event, ResultFailed):
            self._failed.inc()

    def refused(self, _reason: str) -> None:
        """A call the gRPC server refused or cut (its ``on_refusal`` hook)."""
        self._refused.inc()

    def records(self, records: Sequence[MetricRecord]) -> None:
        """A closed round's records: its timing and bytes, and the aggregated metrics (not the sites')."""
        for record in records:
            if record.origin != AGGREGATOR:
                continue
            self._closed.set(record.round)
            if record.task == "round" and record.metric in self._gauges:
                self._gauges[record.metric].set(record.value)
                if record.metric == "bytes_received":
                    self._bytes_received.inc(record.value)
                elif record.metric == "bytes_sent":
                    self._bytes_sent.inc(record.value)
            elif record.task != "round":
                self._metric(record.task, record.metric, record.value)

    def _metric(self, task: str, metric: str, value: float) -> None:
        series = (task, metric)
        if series not in self._series:
            if len(self._series) >= MAX_METRIC_SERIES:
                if not self._capped:
                    self._capped = True
                    log.warning("Prometheus: more than %d aggregated metrics; the others are not shown", MAX_METRIC_SERIES)
                return
            self._series.add(series)
        self._metrics.labels(task=task, metric=metric).set(value)

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
