"""``fx model export``: the consensus model in one format, written whole or not at all.

Every file of an export is written in a temporary folder beside the target and moved into
place only once the export checked out; a failed export leaves the old files untouched.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accord.collaborator.data_config import read_data_config
from accord.errors import AccordError
from accord.export.consensus import Which, consensus_model, model_tensors
from accord.export.framework_files import write_keras, write_torch
from accord.export.graphs import write_onnx, write_openvino
from accord.plan.loader import Plan
from accord.runners.from_plan import build_data_loader
from accord.tensors.state import save_state

#: format -> the suffix of its default file name
FORMATS: dict[str, str] = {
    "safetensors": ".safetensors",
    "torch": ".pt",
    "keras": ".keras",
    "onnx": ".onnx",
    "openvino": ".xml",
}
GRAPH_FORMATS = ("onnx", "openvino")
#: the most elements one sample may hold (the example batch of two float32 samples: 512 MiB)
MAX_SAMPLE_ELEMENTS = 1 << 26


@dataclass(frozen=True)
class Exported:
    """What an export wrote: its files (the first is the one to load) and the sample shape of a graph."""

    files: list[Path]
    sample_shape: tuple[int, ...] | None = None


def default_output(plan: Plan, which: Which, fmt: str) -> Path:
    """``WS/export/best.pt`` and the like: outside save/ (the aggregator's) and outside the workspace archive."""
    return plan.workspace / "export" / f"{which}{FORMATS[fmt]}"


def export_model(
    plan: Plan, which: Which, fmt: str, output: Path | None = None, input_shape: tuple[int, ...] | None = None
) -> Exported:
    """Write the ``best`` or ``last`` consensus model as ``fmt`` at ``output`` (default: default_output)."""
    if fmt not in FORMATS:
        raise AccordError(f"unknown export format {fmt!r}", f"use one of {', '.join(FORMATS)}")
    target = Path(output) if output is not None else default_output(plan, which, fmt)
    if target.is_dir():
        raise AccordError(f"{target} is a folder", f"give -o a file name, e.g. {target / (which + FORMATS[fmt])}")
    if fmt == "safetensors":
        state = model_tensors(plan, which)
        return Exported(_staged(target, lambda path: [save_state(path, state)]))
    model = consensus_model(plan, which)
    if fmt not in GRAPH_FORMATS:
        writer: Callable[[Any, Path], list[Path]] = write_torch if fmt == "torch" else write_keras
        return Exported(_staged(target, lambda path: writer(model, path)))
    shape = input_shape or sample_shape_of(plan)
    graph_writer = write_onnx if fmt == "onnx" else write_openvino
    return Exported(_staged(target, lambda path: graph_writer(model, shape, path)), shape)


def sample_shape_of(plan: Plan) -> tuple[int, ...]:
    """The shape of one sample: the data loader's ``feature_shape`` for the first site in plan/data.yaml."""
    config = plan.resolve_path(plan.model.collaborator.settings.data_config_path)
    entries = read_data_config(config) if config.is_file() else {}
    if not entries:
        raise AccordError(
            f"no input shape: {config} names no data to read one sample's shape from",
            "give --input-shape, the shape of one sample without the batch axis (e.g. 64 or 1,8,8)",
        )
    return tuple(int(n) for n in build_data_loader(plan, str(next(iter(entries.values())))).feature_shape)


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1,8,8"`` -> ``(1, 8, 8)``: positive integers, comma-separated, at most
    MAX_SAMPLE_ELEMENTS elements in all (each is checked before their product is taken)."""
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(n < 1 for n in shape):
        raise AccordError(
            f"--input-shape {text!r} is not a shape", "give positive integers separated by commas, e.g. 64 or 1,8,8"
        )
    elements = 1
    for n in shape:
        elements *= min(n, MAX_SAMPLE_ELEMENTS + 1)  # stays small: never a product of huge numbers
        if elements > MAX_SAMPLE_ELEMENTS:
            raise AccordError(
                f"--input-shape {text[:80]!r} holds more than {MAX_SAMPLE_ELEMENTS:,} elements a sample",
                "give the shape of one sample without the batch axis, e.g. 64 or 1,8,8",
            )
    return shape


def _staged(target: Path, write: Callable[[Path], list[Path]]) -> list[Path]:
    """Run ``write`` on a path of ``target``'s name in a temporary folder beside it, then move its files into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        written = write(folder / target.name)
        placed = [target.parent / path.name for path in written]
        for path, final in zip(written, placed):
            os.chmod(path, 0o644)
            os.replace(path, final)
        return placed
    finally:
        shutil.rmtree(folder, ignore_errors=True)
