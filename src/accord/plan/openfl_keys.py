"""The table of OpenFL 1.6-1.9 plan keys and templates, each mapped to Accord's, warned about
("has no meaning in Accord") or refused with the reason and the fix (docs/migrating-from-openfl.md).

Nothing here imports anything a plan names: an ``openfl.*`` template is looked up by its class
name in these tables and replaced by one of Accord's own names (or dropped, or refused); the
translation itself is plan/openfl_plan.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from accord.errors import PlanError
from accord.plan.templates import WORKSPACE_TEMPLATE


@dataclass(frozen=True)
class Outcome:
    """What becomes of one OpenFL key: ``target`` the Accord dotted key it sets (None: nothing),
    ``value`` what it sets there, ``warned`` whether the user is warned (else it was mapped)."""

    target: str | None
    value: Any
    detail: str
    warned: bool = False


#: a rule turns the key's (OpenFL) value into an Outcome, or raises PlanError
Rule = Callable[[str, Any], Outcome]


def rename(target: str, convert: Callable[[Any], Any] = lambda v: v) -> Rule:
    """The key is Accord's ``target`` (its value converted)."""

    def rule(key: str, value: Any) -> Outcome:
        new = convert(value)
        shown = "" if new == value else f" = {new!r}"
        return Outcome(target, new, f"-> {target}{shown}")

    return rule


def switch(target: str) -> Rule:
    """The key is Accord's on/off ``target``; only true or false is taken (``bool('false')`` is True)."""

    def rule(key: str, value: Any) -> Outcome:
        if not isinstance(value, bool):
            name = key.rsplit(".", 1)[1]
            raise PlanError(f"OpenFL key {key} is {value!r}, not a switch", f"write {name}: true (or false)")
        return rename(target)(key, value)

    return rule


def no_meaning(why: str) -> Rule:
    """Accepted with one warning: Accord has nothing this key would change."""

    def rule(key: str, value: Any) -> Outcome:
        return Outcome(None, None, f"has no meaning in Accord: {why}", warned=True)

    return rule


def refused(why: str, fix: str) -> Rule:
    """Accord cannot honour what this key asks for."""

    def rule(key: str, value: Any) -> Outcome:
        raise PlanError(f"OpenFL key {key}: {why}", fix)

    return rule


def when(accepted: Callable[[Any], bool], then: Rule, otherwise: Rule) -> Rule:
    """``then`` for the values ``accepted`` allows, else ``otherwise``."""

    def rule(key: str, value: Any) -> Outcome:
        return (then if accepted(value) else otherwise)(key, value)

    return rule


def always(detail: str) -> Rule:
    """Mapped to what Accord always does: nothing to set."""

    def rule(key: str, value: Any) -> Outcome:
        return Outcome(None, None, detail)

    return rule


def _safetensors(path: Any) -> Any:
    if isinstance(path, str) and path.endswith(".pbuf"):
        return path[: -len(".pbuf")] + ".safetensors"
    return path


def _callback_template(key: str, value: Any) -> Any:
    """OpenFL's ``log_metric_callback``: ``src.module.function`` or ``{template: ..., settings: {}}``."""
    if isinstance(value, dict):
        if value.get("settings"):
            raise PlanError(
                f"OpenFL key {key}.settings: Accord calls the function with each metric and nothing else",
                f"remove {key}.settings and read them in the function",
            )
        value = value.get("template")
    if not isinstance(value, str) or not WORKSPACE_TEMPLATE.fullmatch(value):
        raise PlanError(
            f"OpenFL key {key} is {value!r}: Accord calls only a function of the workspace's src package",
            f"write {key}: src.module.function",
        )
    return value


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() in ("true", "1", "yes")


def _auto(value: Any) -> bool:
    return value == "auto"


_STATE = "Accord keeps each round's tensors in memory and its round state on disk (aggregator.settings.state_dir)"
_MEMORY = "Accord does not log its memory use"
_NO_CALLBACKS = (
    "Accord's aggregator runs no workspace objects around its events; it calls one function with each metric"
)
_SINKS_FIX = "remove the key; set aggregator.settings.metrics.callback: {template: src.module.function} (or another sink)"
_MTLS = "Accord always uses mutual TLS (every site and the aggregator hold certificates of the federation's CA)"
_MTLS_FIX = "remove the key, and certify each site (fx collaborator generate-cert-request, then certify)"

