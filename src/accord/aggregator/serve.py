"""Run the aggregator of a workspace: the runtime behind a mutual-TLS gRPC server."""

from __future__ import annotations

import logging

from accord.aggregator.memory import limit_malloc_arenas
from accord.aggregator.runtime import AggregatorRuntime
from accord.plan.loader import Plan

log = logging.getLogger("accord.aggregator")


def start_aggregator(plan: Plan, quit_grace: float = 10.0) -> AggregatorRuntime:
    """Serve ``plan``'s federation until every round has run; returns the finished runtime."""
    from accord.pki.install import check_own_certificate
    from accord.pki.layout import CertLayout
    from accord.pki.records import RevocationWatch
    from accord.transport.grpc_server import GrpcAggregatorServer
    from accord.transport.tls import ServerTLS

    limit_malloc_arenas()
    net = plan.model.network.settings
    layout = CertLayout(plan.resolve_path(net.cert_dir))
    check_own_certificate(layout.cert_dir, "aggregator", net.agg_addr, plan.workspace)
    tls = ServerTLS(layout.aggregator_cert(net.agg_addr), layout.aggregator_key(net.agg_addr), layout.chain)
    runtime = AggregatorRuntime(plan)
    server = GrpcAggregatorServer(
        runtime,
        net.agg_addr,
        net.agg_port,
        tls,
        chunk_bytes=net.chunk_bytes,
        long_poll_seconds=net.long_poll_seconds,
        max_workers=max(net.max_workers, 2 * len(plan.model.collaborators) + 4),
        max_update_bytes=net.max_update_bytes,
        revoked=RevocationWatch(layout.cert_dir),
    )
    port = server.start()
    log.info(
        "aggregator listening on %s:%d for %d collaborators, %d rounds (plan %s...)",
        net.agg_addr,
        port,
        len(plan.model.collaborators),
        plan.rounds,
        plan.hash[:16],
    )
    try:
        runtime.wait_until_done(quit_grace=quit_grace)
    finally:
        server.stop(grace=2.0)
    return runtime
