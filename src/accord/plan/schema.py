"""Pydantic schema of the FL plan: every section has ``defaults``, ``template`` and ``settings``.

Each section's settings are in a module of their own: aggregator_settings.py (and its sinks,
sink_settings.py), collaborator_settings.py, round_settings.py (tasks, assigner, stragglers),
compression.py; this module holds the sections, the network settings and the whole plan.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

from accord.plan.aggregator_settings import AggregatorSettings
from accord.plan.code_settings import code_problem, named_code
from accord.plan.collaborator_settings import CollaboratorSettings
from accord.plan.compression import CompressionSection
from accord.plan.round_settings import AssignerSettings, StragglerSettings, TaskSpec
from accord.plan.strict import Strict
from accord.plan.templates import template_problem

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
#: names no collaborator may take: "aggregator" is the origin of the aggregated metrics records
RESERVED_NAMES = ("aggregator",)
#: the plan's sections, in the order they are resolved
SECTIONS = (
    "aggregator",
    "collaborator",
    "data_loader",
    "task_runner",
    "network",
    "assigner",
    "tasks",
    "compression_pipeline",
    "straggler_handling_policy",
)


class NetworkSettings(Strict):
    agg_addr: str = "localhost"
    agg_port: int = Field(50051, ge=0, le=65535)
    cert_dir: str = "cert"
    chunk_bytes: int = Field(1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    long_poll_seconds: float = Field(30.0, gt=0)
    connect_timeout_seconds: float = Field(60.0, gt=0)
    reconnect_timeout_seconds: float = Field(600.0, gt=0)
    transfer_timeout_seconds: float = Field(3600.0, gt=0)
    max_update_bytes: int | None = Field(None, ge=1)
    max_workers: int = Field(32, ge=4)
    first_message_seconds: float = Field(10.0, gt=0)
    chunk_idle_seconds: float = Field(30.0, gt=0)
    max_calls_per_collaborator: int = Field(4, ge=2)
    max_concurrent_calls: int = Field(4096, ge=8)
    min_upload_bytes_per_second: float = Field(1024 * 1024, gt=0)


class Section(Strict):
    """A plan section; ``KIND`` names what its template builds (plan/templates.py), if anything."""

    KIND: ClassVar[str] = ""
    #: why a template key is refused in a section built from none
    NO_TEMPLATE: ClassVar[str] = "Accord builds nothing from this section's template; remove the key"

    defaults: str | None = None
    template: str | None = None
    settings: dict[str, Any] = Field(default_factory=dict)

    @field_validator("template")
    @classmethod
    def _dotted(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not cls.KIND:
            raise ValueError(cls.NO_TEMPLATE)
        why = template_problem(cls.KIND, value)
        if why:
            raise ValueError(why)
        return value

    @field_validator("settings")
    @classmethod
    def _named_code(cls, settings: Any) -> Any:
        """Settings that name code may name only what plan/code_settings.py allows."""
        for setting, value in named_code(cls.KIND, settings) if cls.KIND else ():
            why = code_problem(setting, value)
            if why:
                raise ValueError(why)
        return settings


class DataLoaderSection(Section):
    KIND: ClassVar[str] = "data_loader"


class TaskRunnerSection(Section):
    KIND: ClassVar[str] = "task_runner"


class StragglerSection(Strict):
    defaults: str | None = None
    template: None = Field(None, description="the policies are built in; choose one with settings.policy")
    settings: StragglerSettings = Field(default_factory=StragglerSettings)


class AggregatorSection(Section):
    NO_TEMPLATE: ClassVar[str] = (
        "the aggregator is built from no template: choose the aggregation algorithm with "
        "aggregator.settings.strategy.template (e.g. accord.strategies.FedAdam) and remove aggregator.template"
    )
    settings: AggregatorSettings = Field(default_factory=AggregatorSettings)  # type: ignore[assignment]  # pydantic: validated as this model


class CollaboratorSection(Section):
    settings: CollaboratorSettings = Field(default_factory=CollaboratorSettings)  # type: ignore[assignment]  # pydantic: validated as this model


class NetworkSection(Section):
    settings: NetworkSettings = Field(default_factory=NetworkSettings)  # type: ignore[assignment]  # pydantic: validated as this model


class AssignerSection(Section):
    KIND: ClassVar[str] = "assigner"
    settings: AssignerSettings  # type: ignore[assignment]  # pydantic: validated as this model


class TasksSection(Section):
    settings: dict[str, TaskSpec] = Field(min_length=1)


class PlanModel(Strict):
    """The whole plan once defaults are merged and overrides applied."""

    collaborators: list[str] = Field(default_factory=list)
    hash: str | None = None
    aggregator: AggregatorSection
    collaborator: CollaboratorSection
    data_loader: DataLoaderSection
    task_runner: TaskRunnerSection
    network: NetworkSection
    assigner: AssignerSection
    tasks: TasksSection
    compression_pipeline: CompressionSection = Field(default_factory=CompressionSection)
    straggler_handling_policy: StragglerSection = Field(default_factory=StragglerSection)

    @field_validator("collaborators")
    @classmethod
    def _names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not re.fullmatch(NAME_PATTERN, name):
                raise ValueError(f"collaborator name {name!r} must match {NAME_PATTERN}")
            if name.lower() in RESERVED_NAMES:
                raise ValueError(f"collaborator name {name!r} is reserved (the aggregated metrics' origin); choose another")
        if len(set(names)) != len(names):
            raise ValueError("collaborator names must be unique")
        return names

    @model_validator(mode="after")
    def _cross_checks(self) -> PlanModel:
        known = set(self.tasks.settings)
        for group in self.assigner.settings.task_groups:
            unknown = [t for t in group.tasks if t not in known]
            if unknown:
                raise ValueError(
                    f"assigner task group {group.name!r} names tasks {unknown} that the tasks "
                    f"section does not define (defined: {sorted(known)})"
                )
        task, _ = self.aggregator.settings.best_metric.split("/")
        if task not in known:
            raise ValueError(
                f"aggregator.settings.best_metric names task {task!r}, which the tasks section "
                f"does not define (defined: {sorted(known)})"
            )
        return self

    def membership_problem(self) -> str | None:
        """Why the collaborators list cannot serve a federation yet, or None.

        Checked when the aggregator starts, not when the plan loads: sites are certified
        (and added to the list) one at a time, so a plan that needs two may list one.
        """
        for group in self.assigner.settings.task_groups:
            strays = [c for c in group.collaborators or [] if c not in self.collaborators]
            if strays:
                return (
                    f"assigner task group {group.name!r} names collaborators {strays} "
                    "that are not in the plan's collaborators list"
                )
        needed = self.straggler_handling_policy.settings.min_reports
        if needed > len(self.collaborators):
            return (
                f"straggler_handling_policy.settings.min_reports is {needed}, but the plan lists "
                f"only {len(self.collaborators)} collaborators"
            )
        return None
