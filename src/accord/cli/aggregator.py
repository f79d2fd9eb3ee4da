"""``fx aggregator``: run the federation's aggregator."""

from __future__ import annotations

from pathlib import Path

import click

from accord.cli.options import open_plan, override_option, plan_option, workspace_option


@click.group()
def aggregator() -> None:
    """The aggregator: serves the plan's rounds to the collaborators over mutual TLS."""


@aggregator.command("start")
@workspace_option
@plan_option
@override_option
def start(workspace: Path, plan_path: str, overrides: tuple[str, ...]) -> None:
    """Start the aggregator and run every round of the plan, then exit."""
    from accord.aggregator.serve import start_aggregator

    runtime = start_aggregator(open_plan(workspace, plan_path, overrides))
    best = runtime.engine.best_score
    click.echo(
        f"federation finished: {runtime.engine.rounds_to_train} rounds"
        + (f", best {runtime.settings.best_metric}={best:.4f}" if best is not None else "")
    )
