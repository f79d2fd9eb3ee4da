"""``fx workspace``: create a workspace from a template."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def workspace() -> None:
    """Workspaces: the plan, the code, certificates, models and logs of one federation."""


@workspace.command("create")
@click.option("--prefix", required=True, type=click.Path(file_okay=False, path_type=Path), help="New workspace directory.")
@click.option("--template", default=None, help="Template name; leave out to list them.")
def create(prefix: Path, template: str | None) -> None:
    """Create a workspace from a packaged template."""
    from accord.workspace.create import create_workspace, list_templates

    if template is None:
        click.echo("templates: " + ", ".join(list_templates()) + "\nchoose one with --template NAME")
        return
    target = create_workspace(prefix, template)
    click.echo(f"workspace created at {target}")
