"""``fx model``: get the federation's model out of the workspace."""

from __future__ import annotations

from pathlib import Path

import click

from accord.cli.options import OrderedGroup, open_plan, plan_option, workspace_option


@click.group(cls=OrderedGroup)
def model() -> None:
    """The consensus model, for use outside Accord (docs/model-export.md shows how to load each format)."""


@model.command("export")
@workspace_option
@plan_option
@click.option("--best", is_flag=True, help="The best model by the plan's best_metric (save/best.safetensors).")
@click.option("--last", is_flag=True, help="The last global model (save/last.safetensors).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["safetensors", "torch", "keras", "onnx", "openvino"]),
    required=True,
    help="safetensors (tensors only), torch (state_dict .pt), keras (.keras or .weights.h5), onnx, openvino (IR .xml + .bin).",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path),
    default=None,
    help="File to write (default: WS/export/best.pt and the like).",
)
@click.option(
    "--input-shape",
    default=None,
    metavar="N[,N...]",
    help="onnx/openvino: one sample's shape, e.g. 64 or 1,8,8 (default: from the data loader).",
)
def export(
    workspace: Path, plan_path: str, best: bool, last: bool, fmt: str, output: Path | None, input_shape: str | None
) -> None:
    """Write the best or last model without its optimizer state, in the framework's own file or as a graph.

    Builds the model with the workspace's own code (src/, as the sites run it): run it only
    in your own workspace.
    """
    from accord.errors import AccordError
    from accord.export.formats import export_model, parse_shape

    if best == last:
        raise AccordError("fx model export needs one of --best and --last", "give --best (the plan's best_metric) or --last")
    shape = parse_shape(input_shape) if input_shape else None
    plan = open_plan(workspace, plan_path)
    done = export_model(plan, "best" if best else "last", fmt, output, shape)
    for path in done.files:
        click.echo(f"wrote {path}")
    if done.sample_shape is not None:
        click.echo(f"input 'input': (batch, {', '.join(map(str, done.sample_shape))}) float; output 'output'")


@model.command("save", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--input", "-i", "source", default=None, help="OpenFL's model file (save/last.pbuf or best.pbuf).")
@click.option("--output", "-o", default=None, help="Where OpenFL wrote the native model.")
@click.pass_context
def save(ctx: click.Context, source: str | None, output: str | None) -> None:
    """OpenFL's spelling: says the fx model export command that does it in Accord."""
    from accord.errors import AccordError

    which = "--best" if source and "best" in source else "--last"
    target = f" -o {output}" if output else ""
    raise AccordError(
        "fx model save is OpenFL's command; Accord writes the framework's own model file with fx model export",
        f"type: fx model export {which} --format torch{target} (--format keras for a Keras model)",
    )
