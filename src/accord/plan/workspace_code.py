"""Import the workspace's ``src`` package from its own source files only.

The workspace hash (plan/identity.py) covers the ``.py`` files under ``src/``; Python would
also run bytecode from ``__pycache__`` (an "unchecked-hash" ``.pyc`` is used without looking
at the source), sourceless ``.pyc`` files and extension modules, none of which the hash
vouches for. Once a workspace is in use, ``src`` and ``src.*`` are found only under that
workspace's ``src/`` (never a stray ``src`` elsewhere on ``sys.path``), compiled from the
source each time, and no bytecode is read or written for them. Code written for OpenFL
(``from openfl.federated import PyTorchTaskRunner``) gets Accord's compat classes while it is
imported, never a real ``openfl`` package.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import CodeType, ModuleType

from accord.plan.openfl_names import openfl_names

PACKAGE = "src"


class _SourceOnlyLoader(importlib.machinery.SourceFileLoader):
    """A source loader that never reads nor writes bytecode; while a module runs, OpenFL's
    module names are Accord's compat classes (plan/openfl_names.py)."""

    def exec_module(self, module: ModuleType) -> None:
        with openfl_names():
            super().exec_module(module)

    def get_code(self, fullname: str) -> CodeType:
        path = self.get_filename(fullname)
        return self.source_to_code(self.get_data(path), path)


class _WorkspaceFinder(importlib.abc.MetaPathFinder):
    """Finds ``src`` and ``src.*`` in the workspace in use, from source files only."""

    def __init__(self) -> None:
        self.root: Path | None = None

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if self.root is None or fullname.split(".")[0] != PACKAGE:
            return None
        home = self.root / PACKAGE
        where = [str(self.root)] if fullname == PACKAGE else list(path or [])
        spec = importlib.machinery.PathFinder.find_spec(fullname, where)
        if spec is None:
            raise ModuleNotFoundError(f"No module named {fullname!r} in the workspace {self.root}", name=fullname)
        if spec.origin is None:  # a namespace package: its folders must be the workspace's own
            locations = list(spec.submodule_search_locations or [])
            if not all(Path(p).resolve().is_relative_to(home) for p in locations):
                raise ImportError(f"{fullname} is not the workspace's own src package ({self.root})", name=fullname)
            return spec
        origin = Path(spec.origin).resolve()
        if not origin.is_relative_to(home):
            raise ImportError(f"{fullname} resolves to {origin}, outside the workspace's src/", name=fullname)
        if not isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            raise ImportError(
                f"{fullname} would run {origin}, which is not Python source: the workspace hash does not "
                "cover compiled code; remove it",
                name=fullname,
            )
        spec.loader = _SourceOnlyLoader(fullname, spec.origin)
        return spec


_FINDER = _WorkspaceFinder()


def activate(root: Path) -> None:
    """From now on, ``src`` is ``root``'s own package, imported from its source only.

    No bytecode is written by this process or the Python processes it starts (a worker that
    imports ``src`` without this finder would otherwise write ``src/__pycache__``, which the
    workspace hash refuses at the next start); existing caches of other packages still load.
    """
    _FINDER.root = root.resolve()
    sys.dont_write_bytecode = True
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


def active_workspace() -> Path | None:
    """The workspace whose ``src`` package is in use, or None."""
    return _FINDER.root
