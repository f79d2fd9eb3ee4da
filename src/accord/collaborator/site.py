"""Build a collaborator from the plan and this site's data.yaml, and run it over gRPC."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

from accord.collaborator.collaborator import Collaborator, SiteFailure
from accord.collaborator.data_config import data_path_for
from accord.collaborator.secure_site import SECURE_STATE
from accord.collaborator.site_report import SITE_LOG, SITE_METRICS, SiteReport
from accord.collaborator.transfers import Transfers
from accord.data.base import DataLoader
from accord.dp.ledger import SITE_STATE
from accord.errors import AccordError
from accord.logs import log_file
from accord.metric_records import MetricsLog
from accord.plan.loader import Plan
from accord.runners.from_plan import build_data_loader, build_runner
from accord.stop_signals import Stopped, stop_signals
from accord.strategies.seam import ClientSampling
from accord.transport.base import AggregatorClient

if TYPE_CHECKING:
    from accord.audit.site_record import SiteRecord
    from accord.secagg.signing import Signing

log = logging.getLogger("accord.collaborator")


def build_collaborator(
    plan: Plan,
    name: str,
    client: AggregatorClient,
    signing: Signing | None = None,
    report: SiteReport | None = None,
    record: SiteRecord | None = None,
) -> Collaborator:
    """A Collaborator wired to ``client``, with the plan's runner, client mods and this site's
    data, accepting only the per-round config its own plan's strategy declares; ``signing``
    signs its secure aggregation (start_collaborator gives it the site's own key); ``report``
    shows its work (start_collaborator's: on its console and in its logs/); ``record`` is the
    site's signed audit record (start_collaborator's: ``site_record``).

    If the data loader cannot be built (a missing data path, say), the collaborator is built
    without data: it joins and reports that failure, so the round need not wait for it.
    """
    data: DataLoader | None = None
    data_error: SiteFailure | None = None
    try:
        data = build_data_loader(plan, data_path_for(plan, name))
    except AccordError as exc:
        template = plan.model.data_loader.template or "(none)"
        data_error = SiteFailure(
            f"data loader {template} cannot load the data of {name}: {exc.message}",
            exc.fix or "check this site's data path in plan/data.yaml",
            report=f"data loader {template.rsplit('.', 1)[-1]} could not be built ({type(exc.__cause__ or exc).__name__})",
        )
    runner = build_runner(plan, data)
    options = site_options(plan)
    folder = plan.workspace / SITE_STATE.format(name=name)
    for part in (runner, *options["mods"]):  # what must survive a restart (a spent privacy budget)
        keep = getattr(part, "keep_state_in", None)
        if keep is not None:
            keep(folder)
    return Collaborator(
        name,
        client,
        runner,
        data,
        data_error=data_error,
        signing=signing,
        report=report,
        record=record,
        secure_state=folder / SECURE_STATE,
        **options,
    )


def site_options(plan: Plan) -> dict[str, Any]:
    """The Collaborator's options from this site's own plan: optimizer treatment, deltas, its
    task definitions, its client mods, the per-round config its strategy declares, its
    compression pipeline and its secure aggregation."""
    settings = plan.model.collaborator.settings
    strategy = plan.strategy()  # this site's own plan's: which config it accepts
    return {
        "opt_treatment": settings.opt_treatment,
        "delta_updates": settings.delta_updates,
        "tasks": plan.model.tasks.settings,
        "config_schema": strategy.config_schema,
        "mods": plan.mods(),
        "strategy": type(strategy).__name__,
        "compression": plan.model.compression_pipeline.settings,
        "secure": plan.model.aggregator.settings.secure_aggregation,
        "secure_cohort": expected_cohort(plan),
    }


def expected_cohort(plan: Plan) -> int:
    """How many sites this site's own plan expects a round to ask: its sampling of the
    collaborators its assigner gives tasks (those its task groups name, when every group names
    them; else its whole collaborators list), as the aggregator draws a round's cohort. Secure
    aggregation's floor for the threshold (secure_site.py)."""
    groups = plan.model.assigner.settings.task_groups
    candidates = plan.model.collaborators
    if all(group.collaborators for group in groups):
        named = {name for group in groups for name in group.collaborators or ()}
        candidates = [name for name in candidates if name in named]
    sampling = ClientSampling(**plan.model.aggregator.settings.sampling.model_dump())
    return len(sampling.sample(0, candidates))


def grpc_client(
    plan: Plan, name: str, connect_timeout: float | None = None, counted: Callable[[str, int], None] | None = None
) -> AggregatorClient:
    """A mutual-TLS gRPC client for collaborator ``name`` with its certificate from the workspace.

    ``connect_timeout`` is this site's own choice and overrides the plan's without changing its hash.
    The site's certificate is checked first: the aggregator's TLS handshake would refuse an
    expired one, or one from another CA, without saying why. The client sends this
    workspace's hash (computed once, here) and refuses an aggregator whose certificate
    the held revocation list (cert/crl.pem) lists. ``counted`` is told each chunk's bytes.
    """
    from accord.pki.crl import check_aggregator_certificate
    from accord.pki.install import check_own_certificate
    from accord.pki.layout import CertLayout
    from accord.transport.grpc_client import GrpcAggregatorClient
    from accord.transport.tls import ClientTLS

    net = plan.model.network.settings
    layout = CertLayout(plan.resolve_path(net.cert_dir))
    check_own_certificate(layout.cert_dir, "collaborator", name, plan.workspace)
    tls = ClientTLS(layout.collaborator_cert(name), layout.collaborator_key(name), layout.chain)
    return GrpcAggregatorClient(
        name,
        plan.hash,
        net.agg_addr,
        net.agg_port,
        tls,
        chunk_bytes=net.chunk_bytes,
        long_poll_seconds=net.long_poll_seconds,
        connect_timeout=connect_timeout or net.connect_timeout_seconds,
        reconnect_timeout=net.reconnect_timeout_seconds,
        transfer_timeout=net.transfer_timeout_seconds,
        workspace_hash=plan.workspace_hash(),
        check_server=lambda der: check_aggregator_certificate(der, layout.cert_dir, f"{net.agg_addr}:{net.agg_port}"),
        compression=plan.model.compression_pipeline.settings,
        counted=counted,
    )


def start_collaborator(plan: Plan, name: str, connect_timeout: float | None = None, resume: str = "") -> int:
    """Connect to the aggregator and work until the federation ends; returns rounds worked.

    The site's log lines also go to its ``logs/collaborator-NAME.log`` and its own figures (each
    task's metrics, samples and seconds, each round's seconds and bytes down and up) to
    ``logs/collaborator-NAME-metrics.jsonl``. SIGINT or SIGTERM stops it (Stopped, raised) after
    a line saying what it holds, that nothing is lost, and ``resume``: the command that restarts it.
    """
    with log_file(plan.workspace / SITE_LOG.format(name=name)), stop_signals():
        collaborator: Collaborator | None = None
        try:
            transfers = Transfers()
            with ExitStack() as closing:
                client = grpc_client(plan, name, connect_timeout, transfers)  # checks this site's certificate first
                closing.callback(client.close)
                record = site_record(plan, name, getattr(client, "workspace_hash", "") or plan.workspace_hash())
                closing.callback(record.close)
                signing = None
                if plan.model.aggregator.settings.secure_aggregation.enabled:  # the deployment always signs
                    from accord.collaborator.secure_site import site_signing

                    signing = site_signing(plan.resolve_path(plan.model.network.settings.cert_dir), name)
                report = SiteReport(name, transfers, MetricsLog(plan.workspace / SITE_METRICS.format(name=name)))
                collaborator = build_collaborator(plan, name, client, signing, report, record)
                return collaborator.run()
        except Stopped as stop:
            held = collaborator.held() if collaborator is not None else "it had not joined yet"
            log.warning("%s", stopped_line(plan, name, stop, held, resume))
            raise


def stopped_line(plan: Plan, name: str, stop: Stopped, held: str, resume: str) -> str:
    """The line a site stopped by a signal leaves: what it ``held``, that nothing is lost, how to resume."""
    folder = plan.workspace / SITE_STATE.format(name=name)
    state = f"its own state stays in {SITE_STATE.format(name=name)}; " if folder.is_dir() else ""
    return (
        f"collaborator {name} stopped by {stop.signal_name}: {held}; nothing is lost: started again, it "
        f"rejoins the federation at its current round (a task cut short runs again); {state}"
        f"resume with: {resume or f'fx collaborator start -n {name}'}"
    )


def site_record(plan: Plan, name: str, workspace_hash: str) -> SiteRecord:
    """Site ``name``'s signed audit record (logs/audit-NAME.jsonl), signed with its own key."""
    from accord.audit.site_record import SiteRecord, record_path
    from accord.pki.keys import load_private_key, read_pem_bytes
    from accord.pki.layout import CertLayout, collaborator_fix
    from accord.pki.signatures import signer_for

    net = plan.model.network.settings
    layout = CertLayout(plan.resolve_path(net.cert_dir))
    certificate = read_pem_bytes(layout.collaborator_cert(name), "collaborator certificate", collaborator_fix(name))
    sign = signer_for(load_private_key(layout.collaborator_key(name)))
    path = plan.resolve_path(record_path(name))
    return SiteRecord(path, sign, name, certificate, plan.hash, workspace_hash, net.chunk_bytes)
