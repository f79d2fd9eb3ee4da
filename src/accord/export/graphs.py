"""Inference graphs of a torch model: ONNX (``torch.onnx.export``) and OpenVINO IR (from that ONNX).

Each export is run once in its runtime (onnxruntime, OpenVINO on CPU in f32) on a batch of two
seeded samples and must give torch's output, else nothing is kept. The batch axis is dynamic.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from accord.errors import AccordError
from accord.export.consensus import is_torch_module

INPUT, OUTPUT = "input", "output"
#: how far an exported graph's output may be from torch's (absolute, plus this times |torch's|)
TOLERANCE = 1e-4
ONNX_FIX = "install the ONNX extra: pip install 'accord[onnx]'"
OPENVINO_FIX = "install the OpenVINO extra: pip install 'accord[openvino]' (and 'accord[onnx]')"


def example_batch(model: Any, sample_shape: tuple[int, ...]) -> Any:
    """Two seeded standard-normal samples of ``sample_shape`` in the module's dtype."""
    import torch

    param = next(model.parameters(), None)
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    generator = torch.Generator().manual_seed(0)
    return torch.randn((2, *sample_shape), generator=generator).to(dtype)


def write_onnx(model: Any, sample_shape: tuple[int, ...], path: Path) -> list[Path]:
    """The module as ONNX at ``path`` (input ``input``, output ``output``, batch axis dynamic)."""
    if not is_torch_module(model):
        raise AccordError("ONNX and OpenVINO export need a torch task runner", "use --format keras for this workspace")
    try:
        import onnx  # noqa: F401  # torch.onnx's dynamo exporter needs onnx and onnxscript
        import onnxruntime  # type: ignore[import-untyped]  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise AccordError(f"ONNX export needs {exc.name}, which is not installed", ONNX_FIX) from None
    import torch

    model.eval()
    example = example_batch(model, sample_shape)
    large = sum(t.numel() * t.element_size() for t in model.state_dict().values()) > 1 << 30
    with _quiet(), torch.no_grad():
        try:
            torch.onnx.export(
                model,
                (example,),
                str(path),
                input_names=[INPUT],
                output_names=[OUTPUT],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                dynamo=True,
                external_data=large,  # past 1 GiB the weights go to PATH.data (protobuf's 2 GiB limit)
                verbose=False,
            )
        except Exception as exc:  # the exporter raises many kinds; its first line says what failed
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise AccordError(
                f"torch.onnx.export could not export the model: {first}",
                "check the model and --input-shape (the shape of one sample, e.g. 64 or 1,8,8)",
            ) from exc
    written = [path, *([path.with_name(path.name + ".data")] if large else [])]
    _check_output(f"onnxruntime's output of {path.name}", _run_onnx(path, example), model, example)
    return written


def write_openvino(model: Any, sample_shape: tuple[int, ...], path: Path) -> list[Path]:
    """The module as OpenVINO IR: ``path`` (.xml) and its weights beside it (.bin), converted from ONNX, f32."""
    if path.suffix != ".xml":
        raise AccordError(f"an OpenVINO IR is a .xml file (with a .bin beside it), not {path.name}", "name -o FILE.xml")
    try:
        import openvino as ov  # type: ignore[import-untyped]
    except ImportError:
        raise AccordError("OpenVINO export needs openvino, which is not installed", OPENVINO_FIX) from None
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".onnx.") as scratch:  # the ONNX is not kept
        onnx_path = Path(scratch) / path.with_suffix(".onnx").name
        write_onnx(model, sample_shape, onnx_path)
        ov.save_model(ov.convert_model(str(onnx_path)), str(path), compress_to_fp16=False)
    example = example_batch(model, sample_shape)
    _check_output(f"OpenVINO's output of {path.name}", run_openvino(path, example.numpy()), model, example)
    return [path, path.with_suffix(".bin")]


def run_openvino(path: Path, batch: np.ndarray) -> np.ndarray:
    """The IR's output for ``batch`` on OpenVINO's CPU device in f32 (not the bf16 it may pick by itself)."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return np.asarray(compiled(batch)[0])


def _run_onnx(path: Path, example: Any) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run([OUTPUT], {INPUT: example.numpy()})[0])


def _check_output(what: str, got: np.ndarray, model: Any, example: Any) -> None:
    import torch

    with torch.no_grad():
        expected = model(example).detach().cpu().numpy()
    if got.shape != expected.shape or not np.allclose(got, expected, rtol=TOLERANCE, atol=TOLERANCE):
        gap = float(np.max(np.abs(got - expected))) if got.shape == expected.shape else float("inf")
        raise AccordError(
            f"{what} differs from torch's (shape {got.shape} vs {expected.shape}, largest gap {gap:.3g}); nothing was kept",
            "report the model's layers: the exporter mistranslated one",
        )


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter's progress lines and warnings (missing torchvision, ...) kept off the operator's screen."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch._dynamo", "torch.export", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
