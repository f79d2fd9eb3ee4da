"""``fx workspace``: create a workspace, export it for the sites, import it at a site."""

from __future__ import annotations

from pathlib import Path

import click

from accord.cli.options import OrderedGroup, workspace_option


@click.group(cls=OrderedGroup)
def workspace() -> None:
    """Workspaces: the plan, the code, certificates, models and logs of one federation.

    \b
    In order:
      1. fx workspace create --prefix WS --template torch_digits
      2. edit WS/plan/plan.yaml, then fx plan initialize -w WS and fx plan freeze -w WS
      3. fx workspace certify -w WS              the federation's CA (stays in WS/cert)
      4. fx workspace export -w WS               plan, src/, requirements.txt: no keys, no data
      5. at each site: fx workspace import --archive WS.zip --prefix SITE, then
         fx collaborator generate-cert-request -n NAME -w SITE --data-path PATH
    """


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


@workspace.command("export")
@workspace_option
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Archive to write (default: WORKSPACE_NAME.zip beside the workspace).",
)
@click.option("--force", is_flag=True, help="Overwrite an existing archive.")
def export(workspace: Path, output: Path | None, force: bool) -> None:
    """Zip what the sites need: the plan, src/, requirements.txt and a manifest of SHA-256s.

    Keys, certificates, data, models, logs and plan/data.yaml never go in; a file under
    plan/ or src/ that holds a private key stops the export.
    """
    from accord.workspace.archive import export_workspace

    result = export_workspace(workspace, output, force)
    click.echo(
        f"workspace exported to {result.path} ({len(result.files)} files)\n"
        f"plan hash {result.plan_hash}\n"
        f"workspace hash {result.workspace_hash}   (plan + src/ + requirements.txt: read it to each site's operator)"
    )


@workspace.command("import")
@click.option("--archive", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Archive from `fx workspace export`.")
@click.option(
    "--prefix",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="New workspace directory (default: ./ARCHIVE_STEM).",
)
def import_(archive: Path, prefix: Path | None) -> None:
    """Check, verify and unpack an exported workspace into a new directory.

    Every entry is checked before anything is written (no absolute or '..' paths, no links,
    only plan/, src/, requirements.txt and manifest.json, bounded sizes), and every file's
    SHA-256 and the plan hash are verified before the workspace is moved into place.
    """
    from accord.workspace.archive import import_workspace

    result = import_workspace(archive, prefix)
    ws = result.workspace
    requirements = ws / "requirements.txt"
    click.echo(f"workspace imported to {ws}\nplan hash {result.plan.hash}\nworkspace hash {result.workspace_hash}")
    click.echo("compare the workspace hash with the federation operator's (it covers the plan and the code), then:")
    if requirements.is_file():
        click.echo(f"  - install the model's requirements yourself if needed: pip install -r {requirements}")
    click.echo(f"  - fx collaborator generate-cert-request -n NAME -w {ws} --data-path PATH")
