"""The local federation's summary prints every path whole, on one line, in a narrow terminal."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from accord.experiment.local import FederationReport
from accord.experiment.summary import print_summary
from accord.metric_records import MetricRecord


def test_paths_are_never_cut_in_a_60_column_terminal(workspace_factory, monkeypatch) -> None:
    plan = workspace_factory(["collaborator1"], rounds=2)
    long = plan.workspace.parent / ("a-very-long-folder-name-that-no-terminal-fits-" * 3) / "ws"
    long.parent.mkdir()
    plan.workspace.rename(long)
    plan = type(plan)(model=plan.model, workspace=long, path=long / "plan" / "plan.yaml", hash=plan.hash)
    records = [MetricRecord(r, "aggregator", "aggregated_model_validation", "accuracy", 0.5 + r / 10) for r in range(3)]
    records += [MetricRecord(r, "aggregator", "round", "round_seconds", 1.0) for r in range(2)]
    for name in ("init.safetensors", "best.safetensors", "last.safetensors"):
        (long / "save").mkdir(exist_ok=True)
        (long / "save" / name).write_bytes(b"")
    (long / "logs").mkdir(exist_ok=True)
    (long / "logs" / "metrics.jsonl").write_bytes(b"")
    monkeypatch.setenv("COLUMNS", "60")
    out = io.StringIO()
    console = Console(file=out)
    assert console.width == 60
    print_summary(console, plan, FederationReport(long, {"aggregator": 0}, records, 3.0))
    shown = out.getvalue()
    assert "2 of 2" in shown and "0.7000" in shown
    for name in ("save/init.safetensors", "save/best.safetensors", "save/last.safetensors", "logs/metrics.jsonl"):
        path = str(long / name)
        assert len(path) > 60 and path in shown
    assert f"logs:          {long / 'logs'}\n" in shown


def test_only_files_that_exist_are_listed(workspace_factory) -> None:
    plan = workspace_factory(["collaborator1"], rounds=2)  # a run that stopped before its first round closed
    out = io.StringIO()
    print_summary(Console(file=out, width=200), plan, FederationReport(plan.workspace, {"aggregator": 1}, [], 1.0))
    shown = out.getvalue()
    assert "rounds completed" in shown and "0 of 2" in shown
    assert "best model" not in shown and "last model" not in shown and "metrics:" not in shown
    assert all(Path(line.split(":", 1)[1].strip()).exists() for line in shown.splitlines() if line.startswith(("initial", "logs")))
