"""Options shared by several fx commands."""

from __future__ import annotations

from pathlib import Path

import click

from accord.plan.loader import Plan, load_plan, parse_overrides

workspace_option = click.option(
    "--workspace",
    "-w",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Workspace directory (holds plan/, src/, cert/, save/, logs/).",
)
plan_option = click.option(
    "--plan", "-p", "plan_path", default="plan/plan.yaml", show_default=True, help="Plan file, relative to the workspace."
)
override_option = click.option(
    "--override",
    "-o",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Dotted plan override, e.g. aggregator.settings.rounds_to_train=5 (repeatable).",
)


def open_plan(workspace: Path, plan_path: str, overrides: tuple[str, ...] = ()) -> Plan:
    """Load the workspace's plan with the command line's overrides."""
    root = workspace.resolve()
    return load_plan(root / plan_path, parse_overrides(overrides), workspace=root)
