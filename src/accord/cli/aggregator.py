"""``fx aggregator``: its certificate (request, then signing at the CA) and running it."""

from __future__ import annotations

import socket
from pathlib import Path

import click

from accord.cli.options import (
    OrderedGroup,
    cert_dir_of,
    key_type_option,
    open_plan,
    override_option,
    plan_if_present,
    plan_option,
    workspace_option,
    yes_option,
)
from accord.plan.loader import Plan

fqdn_option = click.option(
    "--fqdn",
    default=None,
    help="The aggregator's host name or IP (default: the plan's agg_addr, else this host's FQDN).",
)
days_option = click.option("--days", default=365, show_default=True, help="Days the certificate is valid.")


@click.group(cls=OrderedGroup)
def aggregator() -> None:
    """The aggregator: serves the plan's rounds to the collaborators over mutual TLS.

    \b
    In order, in the aggregator's workspace (which holds the CA):
      fx aggregator generate-cert-request   its key and CSR
      fx aggregator certify                 the CA signs it (compare the fingerprint)
      fx aggregator start                   serve the federation
    """


def _fqdn(plan: Plan | None, fqdn: str | None) -> str:
    if fqdn:
        return fqdn
    return plan.model.network.settings.agg_addr if plan is not None else socket.getfqdn()


@aggregator.command("generate-cert-request")
@workspace_option
@plan_option
@fqdn_option
@key_type_option
def generate_cert_request(workspace: Path, plan_path: str, fqdn: str | None, key_type: str) -> None:
    """Make the aggregator's key and CSR (step 1).

    Writes the private key (0600) and the CSR to WS/cert/server and prints the CSR's
    SHA-384 fingerprint. An existing key is reused (renewal); delete it to make a new one.
    """
    from accord.pki import CertLayout, generate_csr

    plan = plan_if_present(workspace, plan_path)
    name = _fqdn(plan, fqdn)
    cert_dir = cert_dir_of(workspace, plan)
    reused = CertLayout(cert_dir).aggregator_key(name).exists()
    csr_path, fingerprint = generate_csr(cert_dir, "aggregator", name, key_type, reuse_key=True)
    click.echo(
        (f"reusing the private key of {name} (delete it first to make a new one)\n" if reused else "")
        + f"certificate request for aggregator {name}: {csr_path}\n"
        f"fingerprint (SHA-384): {fingerprint}\n"
        f"next, at the CA: fx aggregator certify -w {workspace} --fqdn {name}"
    )


@aggregator.command("certify")
@workspace_option
@plan_option
@fqdn_option
@yes_option
@days_option
def certify(workspace: Path, plan_path: str, fqdn: str | None, yes: bool, days: int) -> None:
    """At the CA: sign the aggregator's CSR (step 2).

    Prints the CSR's fingerprint and asks to confirm it (unless --yes), signs it with the
    signing CA and installs the certificate next to the key in WS/cert/server.
    """
    from accord.pki import CertLayout, csr_fingerprint, read_pem_bytes, sign_csr
    from accord.pki.install import install_certificate

    plan = plan_if_present(workspace, plan_path)
    name = _fqdn(plan, fqdn)
    cert_dir = cert_dir_of(workspace, plan)
    csr_path = CertLayout(cert_dir).aggregator_csr(name)
    fix = f"run `fx aggregator generate-cert-request --fqdn {name}` first"
    csr_pem = read_pem_bytes(csr_path, "aggregator CSR", fix)
    click.echo(f"certificate request for aggregator {name}: {csr_path}")
    click.echo(f"fingerprint (SHA-384): {csr_fingerprint(csr_pem)}")
    if not yes:
        click.confirm("Is this the fingerprint generate-cert-request printed? Sign it", abort=True)
    cert_pem = sign_csr(cert_dir, csr_pem, "aggregator", days, expected_name=name)
    done = install_certificate(cert_dir, "aggregator", name, cert_pem, source=f"the certificate for {name}")
    click.echo(
        f"signed: {done.cert_path} (serial {done.certificate.serial_number:x}, "
        f"valid until {done.certificate.not_valid_after_utc.date().isoformat()})"
    )


@aggregator.command("start")
@workspace_option
@plan_option
@override_option
@click.option("--fresh", is_flag=True, help="Discard a saved unfinished federation and start at round 0.")
def start(workspace: Path, plan_path: str, overrides: tuple[str, ...], fresh: bool) -> None:
    """Serve every round of the plan, then exit.

    A federation left unfinished (crash, kill, reboot) is resumed at its open round, with
    the results already received; --fresh starts over instead. Refuses to start with its
    own certificate expired or from another CA; refuses any collaborator whose
    certificate the CA revoked, from the moment it is revoked. SIGINT or SIGTERM stops it
    (a second one at once) with a line saying where it stopped, where its state is saved and the
    command that resumes it; it exits 130 or 143.
    """
    # TLS handshakes the server refuses (a client certificate expired, or from another CA)
    # never reach Python: gRPC's core logs them on stderr at INFO ("Handshake failed ...
    # CERTIFICATE_VERIFY_FAILED: certificate has expired"), which it does unless
    # GRPC_VERBOSITY is set to ERROR or NONE. Setting it to INFO adds only a warning.
    from accord.aggregator.serve import start_aggregator
    from accord.cli.resume import resume_command
    from accord.stop_signals import Stopped, StopRequest, stop_signals

    plan = open_plan(workspace, plan_path, overrides)
    request = StopRequest()
    resume = resume_command("aggregator start", workspace, plan_path, overrides)
    try:
        with stop_signals(request):
            runtime = start_aggregator(plan, fresh=fresh, stop=request.event, pooled_masks=True)
    except Stopped as at_once:  # the second signal
        _stopped(plan, at_once.signal_name, "", resume)
        raise
    if request.signum is not None and not runtime.finished:
        engine = runtime.engine
        at = (
            f"at the final validation (round {engine.round_number})"
            if engine.is_final_validation(engine.round_number)
            else f"at round {engine.round_number} of {engine.rounds_to_train}"
        )
        stop = Stopped(request.signum)
        _stopped(plan, stop.signal_name, at, resume)
        raise stop
    best = runtime.engine.best_score
    click.echo(
        f"federation finished: {runtime.engine.rounds_to_train} rounds"
        + (f", best {runtime.settings.best_metric}={best:.4f}" if best is not None else "")
    )


def _stopped(plan: Plan, signal_name: str, at: str, resume: str) -> None:
    """Log the line a stopped aggregator leaves: where it stopped, what is saved, how to resume."""
    import logging

    state = plan.model.aggregator.settings.state_dir
    logging.getLogger("accord.aggregator").warning(
        "aggregator stopped by %s%s; state saved in %s (the open round and every result acknowledged); resume with: %s",
        signal_name,
        f" {at}" if at else "",
        state,
        resume,
    )


@aggregator.command("status")
@workspace_option
@plan_option
@override_option
@click.option("--json", "as_json", is_flag=True, help="Print the saved status as JSON.")
def status(workspace: Path, plan_path: str, overrides: tuple[str, ...], as_json: bool) -> None:
    """Show the round, who has reported and who is late, from the aggregator's saved state."""
    import json

    from accord.aggregator.status import describe, read_status

    plan = open_plan(workspace, plan_path, overrides)
    state = read_status(plan)
    click.echo(json.dumps(state, indent=1) if as_json else describe(state))
