"""Resolving the dotted import paths a plan names (``pkg.module.attribute``), and the optional
modules of Accord's extras."""

from __future__ import annotations

import importlib
from typing import Any

from accord.errors import AccordError


def import_dotted(path: str, setting: str, fix: str | None = None) -> Any:
    """The object at ``path`` ("pkg.module.name"); AccordError naming ``setting`` if not found."""
    fix = fix or f"check {setting} in the plan and that the workspace's src/ is on the path"
    module_name, _, attribute = str(path).strip().rpartition(".")
    if not module_name or not attribute:
        raise AccordError(
            f"{setting} is {path!r}, which is not a dotted path like 'package.module.name'", fix
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AccordError(f"cannot import {path!r} ({setting}): {exc}", fix) from exc
    try:
        return getattr(module, attribute)
    except AttributeError as exc:
        raise AccordError(
            f"cannot import {path!r} ({setting}): module {module_name!r} has no {attribute!r}", fix
        ) from exc


def optional_module(name: str, needed_for: str, fix: str) -> Any:
    """The optional module ``name`` (an extra's package, imported when first used), or one
    AccordError saying ``needed_for`` needs it, with the ``fix`` that installs it."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise AccordError(f"{needed_for} needs the {name} package, which is not installed", fix) from None
