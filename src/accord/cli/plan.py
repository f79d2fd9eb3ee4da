"""``fx plan``: initialize and inspect the FL plan."""

from __future__ import annotations

from pathlib import Path

import click
import yaml

from accord.cli.options import open_plan, override_option, plan_option, workspace_option


@click.group()
def plan() -> None:
    """The FL plan: the contract every participant runs with."""


@plan.command("initialize")
@workspace_option
@plan_option
@override_option
@click.option("--aggregator-address", "-a", default=None, help="Aggregator host name written into the plan.")
def initialize(workspace: Path, plan_path: str, overrides: tuple[str, ...], aggregator_address: str | None) -> None:
    """Check the plan and write the initial model to its init_state_path."""
    from accord.plan.loader import update_plan_file
    from accord.workspace.initialize import initialize_model

    if aggregator_address:
        update_plan_file(workspace.resolve() / plan_path, {"network.settings.agg_addr": aggregator_address})
    loaded = open_plan(workspace, plan_path, overrides)
    path = initialize_model(loaded)
    click.echo(f"initial model written to {path}\nplan hash {loaded.hash}")


@plan.command("print")
@workspace_option
@plan_option
@override_option
def print_plan(workspace: Path, plan_path: str, overrides: tuple[str, ...]) -> None:
    """Print the resolved plan (defaults merged) and its hash."""
    loaded = open_plan(workspace, plan_path, overrides)
    click.echo(yaml.safe_dump(loaded.model.model_dump(mode="json"), sort_keys=False))
    click.echo(f"# plan hash: {loaded.hash}")
