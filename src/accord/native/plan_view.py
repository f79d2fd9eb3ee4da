"""OpenFL's ``fx.get_plan()`` and ``fx.update_plan()``: the session's plan as flat dotted keys,
and changes to it made ahead of ``run_experiment``.

OpenFL wrote ``update_plan``'s changes into the workspace's plan.yaml and ignored (logged) a key
it did not know; here the plan lives in the session (``fx.init`` reads it), each change is
validated as ``override_config`` is, and an unknown key or a bad value is refused in one line.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from accord.errors import PlanError
from accord.native.experiment import SESSION, build_plan
from accord.plan.loader import apply_overrides, resolve

log = logging.getLogger("accord.native")


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists and other values are kept as they are."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def get_plan(return_complete: bool = False) -> dict[str, Any]:
    """The session's plan, Accord's defaults merged in, as ``{"aggregator.settings.rounds_to_train": 10, ...}``.

    As in OpenFL, keys whose value is None are left out, and so are ``defaults`` file names
    unless ``return_complete``. Print it with ``json.dumps(fx.get_plan(), indent=4, sort_keys=True)``.
    """
    flat = flatten(resolve(SESSION.plan, Path.cwd()))
    return {k: v for k, v in flat.items() if v is not None and (return_complete or "defaults" not in k.split("."))}


def update_plan(override_config: Mapping[str, Any]) -> None:
    """Change the session's plan ahead of time: dotted keys, as ``run_experiment``'s ``override_config`` takes.

    Every change is checked first (a key the plan does not have, or a value it does not take,
    is refused and nothing is changed); each one is logged.
    """
    try:
        build_plan(list(SESSION.col_names or ["one"]), override_config, Path.cwd(), source="update_plan")
    except PlanError as exc:
        message = exc.message if exc.message.startswith("update_plan") else f"update_plan: {exc.message}"
        raise PlanError(message, exc.fix or "use the keys fx.get_plan() shows") from None
    SESSION.plan = apply_overrides(SESSION.plan, override_config)
    for key, value in override_config.items():
        log.info("plan: %s = %r", key, value)
