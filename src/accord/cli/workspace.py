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
@click.option(
    "--archive", default=None, type=click.Path(dir_okay=False, path_type=Path), help="Archive from `fx workspace export`."
)
@click.option(
    "--from-openfl",
    "openfl",
    default=None,
    type=click.Path(exists=True, path_type=Path),
    help="An OpenFL 1.6-1.9 workspace (its folder or a zip of it) to make an Accord workspace.",
)
@click.option(
    "--prefix",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="New workspace directory (default: ./ARCHIVE_STEM).",
)
def import_(archive: Path | None, openfl: Path | None, prefix: Path | None) -> None:
    """Check, verify and unpack an exported workspace into a new directory.

    Every entry is checked before anything is written (no absolute or '..' paths, no links,
    only plan/, src/, requirements.txt and manifest.json, bounded sizes), and every file's
    SHA-256 and the plan hash are verified before the workspace is moved into place.

    With --from-openfl DIR_OR_ZIP instead: an OpenFL workspace's plan, src/ and requirements
    translated (docs/migrating-from-openfl.md), printing what was mapped, warned about and dropped.
    """
    from accord.errors import AccordError
    from accord.workspace.archive import import_workspace

    if (archive is None) == (openfl is None):
        raise AccordError(
            "fx workspace import needs one of --archive and --from-openfl", "give --archive WS.zip or --from-openfl DIR_OR_ZIP"
        )
    if openfl is not None:
        _import_openfl(openfl, prefix)
        return
    assert archive is not None
    result = import_workspace(archive, prefix)
    ws = result.workspace
    requirements = ws / "requirements.txt"
    click.echo(f"workspace imported to {ws}\nplan hash {result.plan.hash}\nworkspace hash {result.workspace_hash}")
    click.echo("compare the workspace hash with the federation operator's (it covers the plan and the code), then:")
    if requirements.is_file():
        click.echo(f"  - install the model's requirements yourself if needed: pip install -r {requirements}")
    click.echo(f"  - fx collaborator generate-cert-request -n NAME -w {ws} --data-path PATH")


def _import_openfl(source: Path, prefix: Path | None) -> None:
    from accord.workspace.openfl_import import import_openfl

    done = import_openfl(source, prefix)
    for title, notes in (
        ("mapped", [n for n in done.notes if not n.warned]),
        ("warned (no meaning in Accord; dropped)", [n for n in done.notes if n.warned]),
    ):
        click.echo(f"{title}:")
        for note in notes:
            click.echo(f"  {note.line()}")
    click.echo("files left behind:")
    for name, why in done.dropped:
        click.echo(f"  {name}: {why}")
    ws = done.workspace
    click.echo(f"Accord workspace created at {ws}\nplan hash {done.plan.hash}\nnext:")
    click.echo(f"  fx plan initialize -w {ws}    (the initial model, from the task runner)")
    click.echo(f"  fx workspace certify -w {ws}  (the federation's CA), then certify each site")
