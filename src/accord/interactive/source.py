"""Source, not pickles: the code a notebook or script defined, written out as one module.

``collect_module`` turns the functions and classes defined in ``__main__`` (a notebook's
cells, a script) into the text of one Python module, with what they refer to:

- a module becomes an import line (``import numpy as np``, ``from torch import nn``);
- a function or class of an importable module becomes ``from module import name``;
- a function or class of ``__main__`` is collected too, transitively;
- a simple literal (int, float, complex, str, bytes, bool, None, and tuples, lists, sets
  and dicts of them) is written with ``repr``;
- anything else (an array, a model, a data set, an open file) is refused with one
  AccordError naming the global and the fix.

Source is found from the code objects (``co_filename`` + ``linecache`` + ``ast``), which
works for notebook cells as well as files; a class is located through one of its methods.
The TaskInterface decorators (``@TI.register_fl_task``, ``@TI.add_kwargs``) are left out:
the plan carries what they say. Nothing is pickled or evaluated.
"""

from __future__ import annotations

import ast
import builtins
import inspect
import linecache
import symtable
import sys
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from accord.errors import AccordError

MAIN = "__main__"
#: decorators left out of collected source (TaskInterface's: the plan holds their content).
OMITTED_DECORATORS = frozenset({"register_fl_task", "add_kwargs"})
_SCALARS = (bool, int, float, complex, str, bytes, type(None))
_CONTAINERS = (tuple, list, set, dict)
_DEFINE_FIX = "define it at the top level of a notebook cell or script with def or class, or in an importable module"


@dataclass(frozen=True)
class CollectedModule:
    """The generated module's text and the top-level packages its import lines name."""

    text: str
    packages: frozenset[str]


@dataclass(frozen=True)
class Definition:
    """Where one function or class was defined: its name, source and global namespace."""

    name: str
    source: str
    namespace: dict[str, Any]


def defined_in_main(obj: Any) -> bool:
    """Whether ``obj`` is a function or class of ``__main__`` (a notebook or script)."""
    return _definable(obj) and getattr(obj, "__module__", None) == MAIN


def import_path(obj: Any, module: str) -> str:
    """The dotted path the sites import ``obj`` by: ``module.NAME`` if it comes from ``__main__``."""
    if defined_in_main(obj):
        return f"{module}.{_def_name(obj)}"
    location = import_location(obj)
    if location is None:
        raise AccordError(f"{obj!r} cannot be imported by name at the sites", _DEFINE_FIX)
    return ".".join(location)


def import_location(obj: Any) -> tuple[str, str] | None:
    """``(module, name)`` that imports ``obj`` back, the shortest already-imported package first.

    ``torch.utils.data.dataloader.DataLoader`` is found as ``torch.utils.data``'s DataLoader.
    """
    module = getattr(obj, "__module__", None)
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    if not isinstance(module, str) or module == MAIN or not isinstance(name, str) or not name.isidentifier():
        return None
    parts = module.split(".")
    for prefix in (".".join(parts[:end]) for end in range(1, len(parts) + 1)):
        if getattr(sys.modules.get(prefix), name, None) is obj:
            return prefix, name
    return None


def is_literal(value: Any) -> bool:
    """Whether ``repr(value)`` is a Python literal that reads back as an equal value."""
    try:
        return _literal_types(value) and ast.literal_eval(repr(value)) == value
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False


def collect_module(objects: Iterable[Any], docstring: str) -> CollectedModule:
    """One module holding every ``__main__`` object of ``objects`` and what they need.

    Objects from importable modules are skipped (the plan names them by dotted path).
    """
    collector = _Collector()
    for obj in objects:
        if defined_in_main(obj):
            collector.add(obj)
    text = collector.text(docstring)
    try:
        compile(text, "<accord generated module>", "exec")
    except SyntaxError as exc:
        raise AccordError(
            f"the collected source does not compile: {exc.msg} at line {exc.lineno}: {exc.text!r}",
            "keep each function and class self-contained at the top level of its cell",
        ) from exc
    return CollectedModule(text, frozenset(collector.packages))


