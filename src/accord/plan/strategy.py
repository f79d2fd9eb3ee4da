"""Build the plan's aggregation strategy (``aggregator.settings.strategy``), type-checked.

The template is checked against the allowed ones (plan/templates.py) before anything is
imported; what it names must be a class derived from ``accord.strategies.base.Strategy``
(checked before it is called); its settings are bound to its constructor's signature and
validated against the constructor's type annotations (pydantic), so an unknown setting, a
missing one or a wrongly typed one fails when the plan loads, in one line naming it. A
wrapper's ``strategy`` setting (a ``{template, settings}`` mapping) is built the same way.

A plan that names the workspace's own code (``src.*``) is only allow-listed when it loads:
loading a plan (``fx workspace import`` of an archive not yet approved, ``fx plan freeze``,
``fx aggregator status``) never imports the workspace's code. Such a strategy is built, and its
settings checked, where the code runs anyway: ``fx aggregator start``, ``fx collaborator
start`` and the Python APIs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from accord.errors import PlanError
from accord.imports import import_dotted
from accord.plan.aggregator_settings import SecureAggregationSettings
from accord.plan.objects import build
from accord.plan.templates import WORKSPACE_TEMPLATE

WHERE = "aggregator.settings.strategy"


def build_strategy(spec: Mapping[str, Any], workspace: Path, where: str = WHERE) -> Any:
    """A fresh Strategy (accord.strategies.base) from a ``{template, settings}`` mapping."""
    settings = dict(spec.get("settings") or {})
    inner = settings.get("strategy")
    if isinstance(inner, Mapping):
        if set(inner) - {"template", "settings"} or "template" not in inner:
            raise PlanError(f"{where}.settings.strategy must be a mapping with template (and settings)")
        settings["strategy"] = build_strategy(inner, workspace, f"{where}.settings.strategy")
    base = import_dotted("accord.strategies.base.Strategy", "the strategy base class")
    return build(where, str(spec["template"]), settings, workspace, subclass_of=base, kind="strategy", typed=True, imports_workspace=False)


def names_workspace_code(spec: Mapping[str, Any]) -> bool:
    """Whether a ``{template, settings}`` strategy mapping (or one it wraps) names ``src.*`` code."""
    inner = (spec.get("settings") or {}).get("strategy")
    return bool(WORKSPACE_TEMPLATE.fullmatch(str(spec.get("template")))) or (
        isinstance(inner, Mapping) and names_workspace_code(inner)
    )


def secured(strategy: Any, settings: SecureAggregationSettings) -> Any:
    """``strategy``, wrapped in SecureAggregation (strategies/secure.py) if ``settings`` enable
    it; a strategy that needs each update on its own is refused there, in one line."""
    if not settings.enabled:
        return strategy
    secure = import_dotted("accord.strategies.secure.SecureAggregation", "secure aggregation")  # a layer above the plan's
    return secure(strategy, settings)