#: every OpenFL plan key Accord knows, by its dotted place in the plan
KEYS: dict[str, Rule] = {
    # aggregator
    "aggregator.settings.rounds_to_train": rename("aggregator.settings.rounds_to_train"),
    "aggregator.settings.init_state_path": rename("aggregator.settings.init_state_path", _safetensors),
    "aggregator.settings.best_state_path": rename("aggregator.settings.best_state_path", _safetensors),
    "aggregator.settings.last_state_path": rename("aggregator.settings.last_state_path", _safetensors),
    "aggregator.settings.db_store_rounds": no_meaning(_STATE),
    "aggregator.settings.persist_checkpoint": no_meaning("Accord always saves its round state (aggregator.settings.state_dir)"),
    "aggregator.settings.persistent_db_path": no_meaning("Accord's round state lives in aggregator.settings.state_dir"),
    "aggregator.settings.write_logs": when(
        _truthy,
        lambda key, value: Outcome(
            "aggregator.settings.metrics.tensorboard",
            {},
            "-> aggregator.settings.metrics.tensorboard: {} (needs accord[tensorboard])",
        ),
        always("-> no TensorBoard sink (Accord's default)"),
    ),
    "aggregator.settings.log_memory_usage": no_meaning(_MEMORY),
    "aggregator.settings.save_native_model": no_meaning(
        "get the framework's own model file with `fx model export --last --format torch` (or keras)"
    ),
    "aggregator.settings.use_delta_updates": no_meaning("each site chooses with collaborator.settings.delta_updates"),
    "aggregator.settings.single_col_cert_common_name": no_meaning("each site's certificate names that site"),
    "aggregator.settings.secure_aggregation": switch("aggregator.settings.secure_aggregation.enabled"),
    "aggregator.settings.log_metric_callback": lambda key, value: Outcome(
        "aggregator.settings.metrics.callback",
        {"template": _callback_template(key, value)},
        "-> aggregator.settings.metrics.callback",
    ),
    "aggregator.settings.callbacks": refused(_NO_CALLBACKS, _SINKS_FIX),
    "aggregator.settings.initial_tensor_dict": refused(
        "Accord's initial model comes from the task runner (saved to aggregator.settings.init_state_path by fx plan initialize)",
        "remove the key and run fx plan initialize",
    ),
    # collaborator
    "collaborator.settings.opt_treatment": rename("collaborator.settings.opt_treatment"),
    "collaborator.settings.use_delta_updates": switch("collaborator.settings.delta_updates"),
    "collaborator.settings.db_store_rounds": no_meaning("a site keeps only the round's model in memory"),
    "collaborator.settings.log_memory_usage": no_meaning(_MEMORY),
    "collaborator.settings.write_logs": no_meaning("a site's metrics go to the aggregator (logs/metrics.jsonl and its sinks)"),
    "collaborator.settings.device_assignment_policy": no_meaning("the task runner chooses its device (task_runner.settings)"),
    "collaborator.settings.secure_aggregation": no_meaning(
        "the aggregator's plan decides (aggregator.settings.secure_aggregation)"
    ),
    "collaborator.settings.callbacks": refused(
        "a site runs no workspace callbacks around its tasks",
        "remove the key; put the work in the task runner's train_/validate_",
    ),
    "collaborator.settings.interop_mode": when(
        lambda v: not _truthy(v),
        no_meaning("Accord has no Flower interoperability mode"),
        refused("Accord has no Flower interoperability mode", "remove the key and run the workspace's own task runner"),
    ),
    # network
    "network.settings.agg_addr": when(
        _auto,
        no_meaning(
            "OpenFL writes this machine's FQDN at plan initialize; Accord uses localhost until you "
            "set network.settings.agg_addr to the aggregator's host name"
        ),
        rename("network.settings.agg_addr"),
    ),
    "network.settings.agg_port": when(
        _auto,
        no_meaning("OpenFL derives a port from the plan hash; Accord uses 50051 until you set network.settings.agg_port"),
        rename("network.settings.agg_port"),
    ),
    "network.settings.hash_salt": no_meaning("Accord derives no port from the plan hash"),
    "network.settings.use_tls": when(_truthy, always(f"-> {_MTLS}"), refused(_MTLS, _MTLS_FIX)),
    "network.settings.tls": when(_truthy, always(f"-> {_MTLS}"), refused(_MTLS, _MTLS_FIX)),
    "network.settings.require_client_auth": when(_truthy, always(f"-> {_MTLS}"), refused(_MTLS, _MTLS_FIX)),
    "network.settings.disable_tls": when(lambda v: not _truthy(v), always(f"-> {_MTLS}"), refused(_MTLS, _MTLS_FIX)),
    "network.settings.disable_client_auth": when(lambda v: not _truthy(v), always(f"-> {_MTLS}"), refused(_MTLS, _MTLS_FIX)),
    "network.settings.client_reconnect_interval": no_meaning(
        "a site retries with backoff until network.settings.reconnect_timeout_seconds"
    ),
    "network.settings.cert_folder": rename("network.settings.cert_dir"),
    "network.settings.enable_atomic_connections": no_meaning("Accord's calls are independent gRPC calls on one channel"),
    "network.settings.transport_protocol": when(
        lambda v: v == "grpc",
        always("-> gRPC (Accord's only transport)"),
        refused("Accord speaks gRPC only", "set network.settings.transport_protocol: grpc or remove it"),
    ),
    # straggler policies' settings (their template chooses the policy)
    "straggler_handling_policy.settings.straggler_cutoff_time": when(
        lambda v: isinstance(v, (int, float)) and math.isfinite(v),
        rename("straggler_handling_policy.settings.cutoff_seconds", float),
        always("-> no cut-off (infinite)"),
    ),
    "straggler_handling_policy.settings.minimum_reporting": rename("straggler_handling_policy.settings.min_reports"),
    "straggler_handling_policy.settings.minimum_reports_required": rename("straggler_handling_policy.settings.min_reports"),
    "straggler_handling_policy.settings.percent_collaborators_needed": rename(
        "straggler_handling_policy.settings.percentage", float
    ),
    "straggler_handling_policy.settings.round_start_time": no_meaning("Accord starts each round's clock itself"),
}