def find_definition(obj: Any) -> Definition:
    """The source of a function or class of ``__main__``, dedented, TaskInterface decorators left out."""
    if not _definable(obj):
        raise AccordError(f"{obj!r} is neither a function nor a class", _DEFINE_FIX)
    name = _def_name(obj)
    kind = "class" if inspect.isclass(obj) else "function"
    for filename, line, namespace in _anchors(obj):
        lines = linecache.getlines(filename, namespace)
        node = _node_at(lines, name, line, kind) if lines else None
        if node is not None:
            return Definition(name, _node_source(lines, node), namespace)
    raise AccordError(
        f"cannot find the source of {kind} {name!r} (was it defined by exec, or is it a class without methods?)",
        "define it in a notebook cell or a .py file; give a class at least one method",
    )


def referenced_globals(source: str) -> list[str]:
    """The global names ``source`` reads anywhere, nested scopes included, sorted."""
    names: set[str] = set()
    tables = [symtable.symtable(source, "<collected>", "exec")]
    while tables:
        table = tables.pop()
        names.update(s.get_name() for s in table.get_symbols() if s.is_referenced() and s.is_global())
        tables.extend(table.get_children())
    return sorted(names)


# --------------------------------------------------------------------------- internals


class _Collector:
    """Accumulates import lines, literals and definitions, dependencies first."""

    def __init__(self) -> None:
        self.imports: dict[str, str] = {}
        self.constants: dict[str, str] = {}
        self.definitions: list[str] = []
        self.aliases: dict[str, str] = {}
        self.packages: set[str] = set()
        self._bound: dict[str, Any] = {}
        self._seen: list[Any] = []

    def add(self, obj: Any) -> None:
        if any(seen is obj for seen in self._seen):
            return
        self._seen.append(obj)
        definition = find_definition(obj)
        self._bind(definition.name, obj)
        for name in referenced_globals(definition.source):
            self._resolve(name, definition)
        self.definitions.append(definition.source)

    def _resolve(self, name: str, definition: Definition) -> None:
        if name not in definition.namespace:
            if hasattr(builtins, name):
                return
            raise AccordError(
                f"{definition.name} uses {name!r}, which is not defined in the notebook or script",
                f"define {name} before preparing the workspace, or remove the reference",
            )
        value = definition.namespace[name]
        if inspect.ismodule(value):
            self._import(name, value, _import_module_line(name, value), value.__name__)
        elif defined_in_main(value):
            self.add(value)
            if name != _def_name(value):
                self._bind(name, value)
                self.aliases[name] = f"{name} = {_def_name(value)}"
        elif is_literal(value):
            self._bind(name, value)
            self.constants[name] = f"{name} = {value!r}"
        elif (location := import_location(value)) is not None:
            module, imported = location
            line = f"from {module} import {imported}" + (f" as {name}" if name != imported else "")
            self._import(name, value, line, module)
        else:
            raise AccordError(
                f"{definition.name} uses the global {name!r}, a {type(value).__name__}, which cannot "
                "travel as source (only modules, functions, classes and plain literals do)",
                f"create it inside {definition.name}, pass a plain value as a task argument "
                "(TaskInterface.add_kwargs), or make it a literal (a number, string, list, dict)",
            )

    def _import(self, name: str, value: Any, line: str, module: str) -> None:
        self._bind(name, value)
        self.imports[name] = line
        self.packages.add(module.split(".")[0])

    def _bind(self, name: str, value: Any) -> None:
        if name in self._bound and self._bound[name] is not value:
            raise AccordError(
                f"two different objects would both be named {name!r} in the generated module",
                f"rename one of them in the notebook (the other {name!r} is {self._bound[name]!r})",
            )
        self._bound[name] = value

    def text(self, docstring: str) -> str:
        imports = sorted(self.imports.values(), key=lambda line: (line.startswith("from "), line))
        quoted = '"""' + docstring.replace('"""', "'''") + '"""'
        parts = [quoted, "\n".join(imports), "\n".join(self.constants.values())]
        parts += [source.rstrip("\n") for source in self.definitions]
        parts.append("\n".join(self.aliases.values()))
        return "\n\n\n".join(part for part in parts if part) + "\n"


