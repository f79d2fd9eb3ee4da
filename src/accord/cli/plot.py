"""``fx plot``: a workspace's per-round metrics (logs/metrics.jsonl) as a PNG."""

from __future__ import annotations

from pathlib import Path

import click

from accord.cli.options import open_plan, plan_option, workspace_option


@click.command("plot")
@workspace_option
@plan_option
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="PNG to write (default: WS/logs/metrics.png).")
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    metavar="TASK/METRIC",
    help="A metric to draw (repeatable; default: the aggregated ones, at most 12, the plan's best_metric first).",
)
@click.option("--sites", is_flag=True, help="Draw each site's curve beside the aggregated one.")
def plot(workspace: Path, plan_path: str, out: Path | None, metrics: tuple[str, ...], sites: bool) -> None:
    """Draw the per-round curves of the plan's metrics_path to a PNG.

    \b
      fx plot -w WS
      fx plot -w WS --metric aggregated_model_validation/accuracy --metric round/bytes_received --sites
    """
    from accord.aggregator.plot import listed, plot_metrics

    plan = open_plan(workspace, plan_path)
    target = out if out is not None else plan.workspace / "logs" / "metrics.png"
    settings = plan.model.aggregator.settings
    first = [settings.best_metric, *plan.model.tasks.settings]
    done = plot_metrics(plan.resolve_path(settings.metrics_path), target, metrics, sites, first)
    click.echo(f"wrote {target}: {', '.join(done.drawn)}")
    if done.more:
        click.echo(f"{len(done.more)} more not drawn; choose with --metric: {listed(done.more)}")