@dataclass(frozen=True)
class Template:
    """What an OpenFL template becomes: ``accord`` the template Accord's section takes (None:
    the section is built from none), ``extra`` settings it implies; or ``why``/``fix`` to refuse."""

    accord: str | None = None
    extra: dict[str, Any] | None = None
    why: str = ""
    fix: str = ""


_ASSIGNERS = "accord.aggregator.assigner."
_CODEC_FIX = (
    "remove the section, or set compression_pipeline.settings.upload to Accord's stages "
    "(topk, fp16, bf16, q8, q4, zstd: docs/plan.md)"
)
_RUNNER_FIX = (
    "name the workspace's own class (src.taskrunner.Name, a subclass of openfl.federated.PyTorchTaskRunner or KerasTaskRunner)"
)

#: OpenFL's templates by section and class name (any ``openfl.`` module path to that name)
TEMPLATES: dict[str, dict[str, Template]] = {
    "aggregator": {"Aggregator": Template()},
    "collaborator": {"Collaborator": Template()},
    "network": {"Network": Template()},
    "assigner": {
        "RandomGroupedAssigner": Template(_ASSIGNERS + "RandomGroupedAssigner"),
        "StaticGroupedAssigner": Template(_ASSIGNERS + "StaticGroupedAssigner"),
        "Assigner": Template(
            why="is OpenFL's base class, which assigns nothing by itself",
            fix="use openfl.component.RandomGroupedAssigner or StaticGroupedAssigner",
        ),
    },
    "straggler_handling_policy": {
        "WaitForAllPolicy": Template(extra={"policy": "wait_for_all"}),
        "CutoffTimePolicy": Template(extra={"policy": "cutoff_time"}),
        "CutoffTimeBasedStragglerHandling": Template(extra={"policy": "cutoff_time"}),
        "PercentagePolicy": Template(extra={"policy": "percentage"}),
        "PercentageBasedStragglerHandling": Template(extra={"policy": "percentage"}),
    },
    "compression_pipeline": {
        "NoCompressionPipeline": Template(),
        **{
            name: Template(why="is OpenFL's own codec, which Accord does not implement", fix=_CODEC_FIX)
            for name in ("KCPipeline", "SKCPipeline", "STCPipeline", "RandomShiftPipeline", "EdenPipeline", "GenericPipeline")
        },
    },
    "data_loader": {
        "DataLoader": Template(
            why="is OpenFL's base class, which loads nothing",
            fix="name the workspace's own loader (src.dataloader.Name) in data_loader.template",
        ),
    },
    "task_runner": {
        name: Template(why="is not a workspace's task runner", fix=_RUNNER_FIX)
        for name in ("CoreTaskRunner", "TaskRunner", "PyTorchTaskRunner", "KerasTaskRunner")
    },
}

_FEDCURV = "FedCurv needs each site's Fisher information sent beside its model, which Accord's task runners do not compute"

#: OpenFL's aggregation functions (a train task's ``aggregation_type``) -> Accord's strategies
AGGREGATION_FUNCTIONS: dict[str, Template] = {
    "WeightedAverage": Template("accord.strategies.FedAvg"),
    "Median": Template("accord.strategies.CoordinateMedian"),
    "GeometricMedian": Template("accord.strategies.GeometricMedian"),
    "AdagradAdaptiveAggregation": Template("accord.strategies.FedAdagrad"),
    "AdamAdaptiveAggregation": Template("accord.strategies.FedAdam"),
    "YogiAdaptiveAggregation": Template("accord.strategies.FedYogi"),
    "FedCurvWeightedAverage": Template(
        why=_FEDCURV, fix="use WeightedAverage, or set aggregator.settings.strategy.template: accord.strategies.FedProx"
    ),
    "FedBaggingXGBoost": Template(
        why="Accord's strategies average tensors; it does not bag XGBoost trees", fix="use a tensor model"
    ),
    "SecureWeightedAverage": Template(
        why="OpenFL's secure average is its own protocol",
        fix="remove aggregation_type and set aggregator.settings.secure_aggregation.enabled: true (Accord's SecAgg+)",
    ),
}

#: the adaptive aggregations' settings -> Accord's FedOpt settings (betas: a pair)
ADAPTIVE_SETTINGS: dict[str, str | tuple[str, str]] = {"learning_rate": "eta", "epsilon": "tau", "betas": ("beta1", "beta2")}

#: OpenFL's task functions -> Accord's
TASK_FUNCTIONS = {"train_task": "train", "train": "train", "validate_task": "validate", "validate": "validate"}


def openfl_class(template: Any) -> str | None:
    """The class name of an ``openfl.*`` template, or None for any other template."""
    if isinstance(template, str) and template.startswith("openfl.") and template.count(".") >= 1:
        return template.rsplit(".", 1)[1]
    return None
