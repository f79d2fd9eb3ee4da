"""``fx simulate``: the workspace's federation with simulated clients, in this process or on Ray."""

from __future__ import annotations

from pathlib import Path

import click

from accord.cli.options import open_plan, override_option, plan_option, workspace_option
from accord.errors import AccordError

_COUNT_KEY = "data_loader.settings.collaborator_count"


def _count(text: str) -> int:
    value = text.strip()
    if not value.isdigit() or int(value) < 1:
        raise AccordError(f"--clients is {text!r}; it must be a whole number >= 1", "pass e.g. --clients 10000")
    return int(value)


@click.command("simulate")
@workspace_option
@plan_option
@override_option
@click.option("--clients", "-n", "clients_text", required=True, metavar="N", help="How many clients are registered (names 1..N).")
@click.option("--backend", default="threads", show_default=True, help="threads (this process) or ray.")
@click.option("--workers", "workers_text", default=None, metavar="K", help="Clients run at once (default: one per core / the Ray cluster's CPUs).")
@click.option("--ray-address", default=None, help="The Ray cluster (auto: the one `ray start` made; default: a new local one).")
@click.option("--timeout", type=float, default=None, help="Seconds before the simulation gives up.")
def simulate(
    workspace: Path,
    plan_path: str,
    overrides: tuple[str, ...],
    clients_text: str,
    backend: str,
    workers_text: str | None,
    ray_address: str | None,
    timeout: float | None,
) -> None:
    """Run the plan's federation with N simulated clients on the aggregator's own round engine.

    \b
    Each round's cohort (aggregator.settings.sampling) runs the plan's task runner on the plan's
    data loader for each client's data path: its plan/data.yaml entry, else its name (for the
    built-in sets, its shard number; their collaborator_count is set to N unless overridden).
    Metrics go to the plan's metrics_path, the last and best models to theirs.
      fx simulate -w WS --clients 10000
      fx simulate -w WS --clients 100000 -o aggregator.settings.sampling.count=1000 --backend ray --ray-address auto
    """
    from accord.simulation import run_simulation

    clients = _count(clients_text)
    workers = None if workers_text is None else _count(workers_text)
    plan = open_plan(workspace, plan_path, overrides)
    if "collaborator_count" in dict(plan.model.data_loader.settings) and not any(o.startswith(_COUNT_KEY + "=") for o in overrides):
        plan = open_plan(workspace, plan_path, (*overrides, f"{_COUNT_KEY}={clients}"))
    result = run_simulation(plan, None, clients, backend=backend, workers=workers, ray_address=ray_address, timeout=timeout)
    for summary in result.rounds:
        shown = "  ".join(f"{k}={v:.4f}" for k, v in sorted(summary.metrics.items()))
        label = "final validation" if summary.final_validation else f"round {summary.round_number}"
        click.echo(f"{label}: {summary.clients} clients in {summary.seconds:.2f}s  {shown}")
    click.echo(
        f"simulated {result.registered} clients: {result.clients_per_second:.1f} clients/s trained; "
        f"{result.failed_clients} client failures; last model in {plan.model.aggregator.settings.last_state_path}"
    )
    if result.failed_clients:
        cid, error = next(iter(result.errors.items()))
        raise AccordError(f"{result.failed_clients} simulated clients failed; client {cid}: {error}", "fix the task code or the data")
