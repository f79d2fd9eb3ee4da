"""Build the plan's client mods (``collaborator.settings.mods``), in order, type-checked.

Each template is allow-listed (plan/templates.py, kind ``mod``) before it is imported, must
be a class derived from ``accord.mods.base.Mod`` and gets its settings checked against its
constructor's annotations: like the strategy (plan/strategy.py), when the plan loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from accord.imports import import_dotted
from accord.plan.objects import build


def build_mods(specs: list[Any], workspace: Path) -> list[Any]:
    """Fresh Mods (accord.mods.base) from the plan's ``[{template, settings}]`` list."""
    if not specs:
        return []
    base = import_dotted("accord.mods.base.Mod", "the client mod base class")
    return [
        build(
            f"collaborator.settings.mods[{i}]",
            spec.template,
            dict(spec.settings),
            workspace,
            subclass_of=base,
            kind="mod",
            typed=True,
            imports_workspace=False,
        )
        for i, spec in enumerate(specs)
    ]
