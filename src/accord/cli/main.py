"""``fx``: the Accord command line. A user mistake ends with one line and exit code 2; SIGINT or
SIGTERM with 128 + its number (130, 143), after the stopped command said how to resume."""

from __future__ import annotations

import sys

import click

from accord import __version__
from accord.cli.options import OrderedGroup
from accord.errors import AccordError
from accord.logs import configure_logging, escape_control
from accord.stop_signals import Stopped


@click.group(cls=OrderedGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fx")
@click.option("--log-level", default="INFO", show_default=True, help="DEBUG, INFO, WARNING or ERROR.")
def fx(log_level: str) -> None:
    """Accord: federated learning where the model moves and the data stays.

    \b
    Try it on this machine:  fx quickstart
    Run your workspace as a local federation (mutual TLS, N processes):  fx run -w WS
    Learn the Python APIs in Jupyter:  fx tutorial start
    Run a federation across sites, in order (CA = the aggregator's workspace WS):
      (CA)    fx workspace create --prefix WS --template torch_digits
      (CA)    fx plan initialize -w WS -a AGG_HOST    initial model, aggregator address
      (CA)    fx workspace certify -w WS              root + signing CA
      (CA)    fx aggregator generate-cert-request -w WS, then fx aggregator certify -w WS
      (CA)    fx plan freeze -w WS                    hash into the plan, read-only
      (CA)    fx workspace export -w WS               the workspace for the sites (no keys)
      (site)  fx workspace import --archive ZIP --prefix SITE
      (site)  fx collaborator generate-cert-request -n NAME -w SITE --data-path PATH
      (CA)    fx collaborator certify --request-pkg col_NAME_to_agg_cert_request.zip -w WS
      (site)  fx collaborator certify --import agg_to_col_NAME_signed_cert.zip -w SITE
      (CA)    fx aggregator start -w WS     (site)  fx collaborator start -n NAME -w SITE
    Operators compare each CSR fingerprint by a second channel before signing.
    Watch it in a browser (read only):  fx dashboard -w WS
    Manage certificates: fx workspace certificates, fx workspace revoke NAME_OR_SERIAL
    Simulate many clients on this machine (or Ray):  fx simulate -w WS --clients 10000
    """
    configure_logging(log_level)


def _register() -> None:
    from accord.cli import (
        aggregator,
        audit,
        ca,
        collaborator,
        dashboard,
        model,
        plan,
        plot,
        quickstart,
        run,
        simulate,
        tutorial,
        workspace,
    )

    workspace.workspace.add_command(ca.certify_cmd, "certify")
    workspace.workspace.add_command(ca.certificates_cmd, "certificates")
    workspace.workspace.add_command(ca.revoke_cmd, "revoke")
    fx.add_command(quickstart.quickstart)
    fx.add_command(run.run)
    fx.add_command(workspace.workspace)
    fx.add_command(plan.plan)
    fx.add_command(aggregator.aggregator)
    fx.add_command(collaborator.collaborator)
    fx.add_command(dashboard.dashboard)
    fx.add_command(audit.audit)
    fx.add_command(simulate.simulate)
    fx.add_command(plot.plot)
    fx.add_command(tutorial.tutorial)
    fx.add_command(model.model)


_register()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fx`` console script."""
    try:
        fx.main(args=argv, prog_name="fx", standalone_mode=False)
    except AccordError as exc:
        click.echo(f"fx: error: {escape_control(str(exc))}", err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("fx: aborted", err=True)
        return 130
    except Stopped as exc:  # SIGINT or SIGTERM: the command said what it saved and how to resume
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
