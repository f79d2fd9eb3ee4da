"""Build the plan's pluggable objects (data loader, task runner, assigner) from dotted paths."""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from accord.errors import PlanError
from accord.imports import import_dotted
from accord.plan.templates import WORKSPACE_TEMPLATE, check_template
from accord.plan.workspace_code import activate


def use_workspace(workspace: Path) -> None:
    """Make ``workspace``'s own packages (``src``) importable first, forgetting another workspace's.

    Two workspaces used in one process both have a ``src`` package; without this the
    second would silently get the first one's model code. Its ``src`` is imported from the
    source files alone (plan/workspace_code.py): no bytecode is read or written for it.
    """
    root = workspace.resolve()
    activate(root)
    if str(root) in sys.path:
        sys.path.remove(str(root))
    sys.path.insert(0, str(root))
    for name, module in list(sys.modules.items()):
        top = name.split(".")[0]
        if not ((root / top).is_dir() or (root / f"{top}.py").is_file()):
            continue
        origin = getattr(module, "__file__", None) or next(iter(getattr(module, "__path__", [])), None)
        if origin is None or not Path(origin).resolve().is_relative_to(root):
            del sys.modules[name]


def _check_workspace_module(section_name: str, template: str, workspace: Path) -> None:
    """A ``src.*`` template's module must be a file of the workspace's own ``src`` package."""
    parts = template.split(".")[:-1]
    base = workspace.resolve() / Path(*parts)
    found = [p for p in (base.with_suffix(".py"), base / "__init__.py") if p.is_file()]
    if not found or not found[0].resolve().is_relative_to(workspace.resolve() / "src"):
        raise PlanError(
            f"{section_name}.template names {template}, but {base.relative_to(workspace.resolve())}.py is not "
            f"a file of the workspace's src package",
            f"add it under {workspace / 'src'} or fix {section_name}.template",
        )


def workspace_function(setting: str, template: str, workspace: Path) -> Callable[..., Any]:
    """The function ``src.module.name`` defined in the workspace's own ``src`` package (nothing
    else may be named, nor a function the module imported), imported from its source;
    PlanError naming ``setting`` otherwise."""
    if not WORKSPACE_TEMPLATE.fullmatch(template):
        raise PlanError(
            f"{setting} is {template!r}: it may name only a function of the workspace's src package",
            f"write {setting}: {{template: src.module.function}}",
        )
    _check_workspace_module(setting, template, workspace)
    use_workspace(workspace)
    found = import_dotted(template, setting)
    module = template.rsplit(".", 1)[0]
    if not callable(found) or isinstance(found, type):
        raise PlanError(f"{setting}: {template} is not a function", f"name a function of {module}")
    home = getattr(found, "__module__", None)
    if home != module:  # e.g. `from os import system` in the module: not the workspace's code
        raise PlanError(
            f"{setting}: {template} is defined in {home or 'no module'}, not in {module}",
            f"name a function defined in {module}",
        )
    return found


def _missing_members(obj: Any, protocol: type) -> list[str]:
    """The public members of ``protocol`` (methods, properties, attributes) that ``obj`` lacks."""
    names = {n for n in vars(protocol) if not n.startswith("_")} | set(getattr(protocol, "__annotations__", {}))
    return sorted(n for n in names if not hasattr(obj, n))


