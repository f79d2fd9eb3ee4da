"""``fx dashboard``: the federation in a browser, read only, behind a token."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import click

from accord.cli.options import open_plan, override_option, plan_option, workspace_option


@click.command()
@workspace_option
@plan_option
@override_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (keep it local: plain HTTP).")
@click.option("--port", default=8787, show_default=True, type=click.IntRange(0, 65535), help="Port (0: any free one).")
def dashboard(workspace: Path, plan_path: str, overrides: tuple[str, ...], host: str, port: int) -> None:
    """Serve a read-only page of the aggregator's federation: the round and its phase, who owes
    what and who is late, the metric curves, stragglers and refusals, the model files.

    Run it in the aggregator's workspace, next to `fx aggregator start` (before, during or
    after). It reads only what the aggregator saves, and needs the token it prints: open
    the URL it prints. Ctrl-C stops it.
    """
    from accord.dashboard.server import DashboardServer, new_token
    from accord.dashboard.view import DashboardView

    server = DashboardServer(DashboardView(open_plan(workspace, plan_path, overrides)), new_token(), host, port)
    if not _loopback(host):
        click.echo(f"warning: {host} is not a loopback address; the page and its token travel unencrypted", err=True)
    click.echo(f"dashboard of {workspace.resolve()} (read only); open:\n{server.url}", color=False)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
