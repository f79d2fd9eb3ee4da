"""``fx collaborator``: this site's certificate (request, signing at the CA, import) and running it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

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
from accord.errors import AccordError
from accord.plan.loader import Plan

if TYPE_CHECKING:
    from accord.pki.crl import RevocationList


@click.group(cls=OrderedGroup)
def collaborator() -> None:
    """A collaborator: trains on this site's data; only weights and metrics leave.

    \b
    In order:
      (site) fx collaborator generate-cert-request -n NAME --data-path PATH
      (CA)   fx collaborator certify --request-pkg col_NAME_to_agg_cert_request.zip
      (site) fx collaborator certify --import agg_to_col_NAME_signed_cert.zip
      (site) fx collaborator start -n NAME
    """


def _data_config(workspace: Path, plan: Plan | None) -> Path:
    if plan is not None:
        return plan.resolve_path(plan.model.collaborator.settings.data_config_path)
    return workspace.resolve() / "plan" / "data.yaml"


@collaborator.command("create")
@click.option("--name", "-n", required=True, help="The collaborator's name (its certificate's common name).")
@click.option("--data-path", "-d", required=True, help="This site's data for NAME (for built-in sets, the shard number).")
@workspace_option
@plan_option
def create(name: str, data_path: str, workspace: Path, plan_path: str) -> None:
    """OpenFL's spelling: record NAME -> --data-path in the data config and add NAME to the
    collaborators list (plan/cols.yaml in an OpenFL workspace, else the plan's own list)."""
    from accord.collaborator.data_config import record_data_path
    from accord.pki import validate_collaborator_name
    from accord.plan.loader import add_collaborator

    validate_collaborator_name(name)
    plan = open_plan(workspace, plan_path)
    config = _data_config(workspace, plan)
    _, changed = record_data_path(config, name, data_path)
    added = add_collaborator(plan.path or workspace / plan_path, name)
    click.echo(f"data path {data_path} for {name} {'recorded in' if changed else 'already in'} {config}")
    click.echo(f"{name} {'added to' if added else 'already in'} the collaborators list")
    click.echo(f"next, at the site: fx collaborator generate-cert-request -n {name} -w {workspace}")


@collaborator.command("generate-cert-request")
@click.option("--name", "-n", required=True, help="This collaborator's name (its certificate's common name).")
@workspace_option
@plan_option
@click.option(
    "--data-path", default=None, help="This site's data for NAME, recorded in the data config (kept if already there)."
)
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for the request package (default: the workspace).",
)
@key_type_option
def generate_cert_request(
    name: str, workspace: Path, plan_path: str, data_path: str | None, output: Path | None, key_type: str
) -> None:
    """At the site: key, CSR and a request package.

    Records NAME -> --data-path in the site's data config (plan/data.yaml), makes the
    private key (0600, reused if it exists) and CSR in WS/cert/client, and writes
    col_NAME_to_agg_cert_request.zip (the CSR and a manifest, never the key). Read the
    printed fingerprint to the CA's operator by another channel.
    """
    from accord.collaborator.data_config import record_data_path
    from accord.pki import CertLayout, generate_csr, validate_collaborator_name
    from accord.pki.packages import write_request_package

    validate_collaborator_name(name)
    plan = plan_if_present(workspace, plan_path)
    config = _data_config(workspace, plan)
    kept, changed = record_data_path(config, name, data_path)
    cert_dir = cert_dir_of(workspace, plan)
    reused = CertLayout(cert_dir).collaborator_key(name).exists()
    generate_csr(cert_dir, "collaborator", name, key_type, reuse_key=True)
    package, fingerprint = write_request_package(cert_dir, name, output or workspace)
    click.echo(
        f"data path for {name}: {kept} ({'recorded in' if changed else 'as in'} {config})\n"
        + (f"reusing the private key of {name} (delete it first to make a new one)\n" if reused else "")
        + f"certificate request package: {package}   (the CSR only; the private key stays here)\n"
        f"fingerprint (SHA-384): {fingerprint}\n"
        "next: send the package to the CA's operator and read them the fingerprint by another channel"
    )


@collaborator.command("certify")
@click.option(
    "--request-pkg", "request_pkg", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="(CA) A site's col_NAME_to_agg_cert_request.zip to sign.",
)
@click.option(
    "--import", "import_pkg", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="(site) The CA's agg_to_col_NAME_signed_cert.zip to install.",
)
@workspace_option
@plan_option
@yes_option
@click.option("--days", default=365, show_default=True, help="(CA) Days the certificate is valid.")
@click.option(
    "--output", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="(CA) Folder for the signed package (default: the workspace).",
)
def certify(
    request_pkg: Path | None,
    import_pkg: Path | None,
    workspace: Path,
    plan_path: str,
    yes: bool,
    days: int,
    output: Path | None,
) -> None:
    """Sign a request (CA) or import the answer (site).

    \b
    At the CA, --request-pkg FILE: checks the package, prints the CSR fingerprint and
    asks to confirm it (unless --yes), signs it, adds NAME to the plan's collaborators
    and writes agg_to_col_NAME_signed_cert.zip (certificate + CA chain).
    At the site, --import FILE: checks the certificate holds this site's key and is
    signed by the chain, then installs both under WS/cert.
    """
    if (request_pkg is None) == (import_pkg is None):
        raise click.UsageError("give exactly one of --request-pkg (at the CA) or --import (at the site)")
    plan = plan_if_present(workspace, plan_path)
    if request_pkg is not None:
        _sign_request(request_pkg, workspace, plan, yes, days, output or workspace)
    else:
        assert import_pkg is not None
        _import_signed(import_pkg, cert_dir_of(workspace, plan), plan)


