"""Build the plan's pluggable objects (data loader, task runner, assigner) from dotted paths."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from accord.errors import PlanError


def import_object(dotted: str, where: str, workspace: Path | None = None) -> Any:
    """Import ``pkg.module.Name``; the workspace root is importable (its ``src`` package)."""
    if workspace is not None and str(workspace) not in sys.path:
        sys.path.insert(0, str(workspace))
    module_name, _, attr = dotted.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PlanError(
            f"{where} names {dotted}, but module {module_name} cannot be imported: {exc}",
            "check the dotted path, the workspace's src/ folder and installed extras",
        ) from exc
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        raise PlanError(f"{where} names {dotted}, but {module_name} has no {attr}") from exc


def build(section_name: str, template: str | None, settings: dict[str, Any], workspace: Path, **extra: Any) -> Any:
    """Instantiate a section's template with its settings (plus ``extra`` keyword arguments)."""
    if template is None:
        raise PlanError(f"plan section {section_name} has no template", f"set {section_name}.template")
    factory = import_object(template, f"{section_name}.template", workspace)
    try:
        return factory(**extra, **settings)
    except TypeError as exc:
        raise PlanError(
            f"{section_name}: {template} does not accept these settings: {exc}",
            f"check {section_name}.settings against {template}'s arguments",
        ) from exc
