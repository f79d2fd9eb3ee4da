"""The workspace hash: the identity of everything that executes at a site.

The plan hash (plan/loader.py) names the plan; the workspace hash adds the code and the
requirements it runs, so two operators who compare it know that the same code will run:

    SHA-384 of the canonical JSON (sorted keys, no spaces) of
    {"plan": <plan hash>, "files": {<path>: <SHA-384 hex of the file's bytes>, ...}}

where the files are every file under ``src/`` and ``requirements.txt`` if present, each named
by its path relative to the workspace with ``/`` separators. These are exactly the code files
``fx workspace export`` ships. A symbolic link under ``src/`` is refused (an archive carries
plain files only), and so is code Python runs without its source (``__pycache__`` folders,
``.pyc``/``.pyo`` bytecode, ``.so``/``.pyd`` extension modules, ``.pth`` files): a site that
has one refuses to start rather than run what the hash does not describe. Accord itself
never writes bytecode under ``src/`` (plan/workspace_code.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path, PurePosixPath

from accord.errors import AccordError

BYTECODE_DIR = "__pycache__"
COMPILED_SUFFIXES = {
    ".pyc": "Python bytecode",
    ".pyo": "Python bytecode",
    ".so": "a compiled extension module",
    ".pyd": "a compiled extension module",
    ".dll": "a compiled library",
    ".dylib": "a compiled library",
    ".pth": "a .pth file (Python runs its import lines)",
}
REQUIREMENTS = "requirements.txt"
_CHUNK = 1024 * 1024


def compiled_code_problem(name: str) -> str | None:
    """Why the file or folder ``name`` holds code Python may run without its source, or None."""
    path = PurePosixPath(name)
    if BYTECODE_DIR in path.parts:
        return f"a {BYTECODE_DIR} folder (bytecode Python may run instead of the source)"
    kind = COMPILED_SUFFIXES.get(path.suffix.lower())
    return f"{kind}, which Python runs without its source" if kind else None


def source_files(workspace: Path) -> list[Path]:
    """Every file under ``workspace/src``, sorted; a symbolic link or compiled code is refused."""
    root = Path(workspace) / "src"
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for entry in [*dirnames, *filenames]:
            path = Path(dirpath) / entry
            if path.is_symlink():
                raise AccordError(
                    f"{path} is a symbolic link; a workspace's code is plain files only",
                    "replace it with the file itself",
                )
            why = compiled_code_problem(entry)
            if why:
                raise AccordError(
                    f"{path} is {why}; the workspace hash does not cover it, so this workspace will not run",
                    f"delete it (rm -r {path}): Accord never writes it; python or a tool run in the workspace did",
                )
        files.extend(Path(dirpath) / f for f in sorted(filenames))
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
