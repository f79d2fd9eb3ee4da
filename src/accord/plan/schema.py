"""Pydantic schema of the FL plan: every section has ``defaults``, ``template`` and ``settings``."""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from accord.plan.code_settings import code_problem, named_code
from accord.plan.compression import CompressionSection
from accord.plan.templates import WORKSPACE_TEMPLATE, template_problem

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
STANDARD_TASKS = ("aggregated_model_validation", "train", "locally_tuned_model_validation")


class Strict(BaseModel):
    """Refuse unknown keys so a typo in the plan is an error, not a silent default."""

    model_config = ConfigDict(extra="forbid")


class UpdateBoundsSettings(Strict):
    """What one site's update can weigh: see docs/failure-model.md (null switches a bound off)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    sample_count_multiple: float | None = Field(1.1, ge=1)
    norm_multiple: float | None = Field(1.5, ge=1)
    max_update_norm: float | None = Field(None, gt=0)
    on_norm_exceeded: Literal["clip", "refuse"] = "clip"


class StrategySettings(Strict):
    """The aggregation algorithm: a Strategy class and its constructor's arguments (built and
    type-checked when the plan loads: plan/strategy.py). A wrapper (NormClipping) takes the
    strategy it wraps as its ``strategy`` setting, itself a ``{template, settings}`` mapping."""

    template: str = "accord.strategies.FedAvg"
    settings: dict[str, Any] = Field(default_factory=dict)

    @field_validator("template")
    @classmethod
    def _allowed(cls, value: str) -> str:
        why = template_problem("strategy", value)
        if why:
            raise ValueError(why)
        return value


class SamplingSettings(Strict):
    """Client sampling: a seeded random ``fraction`` or ``count`` of the sites each round."""

    fraction: float | None = Field(None, gt=0, le=1)
    count: int | None = Field(None, ge=1)
    seed: int = Field(0, ge=0)


class SecureAggregationSettings(Strict):
    """Secure aggregation (SecAgg+, docs/privacy.md "Running it"): the aggregator sees only the
    sum of the cohort's weighted updates. ``threshold``: the fewest sites each phase needs (None:
    ceil(2n/3) of a cohort of n); ``neighbours``: each site's neighbourhood (None: SecAgg+'s
    derivation from n; n - 1 or more is plain SecAgg); each update value is clipped to
    [-clip, clip] and encoded with ``fraction_bits`` of precision; a site's sample count is at
    most ``max_weight``."""

    enabled: bool = False
    threshold: int | None = Field(None, ge=2)
    neighbours: int | None = Field(None, ge=2)
    clip: float = Field(1.0, gt=0)
    fraction_bits: int = Field(24, ge=0, le=52)
    max_weight: int = Field(1_000_000, ge=1)


class TensorBoardSettings(Strict):
    """TensorBoard event files (the extra accord[tensorboard]) in ``log_dir``, inside the workspace."""

    log_dir: str = "logs/tensorboard"


class MlflowSettings(Strict):
    """An MLflow run (the extra accord[mlflow]) per aggregator start in ``experiment``:
    ``tracking_uri`` an ``http(s)://`` tracking server, or a folder inside the workspace (MLflow's
    file store)."""

    tracking_uri: str = Field("logs/mlruns", min_length=1)
    experiment: str = Field("accord", min_length=1, max_length=256)
    run_name: str | None = Field(None, min_length=1, max_length=256)

    @field_validator("tracking_uri")
    @classmethod
    def _server_or_folder(cls, value: str) -> str:
        if ":" in value.split("/", 1)[0] and not is_tracking_server(value):
            raise ValueError("expected an http:// or https:// tracking server, or a folder inside the workspace")
        return value


def is_tracking_server(uri: str) -> bool:
    """Whether an MLflow ``tracking_uri`` names a server (else it is a folder of the workspace)."""
    return uri.startswith(("http://", "https://"))


class PrometheusSettings(Strict):
    """A Prometheus ``/metrics`` endpoint on the aggregator (the extra accord[prometheus]); no
    authentication: keep it on a loopback or otherwise private address."""

    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(9464, ge=0, le=65535)


class CallbackSettings(Strict):
    """A function of the workspace (OpenFL's ``log_metric_callback``), ``src.module.function``,
    called on a thread of its own with each closed round's metrics, one call a record, as
    ``function(origin, task, metric, value, round)``."""

    template: str

    @field_validator("template")
    @classmethod
    def _workspace_function(cls, value: str) -> str:
        if not WORKSPACE_TEMPLATE.fullmatch(value):
            raise ValueError(f"{value!r} is not allowed: name a function of the workspace's src package (src.module.function)")
        return value


class MetricsSinksSettings(Strict):
    """Where the aggregator reports each round besides metrics.jsonl: each sink off (null) by default."""

    tensorboard: TensorBoardSettings | None = None
    mlflow: MlflowSettings | None = None
    prometheus: PrometheusSettings | None = None
    callback: CallbackSettings | None = None


class AggregatorSettings(Strict):
    rounds_to_train: int = Field(10, ge=1)
    init_state_path: str = "save/init.safetensors"
    best_state_path: str = "save/best.safetensors"
    last_state_path: str = "save/last.safetensors"
    best_metric: str = "aggregated_model_validation/accuracy"
    best_direction: Literal["maximize", "minimize"] = "maximize"
    metrics_path: str = "logs/metrics.jsonl"
    state_dir: str = "save/state"
    max_concurrent_uploads: int = Field(2, ge=1)
    #: a model file larger than this (MB) is aggregated from disk (aggregator/placement.py); 0: always
    in_memory_limit_mb: int = Field(1024, ge=0)
    final_validation: bool = True
    update_bounds: UpdateBoundsSettings = Field(default_factory=UpdateBoundsSettings)
    strategy: StrategySettings = Field(default_factory=StrategySettings)
    sampling: SamplingSettings = Field(default_factory=SamplingSettings)
    secure_aggregation: SecureAggregationSettings = Field(default_factory=SecureAggregationSettings)
    metrics: MetricsSinksSettings = Field(default_factory=MetricsSinksSettings)

    @field_validator("best_metric")
    @classmethod
    def _task_slash_metric(cls, value: str) -> str:
        if value.count("/") != 1 or not all(value.split("/")):
            raise ValueError("expected 'task/metric', e.g. aggregated_model_validation/accuracy")
        return value


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
