"""``fx collaborator``: run a collaborator at this site."""

from __future__ import annotations

from pathlib import Path

import click

from accord.cli.options import open_plan, override_option, plan_option, workspace_option


@click.group()
def collaborator() -> None:
    """A collaborator: trains on this site's data; only weights and metrics leave."""


@collaborator.command("start")
@click.option("--name", "-n", required=True, help="This collaborator's name (its certificate's common name).")
@workspace_option
@plan_option
@override_option
@click.option("--connect-timeout", type=float, default=None, help="Seconds to wait for the aggregator (default: the plan's).")
def start(name: str, workspace: Path, plan_path: str, overrides: tuple[str, ...], connect_timeout: float | None) -> None:
    """Connect to the aggregator and run the assigned tasks until the federation ends."""
    from accord.collaborator.site import start_collaborator

    rounds = start_collaborator(open_plan(workspace, plan_path, overrides), name, connect_timeout)
    click.echo(f"collaborator {name} finished after working in {rounds} rounds")
