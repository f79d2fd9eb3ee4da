"""NpzDataLoader: a collaborator's own data from a NumPy .npz file (never unpickled)."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from accord.data.arrays import ArrayDataLoader
from accord.errors import AccordError

NPZ_KEYS: tuple[str, ...] = ("x_train", "y_train", "x_valid", "y_valid")


def load_npz_arrays(data_path: str | Path) -> dict[str, np.ndarray]:
    """The arrays ``x_train, y_train, x_valid, y_valid`` of an .npz file, loaded without pickle."""
    path = Path(data_path).expanduser()
    if not path.is_file():
        raise AccordError(
            f"data file {path} does not exist",
            "set this collaborator's data path in plan/data.yaml to its .npz file",
        )
    if not zipfile.is_zipfile(path):
        raise AccordError(
            f"data file {path} is not a readable .npz file (not a zip archive)",
            "write it with np.savez(path, x_train=..., y_train=..., x_valid=..., y_valid=...)",
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            for key in NPZ_KEYS:
                if key not in archive.files:
                    raise AccordError(
                        f"data file {path} has no array {key!r} (it has {sorted(archive.files)})",
                        f"save the file with arrays {', '.join(NPZ_KEYS)} (np.savez)",
                    )
            return {key: archive[key] for key in NPZ_KEYS}
    except AccordError:
        raise
    except ValueError as exc:  # object arrays need pickle, which is refused
        raise AccordError(
            f"data file {path} holds an array that can only be read by unpickling ({exc})",
            "save plain numeric arrays (no dtype=object) with np.savez",
        ) from exc
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise AccordError(
            f"data file {path} is not a readable .npz file: {exc}",
            "write it with np.savez(path, x_train=..., y_train=..., x_valid=..., y_valid=...)",
        ) from exc


class NpzDataLoader(ArrayDataLoader):
    """Loads ``x_train, y_train, x_valid, y_valid`` from the .npz at ``data_path``.

    Settings the plan shares with built-in loaders (collaborator_count, seed, ...) are
    accepted and ignored.
    """

    def __init__(
        self,
        data_path: str,
        batch_size: int = 32,
        num_classes: int | None = None,
        **ignored_settings: Any,
    ) -> None:
        self.data_path = str(data_path)
        arrays = load_npz_arrays(self.data_path)
        super().__init__(
            arrays["x_train"],
            arrays["y_train"],
            arrays["x_valid"],
            arrays["y_valid"],
            batch_size=batch_size,
            num_classes=num_classes,
        )