def build(
    section_name: str,
    template: str | None,
    settings: dict[str, Any],
    workspace: Path,
    expect: type | None = None,
    subclass_of: type | None = None,
    kind: str | None = None,
    typed: bool = False,
    imports_workspace: bool = True,
    extra_for: Callable[[Any], dict[str, Any]] | None = None,
    **extra: Any,
) -> Any:
    """Instantiate a section's template with its settings (plus ``extra`` keyword arguments).

    The template is checked against the allowed ones (plan/templates.py) before anything is
    imported; a ``src.*`` one must be a module of the workspace's own ``src`` package, which
    is importable first. An object built from the workspace's code must have every member of
    the ``expect`` protocol (Accord's own templates are known to). ``subclass_of``: what the
    template names must be a class derived from it (checked before it is called). ``kind``:
    the template allow-list to check (default: ``section_name``'s). ``typed``: the settings
    are validated against the factory's type annotations too (pydantic).
    ``imports_workspace``: whether one of Accord's templates may import the workspace's code (a
    runner's model): if not (strategies, mods), building it leaves the import path alone.
    ``extra_for``: more keyword arguments, chosen by what the template names (called with it).
    """
    if template is None:
        raise PlanError(f"plan section {section_name} has no template", f"set {section_name}.template")
    check_template(kind or section_name, template)
    workspace_code = WORKSPACE_TEMPLATE.fullmatch(template) is not None
    if workspace_code:
        _check_workspace_module(section_name, template, workspace)
    if workspace_code or imports_workspace:
        use_workspace(workspace)
    factory = import_dotted(template, f"{section_name}.template")
    if subclass_of is not None and isinstance(factory, type) and inspect.isabstract(factory):
        raise PlanError(
            f"{section_name}.template {template} is an abstract base class, not a {subclass_of.__name__} to run",
            f"name a concrete class derived from {template}",
        )
    if subclass_of is not None and not (isinstance(factory, type) and issubclass(factory, subclass_of)):
        raise PlanError(
            f"{section_name}.template {template} is not a {subclass_of.__name__} class",
            f"name a class derived from {subclass_of.__module__}.{subclass_of.__name__}",
        )
    if extra_for is not None:
        extra = {**extra, **extra_for(factory)}
    try:
        inspect.signature(factory).bind(**extra, **settings)
    except TypeError as exc:
        raise PlanError(
            f"{section_name}: {template} does not accept these settings: {exc}",
            f"check {section_name}.settings against {template}'s arguments",
        ) from exc
    except ValueError:  # no signature to check (some builtins): let the call decide
        pass
    built = _typed_call(section_name, template, factory, extra, settings) if typed else factory(**extra, **settings)
    missing = _missing_members(built, expect) if expect is not None and workspace_code else []
    if expect is not None and missing:
        raise PlanError(
            f"{section_name}.template {template} built a {type(built).__name__}, which is not "
            f"a {expect.__name__}: it lacks {', '.join(missing)}",
            f"give {template} the {expect.__name__} members ({expect.__module__})",
        )
    return built


def _strict() -> Any:
    from pydantic import ConfigDict

    return ConfigDict(strict=True, allow_inf_nan=False, arbitrary_types_allowed=True)


def _typed_call(section_name: str, template: str, factory: Any, extra: dict[str, Any], settings: dict[str, Any]) -> Any:
    """``factory(**extra, **settings)`` with each setting validated against the annotation of
    the constructor's parameter of that name, strictly (pydantic strict mode: ``"2"`` or ``true``
    for an int fail, an int passes for a float; no infinite or NaN float)."""
    import typing

    from pydantic import TypeAdapter, ValidationError

    strict = _strict()

    init = getattr(factory, "__init__", None)
    try:
        hints = typing.get_type_hints(init) if isinstance(factory, type) and init is not object.__init__ else {}
    except Exception as exc:  # an annotation that names what its module imports only for type checkers
        raise PlanError(
            f"{section_name}: {template}'s constructor annotations cannot be resolved ({type(exc).__name__}: {exc})",
            f"import at run time every type {template}'s __init__ annotates its arguments with",
        ) from None
    checked = dict(settings)
    problems = []
    for name, value in settings.items():
        if name not in hints:
            continue
        try:
            checked[name] = TypeAdapter(hints[name], config=strict).validate_python(value)
        except ValidationError as exc:
            problems += [f"{name}: {e['msg']} (got {value!r:.80})" for e in exc.errors()[:1]]
    if problems:
        raise PlanError(
            f"{section_name}: {template} settings are wrong: {'; '.join(problems)}",
            f"check {section_name}.settings against {template}'s arguments",
        )
    return factory(**extra, **checked)
