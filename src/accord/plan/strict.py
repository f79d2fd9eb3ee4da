"""The plan's pydantic base: unknown keys refused."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Refuse unknown keys so a typo in the plan is an error, not a silent default."""

    model_config = ConfigDict(extra="forbid")
