"""``fx quickstart``: a whole federation on this machine, with no set-up."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option("--collaborators", "-c", default=2, show_default=True, help="Number of collaborator processes.")
@click.option("--rounds", "-r", default=5, show_default=True, help="Rounds to train.")
@click.option(
    "--workspace",
    "-w",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Workspace directory to create (kept afterwards); a temporary one by default.",
)
def quickstart(collaborators: int, rounds: int, workspace: Path | None) -> None:
    """Run a federation on digits: an aggregator and N collaborators as processes over mutual TLS."""
    from rich.console import Console

    from accord.experiment.local import prepare_workspace
    from accord.experiment.summary import print_line, run_with_summary

    console = Console()
    console.print(f"[bold]Accord quickstart[/]: {collaborators} collaborators, {rounds} rounds, digits MLP")
    plan = prepare_workspace(workspace, collaborators, rounds)
    print_line(console, f"workspace {plan.workspace}  (CA and certificates in cert/, plan hash {plan.hash[:16]}...)")
    run_with_summary(console, plan)
