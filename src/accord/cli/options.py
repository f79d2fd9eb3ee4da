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

key_type_option = click.option(  # the names pki/keys.py's KEY_TYPES makes (not imported here: fx loads no cryptography to start)
    "--key-type",
    type=click.Choice(["ec", "ec-p384", "rsa"]),
    default="ec",
    show_default=True,
    help="Type of a new key: ec (ECDSA P-256; before 2026-12-03 ec made P-384: use ec-p384 for that), ec-p384 (ECDSA P-384) or rsa (RSA-3072).",
)


def open_plan(workspace: Path, plan_path: str, overrides: tuple[str, ...] = ()) -> Plan:
    """Load the workspace's plan with the command line's overrides."""
    root = workspace.resolve()
    return load_plan(root / plan_path, parse_overrides(overrides), workspace=root)


class OrderedGroup(click.Group):
    """A command group whose help lists the commands in the order they are used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


yes_option = click.option("--yes", "-y", is_flag=True, help="Sign without asking (compare the fingerprint first!).")


def plan_if_present(workspace: Path, plan_path: str) -> Plan | None:
    """The workspace's plan if its file exists (a broken one still fails loudly), else None."""
    return open_plan(workspace, plan_path) if (workspace / plan_path).is_file() else None


def cert_dir_of(workspace: Path, plan: Plan | None) -> Path:
    """The workspace's PKI folder: the plan's network.settings.cert_dir, or ``cert``."""
    if plan is not None:
        return plan.resolve_path(plan.model.network.settings.cert_dir)
    return workspace.resolve() / "cert"
