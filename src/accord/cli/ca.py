"""``fx workspace certify | certificates | revoke``: the federation's certificate authority.

The CA lives in the aggregator's workspace (``cert/ca``); its keys never leave it.
"""

from __future__ import annotations

from pathlib import Path

import click

from accord.cli.options import cert_dir_of, key_type_option, plan_if_present, plan_option, workspace_option


def _cert_dir(workspace: Path, plan_path: str) -> Path:
    return cert_dir_of(workspace, plan_if_present(workspace, plan_path))


@click.command()
@workspace_option
@plan_option
@key_type_option
def certify_cmd(workspace: Path, plan_path: str, key_type: str) -> None:
    """Create the federation's root and signing CA.

    Once per federation, in the aggregator's workspace: WS/cert/ca holds the CA keys
    (0600, never exported); WS/cert/cert_chain.crt is every participant's trust bundle.
    """
    from accord.pki import cert_fingerprint, create_ca, load_pem_cert
    from accord.pki.keys import KEY_TYPES

    plan = plan_if_present(workspace, plan_path)
    layout = create_ca(cert_dir_of(workspace, plan), key_type)
    root = load_pem_cert(layout.root_cert)
    until = root.not_valid_after_utc.date().isoformat()
    click.echo(
        f"certificate authority created in {layout.cert_dir} ({KEY_TYPES[key_type]}, valid until {until})\n"
        f"  root CA       {layout.root_cert}   (key {layout.root_key.name}: keep it secret, offline if you can)\n"
        f"  signing CA    {layout.signing_cert}   (signs every participant's certificate)\n"
        f"  chain         {layout.chain}   (every participant's trust bundle; it travels in each signed package)\n"
        f"root CA fingerprint (SHA-384): {cert_fingerprint(root)}\n"
        + (f"workspace hash {plan.workspace_hash()}   (plan + src/ + requirements.txt)\n" if plan else "")
        + f"next: fx aggregator generate-cert-request -w {workspace}, then fx aggregator certify -w {workspace}"
    )


@click.command()
@click.argument("serial_or_name")
@workspace_option
@plan_option
@click.option("--reason", default="", help="Why, kept in cert/ca/revoked.jsonl.")
def revoke_cmd(serial_or_name: str, workspace: Path, plan_path: str, reason: str) -> None:
    """Revoke a certificate; the aggregator refuses it, and so do sites that hold the new CRL.

    SERIAL_OR_NAME is a hex serial (see `fx workspace certificates`) or a participant's
    name (every certificate issued to it). The running aggregator refuses a collaborator
    from its next call; no restart needed. The signed revocation list WS/cert/crl.pem is
    written again: send it to every site (`fx collaborator update-crl crl.pem`), so that
    they refuse a revoked aggregator certificate.
    """
    from accord.pki import CertLayout, revoke
    from accord.pki.crl import write_crl

    cert_dir = _cert_dir(workspace, plan_path)
    click.echo(revoke(cert_dir, serial_or_name, reason))
    crl = write_crl(cert_dir)
    click.echo(
        f"revocation list {CertLayout(cert_dir).crl} (number {crl.number}, {len(crl.serials)} revoked)\n"
        f"next: send it to every site: fx collaborator update-crl crl.pem -w SITE"
    )


@click.command()
@workspace_option
@plan_option
def certificates_cmd(workspace: Path, plan_path: str) -> None:
    """List every certificate the CA issued.

    Serial, subject, kind (root, signing, aggregator, collaborator), expiry and status
    (valid, expired or revoked), from WS/cert/ca/index.jsonl and revoked.jsonl.
    """
    from accord.pki.records import issued_with_status

    cert_dir = _cert_dir(workspace, plan_path)
    records = issued_with_status(cert_dir)
    if not records:
        click.echo(f"no certificates issued in {cert_dir} (create the CA with `fx workspace certify`)")
        return
    columns = ("serial", "subject", "kind", "not_after", "status")
    rows = [tuple(c.upper() for c in columns)] + [tuple(str(r.get(c, "")) for c in columns) for r in records]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
