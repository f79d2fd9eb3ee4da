"""Run the aggregator of a workspace: the runtime behind a mutual-TLS gRPC server."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from accord.aggregation.robust import one_blas_thread
from accord.aggregator.lock import StateLock
from accord.aggregator.memory import limit_malloc_arenas
from accord.aggregator.runtime import AggregatorRuntime
from accord.aggregator.sinks.plan_sinks import open_sinks
from accord.plan.loader import Plan
from accord.transport.traffic import Traffic

if TYPE_CHECKING:
    from accord.audit.trail import AuditTrail
    from accord.pki.layout import CertLayout
    from accord.pki.signatures import CollaboratorVerifier
    from accord.transport.tls import ServerTLS

log = logging.getLogger("accord.aggregator")


def start_aggregator(
    plan: Plan, quit_grace: float = 10.0, fresh: bool = False, stop: threading.Event | None = None, pooled_masks: bool = False
) -> AggregatorRuntime:
    """Serve ``plan``'s federation until every round has run (or ``stop`` is set); returns the runtime.

    An unfinished federation saved in the workspace is resumed at its open round unless
    ``fresh``; one stopped early resumes the same way. ``pooled_masks``: secure rounds' masks
    expanded over spawned worker processes (aggregator/mask_pool.py); only ``fx aggregator
    start`` asks for it, since spawn re-imports ``__main__`` (a user's script or notebook).
    Raises RoundDeadlineError when a round's deadline passes with too few reports, and
    AccordError when another aggregator serves the workspace (its state directory is locked) or holds the port.
    """
    from accord.pki.install import check_own_certificate
    from accord.pki.layout import CertLayout
    from accord.transport.tls import ServerTLS

    net = plan.model.network.settings
    limit_malloc_arenas(net.chunk_bytes)
    layout = CertLayout(plan.resolve_path(net.cert_dir))
    check_own_certificate(layout.cert_dir, "aggregator", net.agg_addr, plan.workspace)
    tls = ServerTLS(layout.aggregator_cert(net.agg_addr), layout.aggregator_key(net.agg_addr), layout.chain)
    # BLAS on one thread while serving: its spinning threads made each update's change norms, on
    # the acknowledgement's path, 2-3x slower on a busy machine (100 MB: 0.45 s -> 0.19 s, load 15)
    with StateLock(plan.resolve_path(plan.model.aggregator.settings.state_dir)), one_blas_thread():
        sinks = open_sinks(plan)  # the plan's metrics sinks (aggregator/sinks/): a missing extra stops here
        finished = False
        audit: AuditTrail | None = None
        runtime: AggregatorRuntime | None = None
        try:
            audit = audit_trail(plan, layout)
            traffic = Traffic()
            runtime = AggregatorRuntime(
                plan, fresh=fresh, verify_sites=site_verifier(layout), sinks=sinks.engine, traffic=traffic, record_sinks=sinks.records,
                audit=audit, pooled_masks=pooled_masks,
            )
            sinks.opened(runtime.engine.round_number)
            try:
                _serve(runtime, plan, layout, tls, quit_grace, stop, traffic, sinks.refused)
            finally:
                runtime.close()  # closes the trail it took
                finished = runtime.finished
        finally:
            try:
                if runtime is None and audit is not None:  # the runtime failed to start: it never took the trail
                    audit.close()
            finally:
                sinks.close(finished)
    return runtime


def audit_trail(plan: Plan, layout: CertLayout) -> AuditTrail:
    """The aggregator's signed audit trail (logs/audit.jsonl), signed with its own key."""
    from accord.audit.trail import TRAIL_PATH, AuditTrail
    from accord.pki.keys import load_private_key, read_pem_bytes
    from accord.pki.layout import AGGREGATOR_FIX
    from accord.pki.signatures import signer_for

    addr = plan.model.network.settings.agg_addr
    certificate = read_pem_bytes(layout.aggregator_cert(addr), "aggregator certificate", AGGREGATOR_FIX)
    sign = signer_for(load_private_key(layout.aggregator_key(addr), "aggregator key"))
    return AuditTrail(plan.resolve_path(TRAIL_PATH), sign, certificate)


def site_verifier(layout: CertLayout) -> CollaboratorVerifier:
    """The check of a collaborator's signature (signed secure aggregation) against its
    certificate, the federation's chain and the CA's revocations as they happen."""
    from accord.pki.records import RevocationWatch
    from accord.pki.signatures import CollaboratorVerifier

    return CollaboratorVerifier(layout.chain, RevocationWatch(layout.cert_dir))


def _serve(
    runtime: AggregatorRuntime,
    plan: Plan,
    layout: CertLayout,
    tls: ServerTLS,
    quit_grace: float,
    stop: threading.Event | None,
    traffic: Traffic,
    on_refusal: Callable[[str], None],
) -> None:
    """Serve ``runtime`` over mutual-TLS gRPC until every round ran (or a round failed); the
    server counts its bytes in ``traffic`` and tells ``on_refusal`` of every refused call."""
    from accord.pki.records import RevocationWatch
    from accord.transport.admission import CallLimits
    from accord.transport.grpc_server import GrpcAggregatorServer

    def refused(reason: str) -> None:  # logs/events.jsonl (fx dashboard) and the plan's sinks
        runtime.event_log.refused(reason)
        on_refusal(reason)

    net = plan.model.network.settings
    server = GrpcAggregatorServer(
        runtime,
        net.agg_addr,
        net.agg_port,
        tls,
        chunk_bytes=net.chunk_bytes,
        long_poll_seconds=net.long_poll_seconds,
        max_workers=net.max_workers,
        max_update_bytes=net.max_update_bytes,
        revoked=RevocationWatch(layout.cert_dir),
        max_upload_seconds=net.transfer_timeout_seconds,
        limits=CallLimits(
            net.first_message_seconds,
            net.chunk_idle_seconds,
            net.max_calls_per_collaborator,
            net.max_concurrent_calls,
            net.min_upload_bytes_per_second,
        ),
        compression=plan.model.compression_pipeline.settings,
        on_refusal=refused,
        traffic=traffic,
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
        while not runtime.wait_until_done(quit_grace=quit_grace, timeout=None if stop is None else 0.2):
            if stop is not None and stop.is_set():
                log.warning("aggregator stopped before the federation finished; starting it again resumes round %d",
                            runtime.engine.round_number)
                break
    finally:
        server.stop(grace=2.0)
