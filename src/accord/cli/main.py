"""``fx``: the Accord command line. A user mistake ends with one line and exit code 2."""

from __future__ import annotations

import sys

import click

from accord import __version__
from accord.errors import AccordError
from accord.logs import configure_logging



@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fx")
@click.option("--log-level", default="INFO", show_default=True, help="DEBUG, INFO, WARNING or ERROR.")
def fx(log_level: str) -> None:
    """Accord: federated learning where the model moves and the data stays.

    \b
    Try it:          fx quickstart
    Run a federation, in order:
      1. fx workspace create --prefix WS --template torch_digits
      2. fx plan initialize                      (initial model, aggregator address)
      3. fx aggregator start  /  fx collaborator start -n NAME
    """
    configure_logging(log_level)


def _register() -> None:
    from accord.cli import aggregator, collaborator, plan, quickstart, workspace

    fx.add_command(quickstart.quickstart)
    fx.add_command(workspace.workspace)
    fx.add_command(plan.plan)
    fx.add_command(aggregator.aggregator)
    fx.add_command(collaborator.collaborator)


_register()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fx`` console script."""
    try:
        fx.main(args=argv, prog_name="fx", standalone_mode=False)
    except AccordError as exc:
        click.echo(f"fx: error: {exc}", err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("fx: aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
