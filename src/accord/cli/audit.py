"""``fx audit``: check the signed audit trail of a federation (docs/audit.md)."""

from __future__ import annotations

from pathlib import Path

import click

from accord.cli.options import OrderedGroup, cert_dir_of, plan_if_present, plan_option, workspace_option


@click.group(cls=OrderedGroup)
def audit() -> None:
    """The audit trail: the aggregator's signed chain (logs/audit.jsonl) and each site's record."""


@audit.command("verify")
@workspace_option
@plan_option
@click.option(
    "--site",
    "sites",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A site's record (its logs/audit-NAME.jsonl) to check and cross-check; repeatable.",
)
@click.option("--trail", type=click.Path(dir_okay=False, path_type=Path), default=None, help="The aggregator's chain (default: WS/logs/audit.jsonl).")
def verify(workspace: Path, plan_path: str, sites: tuple[Path, ...], trail: Path | None) -> None:
    """Check the aggregator's chain and each --site record: every entry chained, every seal's
    signature that of a certificate of the federation's CA (WS/cert/cert_chain.crt), and each
    site's received model digests and sent update digests those of the aggregator's chain.

    Each OK line says whether the chain ended at a clean stop or mid-federation, and its head
    seal's seq and hash: cutting a chain back to an earlier seal shows only against that.
    Prints OK, or names the first bad entry (file, line, seq, what is wrong) and exits 2.
    """
    from accord.audit.trail import TRAIL_PATH
    from accord.audit.verify import cross_check, read_chain
    from accord.pki.layout import CertLayout

    layout = CertLayout(cert_dir_of(workspace, plan_if_present(workspace, plan_path)))
    chain_path = layout.chain
    aggregator = read_chain(trail or workspace / TRAIL_PATH, chain_path, site=False, crl_path=layout.crl)
    rounds = [e["round"] for e in aggregator.of_kind("model")]
    click.echo(
        f"OK {aggregator.path}: {len(aggregator.entries)} entries, {len(aggregator.of_kind('result'))} results, "
        f"models of rounds {min(rounds, default=0)}..{max(rounds, default=0)}, {aggregator.seals} seals; {aggregator.head()}"
    )
    for path in sites:
        record = read_chain(path, chain_path, site=True, crl_path=layout.crl)
        cross_check(record, aggregator)
        click.echo(
            f"OK {path}: site {record.site}, {len(record.of_kind('received'))} models received and "
            f"{len(record.of_kind('sent'))} results sent, each as the aggregator's chain holds it; {record.head()}"
        )
