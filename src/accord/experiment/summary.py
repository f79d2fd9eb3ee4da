"""The closing summary of a local federation, and the run that ends with it."""

from __future__ import annotations

import statistics

from rich.console import Console
from rich.table import Table

from accord.errors import AccordError
from accord.experiment.local import FederationReport, run_processes
from accord.plan.loader import Plan


def print_line(console: Console, text: str) -> None:
    """``text`` as it is: no markup, no highlighting, never broken into lines (a path stays one to copy)."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def print_summary(console: Console, plan: Plan, report: FederationReport) -> None:
    """Rounds, final and best values of the plan's best metric, the privacy spent (central DP),
    and where the files are (those that exist): after the table, one a line, whole, whatever the terminal's width."""
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
    console.print(table)
    files = (
        ("initial model", plan.resolve_path(settings.init_state_path)),
        ("best model", plan.resolve_path(settings.best_state_path)),
        ("last model", plan.resolve_path(settings.last_state_path)),
        ("metrics", plan.resolve_path(settings.metrics_path)),
        ("logs", plan.workspace / "logs"),
    )
    for label, path in files:
        if path.exists():  # a run that failed early made none of them, or not all
            print_line(console, f"{label + ':':<15}{path}")


def run_with_summary(console: Console, plan: Plan, timeout: float = 600.0) -> FederationReport:
    """Run the prepared federation's processes, echo the aggregator's lines, print the summary;
    AccordError naming each process that failed."""
    report = run_processes(plan, on_line=lambda line: print_line(console, line), timeout=timeout)
    print_summary(console, plan, report)
    if not report.ok:
        failed = ", ".join(f"{n} (exit {c})" for n, c in report.returncodes.items() if c != 0)
        raise AccordError(f"the federation did not finish: {failed}", f"see the logs in {plan.workspace / 'logs'}")
    return report