def _sign_request(package: Path, workspace: Path, plan: Plan | None, yes: bool, days: int, output: Path) -> None:
    from accord.pki.packages import read_request_package
    from accord.workspace.enroll import enroll_collaborator, valid_certificates

    request = read_request_package(package)
    cert_dir = cert_dir_of(workspace, plan)
    click.echo(f"certificate request from collaborator {request.name}: {package}")
    click.echo(f"fingerprint (SHA-384): {request.fingerprint}")
    held = valid_certificates(cert_dir, request.name)
    if held:
        click.echo(f"note: {request.name} already holds certificate(s) {', '.join(held)}; revoke any this one replaces")
    if not yes:
        click.confirm("Is this the fingerprint the site's operator read to you? Sign it", abort=True)
    plan_path = plan.path if plan is not None else None
    done = enroll_collaborator(request, cert_dir, plan_path, output, days)
    if done.added_to_plan is None:
        click.echo(f"no plan in {workspace}: add {request.name} to its collaborators list yourself")
    else:
        click.echo(f"{request.name} {'added to' if done.added_to_plan else 'already in'} the collaborators of {plan_path}")
    if plan is not None:
        click.echo(f"workspace hash {plan.workspace_hash()}   (the site's --import prints its own: they must match)")
    click.echo(f"signed package: {done.package}")
    click.echo(f"next: send it back to the site: fx collaborator certify --import {done.package.name}")


def _import_signed(package: Path, cert_dir: Path, plan: Plan | None) -> None:
    from accord.pki import cert_fingerprint, load_pem_cert
    from accord.pki.crl import install_crl
    from accord.pki.install import install_certificate
    from accord.pki.packages import read_signed_package

    signed = read_signed_package(package)
    done = install_certificate(
        cert_dir, "collaborator", signed.name, signed.cert_pem, signed.chain_pem, source=str(package)
    )
    cert = done.certificate
    if signed.crl_pem is not None:
        _show_crl(*install_crl(cert_dir, signed.crl_pem, f"{package} (crl.pem)", keep_newer=True))
    new_chain = " (new here: compare the root fingerprint with the CA's)" if done.chain_added else ""
    click.echo(
        f"installed the certificate of {signed.name}: {done.cert_path} (serial {cert.serial_number:x}, "
        f"valid until {cert.not_valid_after_utc.date().isoformat()})\n"
        f"CA chain: {done.chain_path}{new_chain}\n"
        f"root CA fingerprint (SHA-384): {cert_fingerprint(load_pem_cert(done.chain_path))}\n"
        + (f"workspace hash {plan.workspace_hash()}   (compare it with the CA operator's)\n" if plan else "")
        + f"next: fx collaborator start -n {signed.name}"
    )


def _show_crl(crl: RevocationList, replaced: bool) -> None:
    from accord.pki.records import iso

    what = "installed" if replaced else "already held"
    click.echo(f"revocation list number {crl.number} ({len(crl.serials)} revoked, issued {iso(crl.issued)}) {what}")


@collaborator.command("update-crl")
@click.argument("crl_file", type=click.Path(dir_okay=False, path_type=Path))
@workspace_option
@plan_option
def update_crl(crl_file: Path, workspace: Path, plan_path: str) -> None:
    """Install the CA's newer revocation list (crl.pem from `fx workspace revoke`).

    It must be signed by this federation's signing CA (WS/cert/cert_chain.crt) and not be
    older than the one held. `fx collaborator start` then refuses an aggregator whose
    certificate it lists.
    """
    from accord.pki.crl import install_crl

    try:
        data = crl_file.read_bytes()
    except OSError as exc:
        raise AccordError(
            f"revocation list {crl_file} cannot be read: {exc.strerror or exc}", "check the path"
        ) from None
    cert_dir = cert_dir_of(workspace, plan_if_present(workspace, plan_path))
    _show_crl(*install_crl(cert_dir, data, str(crl_file)))


@collaborator.command("start")
@click.option("--name", "-n", required=True, help="This collaborator's name (its certificate's common name).")
@workspace_option
@plan_option
@override_option
@click.option("--connect-timeout", type=float, default=None, help="Seconds to wait for the aggregator (default: the plan's).")
def start(name: str, workspace: Path, plan_path: str, overrides: tuple[str, ...], connect_timeout: float | None) -> None:
    """Connect and train until the federation ends.

    Checks this site's certificate first (expired, from another CA, not matching the key).
    Logs each task's and round's figures (also in WS/logs/collaborator-NAME.log and
    WS/logs/collaborator-NAME-metrics.jsonl). SIGINT or SIGTERM stops it with a line saying
    what it holds and the command that resumes it; it exits 130 or 143.
    """
    from accord.cli.resume import resume_command
    from accord.collaborator.site import start_collaborator

    resume = resume_command("collaborator start", workspace, plan_path, overrides, "-n", name)
    rounds = start_collaborator(open_plan(workspace, plan_path, overrides), name, connect_timeout, resume)
    click.echo(f"collaborator {name} finished after working in {rounds} rounds")
