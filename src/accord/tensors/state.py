"""ModelState: an ordered mapping of tensor name to NumPy array, saved as safetensors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np

from accord.errors import AccordError, RefusedError
from accord.files import atomic_path

ModelState = dict[str, np.ndarray]

#: dtypes a tensor may have on disk or on the wire; nothing else is accepted.
ALLOWED_DTYPES: frozenset[str] = frozenset(
    {"float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool"}
)


def save_state(path: str | os.PathLike, state: Mapping[str, np.ndarray]) -> Path:
    """Write ``state`` to ``path`` as safetensors, atomically (temp file + rename)."""
    from safetensors.numpy import save_file

    target = Path(path)
    arrays = {name: np.asarray(value, order="C") for name, value in state.items()}  # keeps 0-d shape
    with atomic_path(target) as partial:
        save_file(arrays, str(partial))
    return target


def load_state(path: str | os.PathLike) -> ModelState:
    """Read a safetensors file into a ModelState, in the file's tensor order."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    source = Path(path)
    if not source.is_file():
        raise AccordError(
            f"model file {source} does not exist",
            "run `fx plan initialize` to write the initial model",
        )
    try:
        return dict(load_file(str(source)))
    except (SafetensorError, OSError, ValueError) as exc:
        raise AccordError(f"model file {source} is not a readable safetensors file: {exc}") from exc


def check_update(
    template: Mapping[str, np.ndarray], update: Mapping[str, np.ndarray], origin: str
) -> None:
    """Refuse an update whose names, shapes or dtypes differ from ``template``, or that holds NaN/Inf."""
    missing = [name for name in template if name not in update]
    extra = [name for name in update if name not in template]
    if missing or extra:
        raise RefusedError(
            f"update from {origin} has the wrong tensors"
            + (f"; missing {missing[:5]}" if missing else "")
            + (f"; unexpected {extra[:5]}" if extra else "")
        )
    for name, expected in template.items():
        got = update[name]
        if got.shape != expected.shape:
            raise RefusedError(
                f"update from {origin}: tensor {name!r} has shape {got.shape}, expected {expected.shape}"
            )
        if got.dtype != expected.dtype:
            raise RefusedError(
                f"update from {origin}: tensor {name!r} has dtype {got.dtype}, expected {expected.dtype}"
            )
        if got.dtype.kind == "f" and not np.isfinite(got).all():
            raise RefusedError(f"update from {origin}: tensor {name!r} holds NaN or Inf values")
