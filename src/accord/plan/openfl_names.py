"""OpenFL's module names for a workspace's code, while Accord imports that code.

The classes are Accord's (compat/openfl/), named here by module path and imported only when
the workspace's code asks for one, as plan/templates.py names the classes a plan may use.

While a module of the workspace's ``src`` package runs its import-time code
(plan/workspace_code.py wraps it in ``openfl_names()``), ``openfl``, ``openfl.federated``,
``openfl.utilities`` and the other names in ``OPENFL_MODULES`` are thin modules holding this
package's classes; any other ``openfl.*`` name is a ModuleNotFoundError saying what is provided.
A real installed ``openfl`` is never imported then (one already imported is set aside for the
duration). Outside those imports nothing is aliased: ``import openfl`` finds what Python
would find (no alias is left in ``sys.modules``).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import Any

_HOME = "accord.compat.openfl"

#: where each OpenFL class lives here
_CLASSES: dict[str, str] = {
    "TaskRunner": f"{_HOME}.runner",
    "PyTorchTaskRunner": f"{_HOME}.torch_runner",
    "KerasTaskRunner": f"{_HOME}.keras_runner",
    "DataLoader": f"{_HOME}.loaders",
    "PyTorchDataLoader": f"{_HOME}.loaders",
    "KerasDataLoader": f"{_HOME}.loaders",
    "Metric": f"{_HOME}.metric",
}

_RUNNERS = ("TaskRunner", "PyTorchTaskRunner", "KerasTaskRunner")
_LOADERS = ("DataLoader", "PyTorchDataLoader", "KerasDataLoader")

#: OpenFL's module names a workspace may import, and the classes each holds
OPENFL_MODULES: dict[str, tuple[str, ...]] = {
    "openfl": (),
    "openfl.federated": _RUNNERS + _LOADERS,
    "openfl.federated.task": _RUNNERS,
    "openfl.federated.task.runner": ("TaskRunner",),
    "openfl.federated.task.runner_pt": ("PyTorchTaskRunner",),
    "openfl.federated.task.runner_keras": ("KerasTaskRunner",),
    "openfl.federated.data": _LOADERS,
    "openfl.federated.data.loader": ("DataLoader",),
    "openfl.federated.data.loader_pt": ("PyTorchDataLoader",),
    "openfl.federated.data.loader_keras": ("KerasDataLoader",),
    "openfl.utilities": ("Metric",),
    "openfl.utilities.types": ("Metric",),
}

_MARK = "__accord_openfl_alias__"
_state = threading.local()


def is_openfl_name(name: str) -> bool:
    """Whether ``name`` is ``openfl`` or one of its submodules."""
    return name == "openfl" or name.startswith("openfl.")


def alias_module(name: str) -> ModuleType:
    """A thin module ``name`` whose classes (imported on first use) are this package's."""
    names = OPENFL_MODULES[name]
    module = ModuleType(name, f"OpenFL's {name}, provided by Accord ({_HOME})")
    module.__all__ = list(names)  # type: ignore[attr-defined]
    setattr(module, _MARK, True)

    def __getattr__(attr: str) -> Any:
        if attr not in names:
            raise AttributeError(f"{name} (Accord's OpenFL compatibility) has no {attr!r}; it provides {', '.join(names) or 'submodules only'}")
        return getattr(importlib.import_module(_CLASSES[attr]), attr)

    module.__getattr__ = __getattr__  # type: ignore[method-assign]
    return module


class _AliasLoader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return alias_module(spec.name)

    def exec_module(self, module: ModuleType) -> None:
        return None


class _OpenFLFinder(importlib.abc.MetaPathFinder):
    """Answers ``openfl.*`` with alias modules, only inside ``openfl_names()``."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not getattr(_state, "depth", 0) or not is_openfl_name(fullname):
            return None
        if fullname not in OPENFL_MODULES:
            raise ModuleNotFoundError(
                f"No module named {fullname!r}: Accord's OpenFL compatibility (accord.compat.openfl) provides "
                f"{', '.join(OPENFL_MODULES)}; import Accord's own API for the rest",
                name=fullname,
            )
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(), is_package=True)


_FINDER = _OpenFLFinder()


@contextmanager
def openfl_names() -> Iterator[None]:
    """OpenFL's module names resolve to Accord's compat classes inside this block (re-entrant)."""
    depth = getattr(_state, "depth", 0)
    if depth:
        _state.depth = depth + 1
        try:
            yield
        finally:
            _state.depth = depth
        return
    if _FINDER in sys.meta_path:  # first again: a finder put before it could find an installed openfl
        sys.meta_path.remove(_FINDER)
    sys.meta_path.insert(0, _FINDER)
    aside = {n: m for n, m in sys.modules.items() if is_openfl_name(n) and not getattr(m, _MARK, False)}
    for name in aside:
        del sys.modules[name]
    _state.depth = 1
    try:
        yield
    finally:
        _state.depth = 0
        for name in [n for n, m in sys.modules.items() if is_openfl_name(n) and getattr(m, _MARK, False)]:
            del sys.modules[name]
        sys.modules.update(aside)
