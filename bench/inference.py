"""Inference latency and memory of an exported model: torch (the baseline), onnxruntime, OpenVINO.

The models, in float32 on CPU:

- ``mlp``: the torch_digits template's model as its plan builds it (64-128-128-10, 26 k
  parameters), built by the template's own ``src/model.py``;
- ``cnn``: a larger CNN defined here (3x64x64 input; four conv-BN-ReLU-pool stages of 32 to
  256 channels, then a 10-way linear head: 0.43 M parameters, 60 M multiply-adds a sample), so
  that the figures are about the runtimes' kernels rather than their per-call overhead.

Each model is exported once by Accord's own exporters (accord/export/graphs.py: ONNX by
``torch.onnx.export``, OpenVINO IR converted from it; both checked against torch's output).
Then, for each runtime and batch size (1 and 32), ``--repeats`` fresh child processes each
load the model, run ``--warmup`` calls and time ``--calls`` calls on one seeded batch:

- latency: the mean time of one call in that child (min and median over the children);
- memory: the child's peak RSS (VmHWM) above its RSS before it imported the runtime
  ("runtime + model": the library, the loaded model and inference) and above its RSS once
  the library was imported ("model": the loaded model and inference alone).

Runtimes: ``torch`` (``torch.inference_mode``, ``torch.set_num_threads``), ``onnxruntime``
(CPUExecutionProvider, ``intra_op_num_threads``), ``openvino`` (CPU, ``INFERENCE_NUM_THREADS``,
``INFERENCE_PRECISION_HINT`` f32: torch's numbers) and ``openvino-auto`` (OpenVINO's own
precision choice: bf16 on a CPU with AVX-512 BF16 or AMX, so different numbers). Every
runtime gets ``--threads`` threads (1 by default: a shared machine). Ratios are torch's median
over the runtime's (above 1: lower than torch), measured in the same run.

    .venv/bin/python bench/inference.py [--models mlp cnn] [--repeats 5] [--calls 200] [--threads 1]

``--child`` is the mode the script starts itself in.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _table import Column, Table

RUNTIMES = ("torch", "onnxruntime", "openvino", "openvino-auto")
BATCHES = (1, 32)
SAMPLE_SHAPES = {"mlp": (64,), "cnn": (3, 64, 64)}


def build_module(name: str, folder: Path) -> Any:
    """The model ``name``, freshly initialised (seed 0)."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    if name == "mlp":
        from accord.plan.objects import use_workspace

        use_workspace(folder / "ws")
        return importlib.import_module("src.model").build_model(in_features=64, hidden=128, num_classes=10)
    stages: list[nn.Module] = []
    channels = 3
    for width in (32, 64, 128, 256):
        stages += [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2)]
        channels = width
    return nn.Sequential(*stages, nn.Flatten(), nn.Linear(256 * 4 * 4, 10))


def export_all(name: str, folder: Path) -> None:
    """``name``'s state_dict (.pt), ONNX and OpenVINO IR in ``folder``, by Accord's exporters."""
    import torch

    from accord.export.graphs import write_onnx, write_openvino

    module = build_module(name, folder).eval()
    torch.save(module.state_dict(), folder / f"{name}.pt")
    write_onnx(module, SAMPLE_SHAPES[name], folder / f"{name}.onnx")
    write_openvino(module, SAMPLE_SHAPES[name], folder / f"{name}.xml")


def rss_kb(field: str = "VmRSS") -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def child(runtime: str, name: str, folder: Path, batch: int, calls: int, warmup: int, threads: int) -> dict[str, float]:
    """Load ``name`` in ``runtime``, time ``calls`` calls on one batch; latency and memory figures."""
    x = np.random.default_rng(0).standard_normal((batch, *SAMPLE_SHAPES[name])).astype(np.float32)
    before_import = rss_kb()
    if runtime == "torch":
        import torch

        torch.set_num_threads(threads)
        after_import = rss_kb()
        module = build_module(name, folder)
        module.load_state_dict(torch.load(folder / f"{name}.pt", weights_only=True), strict=True)
        module.eval()
        tensor = torch.from_numpy(x)

        def call() -> Any:
            with torch.inference_mode():
                return module(tensor)
    elif runtime == "onnxruntime":
        import onnxruntime

        after_import = rss_kb()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = onnxruntime.InferenceSession(str(folder / f"{name}.onnx"), options, providers=["CPUExecutionProvider"])

        def call() -> Any:
            return session.run(["output"], {"input": x})
    else:
        import openvino as ov

        after_import = rss_kb()
        config: dict[str, Any] = {"INFERENCE_NUM_THREADS": threads}
        if runtime == "openvino":
            config["INFERENCE_PRECISION_HINT"] = "f32"
        request = ov.Core().compile_model(str(folder / f"{name}.xml"), "CPU", config).create_infer_request()

        def call() -> Any:
            return request.infer({0: x})

    for _ in range(warmup):
        call()
    started = time.perf_counter()
    for _ in range(calls):
        call()
    seconds = (time.perf_counter() - started) / calls
    peak = rss_kb("VmHWM")
    return {"ms": 1000 * seconds, "total_mb": (peak - before_import) / 1024, "model_mb": (peak - after_import) / 1024}


def measure(args: argparse.Namespace, folder: Path, name: str, runtime: str, batch: int) -> list[dict[str, float]]:
    """``args.repeats`` fresh children's figures for one (model, runtime, batch)."""
    runs = []
    for _ in range(args.repeats):
        command = [sys.executable, __file__, "--child", runtime, "--folder", str(folder), "--models", name]
        command += [
            "--batch",
            str(batch),
            "--calls",
            str(args.calls),
            "--warmup",
            str(args.warmup),
            "--threads",
            str(args.threads),
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0:
            raise SystemExit(f"{runtime} child failed:\n{done.stderr[-3000:]}")
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return runs


def report(name: str, batch: int, figures: dict[str, list[dict[str, float]]]) -> None:
    """One table: per runtime, min and median of each figure and torch's median over its median."""
    keys = ("ms", "total_mb", "model_mb")
    base = {key: statistics.median(r[key] for r in figures["torch"]) for key in keys}
    print(f"\n{name}, batch {batch}: min and median over {len(figures['torch'])} processes; x = torch's median / this median")
    columns = [Column("runtime", 14)]
    for label in ("latency ms", "runtime+model MB", "model MB"):
        columns += [Column(f"{label} min", 0, ".3f"), Column("median", 8, ".3f"), Column("x", 6, ".2f")]
    table = Table(*columns)
    for runtime, runs in figures.items():
        cells: list[object] = [runtime]
        for key in keys:
            values = [r[key] for r in runs]
            median = statistics.median(values)
            cells += [min(values), median, base[key] / median if median > 0 else float("inf")]
        table.row(*cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(SAMPLE_SHAPES), default=["mlp", "cnn"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", choices=RUNTIMES, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.models[0], args.folder, args.batch, args.calls, args.warmup, args.threads)))
        return
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    with tempfile.TemporaryDirectory(prefix="accord-inference-") as tmp:
        folder = Path(tmp)
        from accord.workspace.create import create_workspace

        create_workspace(folder / "ws", "torch_digits")
        print(f"threads {args.threads}, {args.calls} timed calls after {args.warmup} warm-up calls per process")
        for name in args.models:
            export_all(name, folder)
            for batch in BATCHES:
                report(name, batch, {runtime: measure(args, folder, name, runtime, batch) for runtime in RUNTIMES})


if __name__ == "__main__":
    main()
