"""The workspace hash: the identity of everything that executes at a site.

The plan hash (plan/loader.py) names the plan; the workspace hash adds the code and the
requirements it runs, so two operators who compare it know that the same code will run:

    SHA-384 of the canonical JSON (sorted keys, no spaces) of
    {"plan": <plan hash>, "files": {<path>: <SHA-384 hex of the file's bytes>, ...}}

where the files are every file under ``src/`` (``__pycache__`` folders and ``.pyc``/``.pyo``
files left out) and ``requirements.txt`` if present, each named by its path relative to the
workspace with ``/`` separators. These are exactly the code files ``fx workspace export``
ships. A symbolic link under ``src/`` is refused (an archive carries plain files only).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from accord.errors import AccordError

SKIPPED_DIRS = frozenset({"__pycache__"})
SKIPPED_SUFFIXES = frozenset({".pyc", ".pyo"})
REQUIREMENTS = "requirements.txt"
_CHUNK = 1024 * 1024


def source_files(workspace: Path) -> list[Path]:
    """Every file under ``workspace/src`` except caches, sorted; a symbolic link is refused."""
    root = Path(workspace) / "src"
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_DIRS)
        for entry in [*dirnames, *filenames]:
            if (Path(dirpath) / entry).is_symlink():
                raise AccordError(
                    f"{Path(dirpath) / entry} is a symbolic link; a workspace's code is plain files only",
                    "replace it with the file itself",
                )
        files.extend(Path(dirpath) / f for f in sorted(filenames) if Path(f).suffix not in SKIPPED_SUFFIXES)
    return files


def code_files(workspace: Path) -> dict[str, Path]:
    """The files the workspace hash covers: ``src/**`` and ``requirements.txt``, by relative path."""
    root = Path(workspace).resolve()
    found = source_files(root)
    if (root / REQUIREMENTS).is_file():
        found.append(root / REQUIREMENTS)
    return dict(sorted((path.relative_to(root).as_posix(), path) for path in found))


def file_digest(path: Path, algorithm: str = "sha384") -> str:
    """Hex digest of a file's bytes (``hashlib`` algorithm name), read in chunks."""
    digest = hashlib.new(algorithm)
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def workspace_hash(plan_hash: str, workspace: Path) -> str:
    """The workspace hash of a plan (by its hash) and the code in ``workspace``; see the module."""
    files = {name: file_digest(path) for name, path in code_files(workspace).items()}
    canonical = json.dumps({"plan": plan_hash, "files": files}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha384(canonical.encode("utf-8")).hexdigest()


_SHA384_HEX = re.compile(r"[0-9a-f]{96}")


def shown_hash(value: str) -> str:
    """A hash's first 16 digits for a message; a peer's value that is not a SHA-384 hex is not quoted."""
    if not value:
        return "(none)"
    return f"{value[:16]}..." if _SHA384_HEX.fullmatch(value) else "(not a SHA-384 hash)"
