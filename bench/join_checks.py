"""What a site's trust checks add to joining: the workspace hash and the CRL pre-flight.

Starts the real gRPC server over mutual TLS in front of a real AggregatorRuntime (a
quickstart workspace, with a CA revocation list), then times, in the same run:

- baseline: a new client's channel, TLS handshake and Join (as each `fx collaborator start`);
- the same with the revocation check (a pre-flight mutual-TLS handshake of its own, the
  certificate checked against the chain and the signed CRL) before Join;
- computing the workspace hash (once per process start, at each end).

Prints min and median over the repeats, and the ratio to the baseline.

    .venv/bin/python bench/join_checks.py [--repeats 5] [--joins 20]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _table import Column, min_median_table


def timed(fn: Callable[[], object], repeats: int, count: int) -> list[float]:
    """Milliseconds per call of ``fn``, one figure per repeat of ``count`` calls."""
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(count):
            fn()
        runs.append((time.perf_counter() - start) / count * 1000)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--joins", type=int, default=20)
    args = parser.parse_args()

    from accord.aggregator.runtime import AggregatorRuntime
    from accord.experiment.local import prepare_workspace
    from accord.pki.crl import check_aggregator_certificate, write_crl
    from accord.pki.layout import CertLayout
    from accord.transport.grpc_client import GrpcAggregatorClient
    from accord.transport.grpc_server import GrpcAggregatorServer
    from accord.transport.tls import ClientTLS, ServerTLS

    plan = prepare_workspace(Path(tempfile.mkdtemp(prefix="accord-bench-")) / "ws", collaborators=1, rounds=1)
    layout = CertLayout(plan.workspace / "cert")
    write_crl(layout.cert_dir)
    runtime = AggregatorRuntime(plan)
    net = plan.model.network.settings
    server = GrpcAggregatorServer(
        runtime, "localhost", net.agg_port,
        ServerTLS(layout.aggregator_cert("localhost"), layout.aggregator_key("localhost"), layout.chain),
    )
    server.start()
    tls = ClientTLS(layout.collaborator_cert("collaborator1"), layout.collaborator_key("collaborator1"), layout.chain)
    identity = runtime.workspace_hash

    def join(check: Callable[[bytes], None] | None) -> Callable[[], object]:
        def once() -> object:
            with GrpcAggregatorClient(
                "collaborator1", plan.hash, "localhost", net.agg_port, tls, workspace_hash=identity, check_server=check
            ) as client:
                return client.join()

        return once

    crl = lambda der: check_aggregator_certificate(der, layout.cert_dir, "bench")  # noqa: E731
    try:
        join(None)()  # warm up
        figures = {
            "join (baseline)": timed(join(None), args.repeats, args.joins),
            "join + CRL pre-flight": timed(join(crl), args.repeats, args.joins),
            "CRL pre-flight alone": timed(
                lambda: crl(tls.server_certificate("localhost", net.agg_port, 10.0)), args.repeats, args.joins
            ),
            "workspace hash": timed(plan.workspace_hash, args.repeats, args.joins),
        }
    finally:
        server.stop(0)
        runtime.close()
    min_median_table(Column("", 24), "ms", figures, "join (baseline)")


if __name__ == "__main__":
    main()
