"""``fx run``: any workspace as a local federation (CA, certificates, aggregator and N
collaborator processes over mutual TLS), in one command."""

from __future__ import annotations

from pathlib import Path

import click

from accord.cli.options import override_option, workspace_option
from accord.plan.loader import parse_overrides


@click.command("run")
@workspace_option
@click.option(
    "--collaborators",
    "-c",
    type=int,
    default=None,
    help="Sites to run, collaborator1..N, each a process; at most 64 (default: the plan's collaborators, else those plan/data.yaml names, else 2).",
)
@click.option("--rounds", "-r", type=int, default=None, help="Rounds to train (default: the plan's rounds_to_train).")
@click.option(
    "--data-path",
    "data_paths",
    multiple=True,
    metavar="NAME=PATH",
    help="A site's data path (repeatable); default: the workspace's plan/data.yaml, else shard 1..N of a built-in set.",
)
@override_option
@click.option(
    "--scratch",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for the run's copy, CA, models and logs (replaced on each run)  [default: WS/.accord-run]",
)
@click.option("--timeout", type=float, default=600.0, show_default=True, help="Seconds before the run gives up (at least 1).")
def run(
    workspace: Path,
    collaborators: int | None,
    rounds: int | None,
    data_paths: tuple[str, ...],
    overrides: tuple[str, ...],
    scratch: Path | None,
    timeout: float,
) -> None:
    """Run the workspace's federation on this machine: an aggregator and N collaborators as processes over mutual TLS.

    \b
    The workspace is only read: its plan (frozen or not) and code are copied into the scratch
    folder, which gets its own CA and certificates, data.yaml, models, metrics and logs.
      fx run -w WS
      fx run -w WS --collaborators 3 --rounds 5
      fx run -w WS --data-path site1=/data/a.npz --data-path site2=/data/b.npz -c 2
    """
    from rich.console import Console

    from accord.experiment.local import check_timeout
    from accord.experiment.summary import print_line, run_with_summary
    from accord.experiment.workspace_run import parse_data_paths, prepare_run

    check_timeout(timeout)  # before anything is made
    console = Console()
    setup = prepare_run(
        workspace,
        collaborators=collaborators,
        rounds=rounds,
        data_paths=parse_data_paths(data_paths),
        overrides=parse_overrides(overrides),
        scratch=scratch,
    )
    plan = setup.plan
    names = plan.model.collaborators
    console.print(f"[bold]fx run[/]: {len(names)} collaborators ({', '.join(names)}), {plan.rounds} rounds")
    frozen = f"frozen plan {setup.source.hash[:16]}..., run as a copy with plan hash" if setup.frozen else "plan hash"
    print_line(console, f"workspace {setup.source.workspace}  ({frozen} {plan.hash[:16]}...)")
    if setup.sites_from_data_config:
        print_line(console, "the sites are those the workspace's plan/data.yaml names (its plan lists no collaborators)")
    print_line(console, f"run folder {plan.workspace}  (its own CA and certificates in cert/, data paths in plan/data.yaml)")
    run_with_summary(console, plan, timeout=timeout)
