"""The framework's own model files: a torch state_dict, a Keras ``.keras`` or ``.weights.h5`` file.

None of them holds optimizer state; each is loadable without running code from the file
(``torch.load(..., weights_only=True)``, ``keras.saving.load_model(..., safe_mode=True)``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from accord.errors import AccordError
from accord.export.consensus import is_keras_model, is_torch_module

KERAS_SUFFIXES = (".keras", ".weights.h5")


def write_torch(model: Any, path: Path) -> list[Path]:
    """The module's state_dict (CPU tensors, keys exactly the module's) at ``path``; read back to check it."""
    if not is_torch_module(model):
        raise AccordError("--format torch needs a torch task runner", "use --format keras or safetensors for this workspace")
    import torch

    state = {name: tensor.detach().cpu().clone() for name, tensor in model.state_dict().items()}
    torch.save(state, path)
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    if list(loaded) != list(state) or not all(torch.equal(loaded[k], v) for k, v in state.items()):
        raise AccordError(f"{path} did not read back as the model's state_dict", "check the disk and export again")
    return [path]


def write_keras(model: Any, path: Path) -> list[Path]:
    """The Keras model at ``path``: ``.keras`` (architecture and weights, no optimizer) or ``.weights.h5``."""
    if not is_keras_model(model):
        raise AccordError("--format keras needs a Keras task runner", "use --format torch or safetensors for this workspace")
    if path.name.endswith(".weights.h5"):
        model.save_weights(path)
        return [path]
    if path.suffix != ".keras":
        raise AccordError(
            f"a Keras export is a .keras or .weights.h5 file, not {path.name}", "name -o FILE.keras or FILE.weights.h5"
        )
    try:
        bare = type(model).from_config(model.get_config())  # uncompiled: the file carries no optimizer
    except (NotImplementedError, TypeError, ValueError) as exc:
        raise AccordError(
            f"the Keras model {model.name!r} cannot be rebuilt from its config ({type(exc).__name__}), so no .keras file",
            "export its weights: -o FILE.weights.h5",
        ) from exc
    bare.set_weights(model.get_weights())
    bare.save(path)
    return [path]
