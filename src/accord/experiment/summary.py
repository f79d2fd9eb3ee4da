"""The closing summary of a local federation."""

from __future__ import annotations

import statistics

from rich.console import Console
from rich.table import Table

from accord.experiment.local import FederationReport
from accord.plan.loader import Plan


def print_summary(console: Console, plan: Plan, report: FederationReport) -> None:
    """Rounds, final and best values of the plan's best metric, the privacy spent (central DP),
    and where the files are."""
    settings = plan.model.aggregator.settings
    key = settings.best_metric
    values = report.aggregated(key)
    overhead = report.aggregated("round/overhead_seconds")
    trained = [r for r in report.records if r.origin == "aggregator" and r.metric == "round_seconds" and r.round < settings.rounds_to_train]
    table = Table(title="Federation summary", show_header=False)
    table.add_row("rounds completed", f"{len(trained)} of {settings.rounds_to_train}")
    if values:
        best = max(values) if settings.best_direction == "maximize" else min(values)
        table.add_row(f"final {key}", f"{values[-1]:.4f}")
        table.add_row(f"best {key}", f"{best:.4f}")
    epsilon, delta = report.aggregated("privacy/epsilon"), report.aggregated("privacy/delta")
    if epsilon and delta:
        table.add_row("privacy spent (central DP)", f"epsilon {epsilon[-1]:.4f} at delta {delta[-1]:g}")
    target = settings.strategy.settings.get("target_epsilon")
    if target is not None and len(trained) < settings.rounds_to_train:
        table.add_row("stopped early", f"the next round would have spent more than target_epsilon {target:g} (see the aggregator's log)")
    if overhead:
        table.add_row("framework overhead per round", f"{1000 * statistics.median(overhead):.1f} ms (median)")
    table.add_row("wall time", f"{report.seconds:.1f} s")
    for label, path in (("initial model", settings.init_state_path), ("best model", settings.best_state_path), ("last model", settings.last_state_path)):
        table.add_row(label, str(plan.resolve_path(path)))
    table.add_row("metrics", str(plan.resolve_path(settings.metrics_path)))
    table.add_row("logs", str(plan.workspace / "logs"))
    console.print(table)
