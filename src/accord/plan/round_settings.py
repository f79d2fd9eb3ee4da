"""What a round runs and when it closes: the plan's tasks, assigner task groups and straggler policy."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from accord.plan.strict import Strict


class TaskGroup(Strict):
    name: str
    tasks: list[str] = Field(min_length=1)
    percentage: float | None = Field(None, gt=0, le=1)
    collaborators: list[str] | None = None


class AssignerSettings(Strict):
    task_groups: list[TaskGroup] = Field(min_length=1)
    seed: int = Field(0, ge=0)


class TaskSpec(Strict):
    function: Literal["train", "validate"]
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("kwargs")
    @classmethod
    def _apply(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
        if kwargs.get("apply", "global") not in ("global", "local"):
            raise ValueError(f"apply must be 'global' or 'local', got {kwargs['apply']!r}")
        return kwargs

    @property
    def returns_model(self) -> bool:
        """A training task sends back the model's tensors; a validation task only metrics."""
        return self.function == "train"

    @property
    def validates_global(self) -> bool:
        """A validation of the global model (``apply: global``, the default)."""
        return validates_global(self.function, self.kwargs)


def validates_global(function: str, kwargs: dict[str, Any]) -> bool:
    """Whether a task of ``function`` with ``kwargs`` validates the global model."""
    return function == "validate" and kwargs.get("apply", "global") == "global"


class StragglerSettings(Strict):
    """When a round closes without every report: see docs/failure-model.md."""

    policy: Literal["wait_for_all", "cutoff_time", "percentage"] = "wait_for_all"
    cutoff_seconds: float | None = Field(None, gt=0)
    min_reports: int = Field(1, ge=1)
    percentage: float | None = Field(None, gt=0, le=1)
    round_deadline_seconds: float = Field(86400.0, gt=0)

    @model_validator(mode="after")
    def _complete(self) -> StragglerSettings:
        if self.policy == "cutoff_time" and self.cutoff_seconds is None:
            raise ValueError("policy cutoff_time needs cutoff_seconds (how long a round waits for stragglers)")
        if self.policy == "percentage" and self.percentage is None:
            raise ValueError("policy percentage needs percentage (the fraction of collaborators that closes a round)")
        if self.cutoff_seconds is not None and self.cutoff_seconds > self.round_deadline_seconds:
            raise ValueError(
                f"cutoff_seconds ({self.cutoff_seconds:g}) exceeds round_deadline_seconds "
                f"({self.round_deadline_seconds:g}); the cut-off must come first"
            )
        return self