def _definable(obj: Any) -> bool:
    if not callable(obj):
        return False
    return inspect.isclass(obj) or inspect.isfunction(inspect.unwrap(obj))


def _def_name(obj: Any) -> str:
    """The name ``obj``'s def or class statement binds; refuses lambdas and nested definitions."""
    target = obj if inspect.isclass(obj) else inspect.unwrap(obj)
    name, qualname = target.__name__, target.__qualname__
    if name == "<lambda>":
        raise AccordError(f"a lambda ({qualname}) has no source of its own to send", "define it with def")
    if qualname != name:
        raise AccordError(f"{qualname} is defined inside another function or class", _DEFINE_FIX)
    return name


def _anchors(obj: Any) -> list[tuple[str, int, dict[str, Any]]]:
    """(file, line, global namespace) of places inside ``obj``'s definition (line 0: anywhere)."""
    if not inspect.isclass(obj):
        function = inspect.unwrap(obj)
        return [(function.__code__.co_filename, function.__code__.co_firstlineno, function.__globals__)]
    found = []
    for value in vars(obj).values():
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        elif isinstance(value, property):
            value = value.fget
        function = inspect.unwrap(value) if callable(value) else None
        if inspect.isfunction(function) and function.__qualname__.startswith(obj.__qualname__ + "."):
            code = function.__code__
            found.append((code.co_filename, code.co_firstlineno, function.__globals__))
    module = sys.modules.get(obj.__module__)
    file = getattr(module, "__file__", None)
    if isinstance(module, ModuleType) and file:  # a script: its last class NAME
        found.append((file, 0, vars(module)))
    return found


_Definition = ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef


def _node_at(lines: list[str], name: str, line: int, kind: str) -> _Definition | None:
    """The innermost def (or class) named ``name`` whose lines hold ``line`` (0: the last one)."""
    try:
        tree = ast.parse("".join(lines))
    except SyntaxError:
        return None
    types = (ast.ClassDef,) if kind == "class" else (ast.FunctionDef, ast.AsyncFunctionDef)
    best: _Definition | None = None
    best_start = -1
    for node in ast.walk(tree):
        if isinstance(node, types) and node.name == name:
            start = _first_line(node)
            if (line == 0 or start <= line <= (node.end_lineno or start)) and start > best_start:
                best, best_start = node, start
    return best


def _first_line(node: _Definition) -> int:
    return min([d.lineno for d in getattr(node, "decorator_list", [])] + [node.lineno])


def _node_source(lines: list[str], node: _Definition) -> str:
    """The node's lines without the omitted decorators, dedented."""
    dropped: set[int] = set()
    for decorator in getattr(node, "decorator_list", []):
        call = decorator.func if isinstance(decorator, ast.Call) else decorator
        called = call.attr if isinstance(call, ast.Attribute) else getattr(call, "id", None)
        if called in OMITTED_DECORATORS:
            dropped.update(range(decorator.lineno, (decorator.end_lineno or decorator.lineno) + 1))
    numbers = range(_first_line(node), (node.end_lineno or node.lineno) + 1)
    return textwrap.dedent("".join(lines[n - 1] for n in numbers if n not in dropped))


def _import_module_line(name: str, module: ModuleType) -> str:
    full = module.__name__
    if full == MAIN:
        raise AccordError(f"the global {name!r} is the notebook's own module", "refer to its objects by name instead")
    parent, _, last = full.rpartition(".")
    if name == full:
        return f"import {full}"
    if parent and name == last:
        return f"from {parent} import {last}"
    return f"import {full} as {name}"


def _literal_types(value: Any) -> bool:
    kind = type(value)
    if kind in _SCALARS:
        return True
    if kind is dict:
        return all(_literal_types(k) and _literal_types(v) for k, v in value.items())
    return kind in _CONTAINERS and all(_literal_types(item) for item in value)
