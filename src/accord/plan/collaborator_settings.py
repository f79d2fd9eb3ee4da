"""The plan's collaborator.settings: optimizer treatment, delta updates, data.yaml, the client mods."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

from accord.plan.strict import Strict
from accord.plan.templates import template_problem


def _mod_template(value: str) -> str:
    why = template_problem("mod", value)
    if why:
        raise ValueError(why)
    return value


class ModSettings(Strict):
    """One client mod: a Mod class (accord.mods.Name or the workspace's src.module.Class) and its
    constructor's arguments, type-checked against it when it is built (plan/mods.py: Accord's own
    when the plan loads, the workspace's when the site starts)."""

    template: Annotated[str, AfterValidator(_mod_template)]
    settings: dict[str, Any] = Field(default_factory=dict)


class CollaboratorSettings(Strict):
    opt_treatment: Literal["RESET", "CONTINUE_LOCAL", "CONTINUE_GLOBAL"] = "RESET"
    delta_updates: bool = False
    data_config_path: str = "plan/data.yaml"
    #: the site's chain of client mods; a reply passes through them in this order
    mods: list[ModSettings] = Field(default_factory=list)
