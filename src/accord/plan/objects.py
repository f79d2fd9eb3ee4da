"""Build the plan's pluggable objects (data loader, task runner, assigner) from dotted paths."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Any

from accord.errors import PlanError
from accord.imports import import_dotted


def use_workspace(workspace: Path) -> None:
    """Make ``workspace``'s own packages (``src``) importable first, forgetting another workspace's.

    Two workspaces used in one process both have a ``src`` package; without this the
    second would silently get the first one's model code.
    """
    root = workspace.resolve()
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


def build(section_name: str, template: str | None, settings: dict[str, Any], workspace: Path, **extra: Any) -> Any:
    """Instantiate a section's template with its settings (plus ``extra`` keyword arguments).

    The workspace root is put on ``sys.path`` first, so a template or setting may name
    the workspace's own code (``src.model.build_model``).
    """
    if template is None:
        raise PlanError(f"plan section {section_name} has no template", f"set {section_name}.template")
    use_workspace(workspace)
    factory = import_dotted(template, f"{section_name}.template")
    try:
        inspect.signature(factory).bind(**extra, **settings)
    except TypeError as exc:
        raise PlanError(
            f"{section_name}: {template} does not accept these settings: {exc}",
            f"check {section_name}.settings against {template}'s arguments",
        ) from exc
    except ValueError:  # no signature to check (some builtins): let the call decide
        pass
    return factory(**extra, **settings)
