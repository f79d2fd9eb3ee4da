"""Build the plan's client mods (``collaborator.settings.mods``), in order, type-checked.

Each template is allow-listed (plan/templates.py, kind ``mod``) before it is imported, must
be a class derived from ``accord.mods.base.Mod`` and gets its settings checked against its
constructor's annotations: like the strategy (plan/strategy.py), when the plan loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from accord.errors import PlanError
from accord.imports import import_dotted
from accord.plan.objects import build


def build_mods(specs: list[Any], workspace: Path) -> list[Any]:
    """Fresh Mods (accord.mods.base) from the plan's ``[{template, settings}]`` list."""
    if not specs:
        return []
    base = import_dotted("accord.mods.base.Mod", "the client mod base class")
    mods = [
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
    check_order(mods)
    return mods


def check_order(mods: list[Any]) -> None:
    """Refuse a clipping mod after a noise mod: a reply passes through the mods in the list's
    order, so it would clip the noised update, and the noise would bound nothing."""
    noised = next((i for i, mod in enumerate(mods) if mod.adds_noise), None)
    late = next((i for i, mod in enumerate(mods) if noised is not None and i > noised and mod.clips), None)
    if noised is not None and late is not None:
        raise PlanError(
            f"collaborator.settings.mods[{late}] ({type(mods[late]).__name__}) comes after mods[{noised}] "
            f"({type(mods[noised]).__name__}): it would clip the noised update, and the noise would protect nothing",
            "list the clipping mod first (a reply passes through the mods in the list's order), or use accord.mods.LocalDP (both, in order)",
        )
