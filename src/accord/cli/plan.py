"""``fx plan``: initialize, freeze, inspect and keep named versions of the FL plan."""

from __future__ import annotations

import socket
from pathlib import Path

import click
import yaml

from accord.cli.options import OrderedGroup, open_plan, override_option, plan_option, workspace_option
from accord.errors import PlanError


@click.group(cls=OrderedGroup)
def plan() -> None:
    """The FL plan: the contract every participant runs with; its hash names the federation.

    \b
    In order:
      1. edit WS/plan/plan.yaml                   (fx plan print shows it resolved)
      2. fx plan initialize -a AGGREGATOR_HOST    (address, initial model, hash)
      3. fx plan freeze                           (hash stored, file read-only)
    Keep variants with fx plan save / switch / list / remove.
    """


name_option = click.option("--name", "-n", required=True, help="Plan name: letters, digits, '_' and '-'.")


@plan.command("initialize")
@workspace_option
@plan_option
@override_option
@click.option(
    "--aggregator-address",
    "-a",
    default=None,
    help="Aggregator host name written into network.settings.agg_addr (default: this host's FQDN).",
)
def initialize(workspace: Path, plan_path: str, overrides: tuple[str, ...], aggregator_address: str | None) -> None:
    """Write the aggregator's address into the plan, check it, and write the initial model.

    A frozen plan keeps its address (it is part of the hash).
    """
    from accord.plan.freeze import is_frozen
    from accord.plan.loader import read_yaml, update_plan_file
    from accord.workspace.initialize import initialize_model

    path = workspace.resolve() / plan_path
    current = ((read_yaml(path).get("network") or {}).get("settings") or {}).get("agg_addr")
    if is_frozen(path):
        if aggregator_address and aggregator_address != current:
            raise PlanError(
                f"{path} is frozen; its aggregator address ({current or 'the default'}) is part of the hash",
                "leave out -a, or change a saved copy (fx plan save) and freeze it again",
            )
    else:
        address = aggregator_address or socket.getfqdn()
        if address != current:
            update_plan_file(path, {"network.settings.agg_addr": address})
    loaded = open_plan(workspace, plan_path, overrides)
    model_path = initialize_model(loaded)
    click.echo(f"aggregator address {loaded.model.network.settings.agg_addr}")
    click.echo(f"initial model written to {model_path}\nplan hash {loaded.hash}")


@plan.command("freeze")
@workspace_option
@plan_option
def freeze(workspace: Path, plan_path: str) -> None:
    """Store the plan's hash in it and make the file read-only; later loads verify the hash."""
    from accord.plan.freeze import freeze_plan

    path = workspace.resolve() / plan_path
    result = freeze_plan(path, workspace.resolve())
    if result.already:
        click.echo(f"{path} is already frozen; nothing to do\nplan hash {result.hash}")
    else:
        click.echo(f"{path} frozen (read-only)\nplan hash {result.hash}")


@plan.command("print")
@workspace_option
@plan_option
@override_option
def print_plan(workspace: Path, plan_path: str, overrides: tuple[str, ...]) -> None:
    """Print the resolved plan (defaults merged) and its hash."""
    loaded = open_plan(workspace, plan_path, overrides)
    click.echo(yaml.safe_dump(loaded.model.model_dump(mode="json"), sort_keys=False))
    click.echo(f"# plan hash: {loaded.hash}")


@plan.command("save")
@name_option
@workspace_option
@click.option("--force", is_flag=True, help="Overwrite a saved plan of that name.")
def save(name: str, workspace: Path, force: bool) -> None:
    """Save plan/plan.yaml as plan/plans/NAME and make NAME the active plan."""
    from accord.plan.named import NamedPlans

    target = NamedPlans(workspace).save(name, force)
    click.echo(f"plan saved as {name!r} ({target}); it is the active plan")


@plan.command("switch")
@name_option
@workspace_option
def switch(name: str, workspace: Path) -> None:
    """Save the working plan under the active name, then make plan NAME the working plan."""
    from accord.plan.named import NamedPlans

    saved_as = NamedPlans(workspace).switch(name)
    if saved_as is None:
        click.echo(f"{name!r} is already the active plan; nothing to do")
    else:
        click.echo(f"working plan saved as {saved_as!r}; switched to {name!r}")


@plan.command("list")
@workspace_option
def list_plans(workspace: Path) -> None:
    """List the saved plans; '*' marks the active one."""
    from accord.plan.named import NamedPlans

    plans = NamedPlans(workspace)
    names, active = plans.names(), plans.active
    if not names:
        click.echo("no saved plans; save one with `fx plan save -n NAME`")
    for name in names:
        click.echo(f"{'*' if name == active else ' '} {name}")


@plan.command("remove")
@name_option
@workspace_option
def remove(name: str, workspace: Path) -> None:
    """Delete the saved plan NAME (not the active one)."""
    from accord.plan.named import NamedPlans

    NamedPlans(workspace).remove(name)
    click.echo(f"plan {name!r} removed")
