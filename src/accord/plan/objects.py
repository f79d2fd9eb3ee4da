"""Build the plan's pluggable objects (data loader, task runner, assigner) from dotted paths."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from accord.errors import PlanError
from accord.imports import import_dotted


def build(section_name: str, template: str | None, settings: dict[str, Any], workspace: Path, **extra: Any) -> Any:
    """Instantiate a section's template with its settings (plus ``extra`` keyword arguments).

    The workspace root is put on ``sys.path`` first, so a template or setting may name
    the workspace's own code (``src.model.build_model``).
    """
    if template is None:
        raise PlanError(f"plan section {section_name} has no template", f"set {section_name}.template")
    if str(workspace) not in sys.path:
        sys.path.insert(0, str(workspace))
    factory = import_dotted(template, f"{section_name}.template")
    try:
        return factory(**extra, **settings)
    except TypeError as exc:
        raise PlanError(
            f"{section_name}: {template} does not accept these settings: {exc}",
            f"check {section_name}.settings against {template}'s arguments",
        ) from exc
