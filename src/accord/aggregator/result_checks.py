"""What a result must be before the engine takes it: its count, time, metrics and tensors."""

from __future__ import annotations

import math
import re

from accord.errors import RefusedError
from accord.messages import Measured, TaskResult
from accord.plan.round_settings import TaskSpec
from accord.tensors.state import ModelState, check_update

#: a sample count above this is refused as absurd.
MAX_SAMPLE_COUNT = 10**12
#: a metric value of a larger magnitude is refused as absurd (so aggregated metrics and the
#: best score stay finite; losses in squared units may honestly be large, hence not smaller).
MAX_METRIC_MAGNITUDE = 1e12
#: a task time of a larger magnitude (seconds; about 32 years) is refused as absurd, so a site's
#: task times summed stay finite (a round's slowest task time is saved in its phase checkpoint)
MAX_TASK_SECONDS = 1e9
#: a result with more metrics than this is refused.
MAX_METRICS = 64
#: what a metric name may be: it is logged and written to metrics.jsonl.
METRIC_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:+-]{0,127}")


def check_result(result: TaskResult, spec: TaskSpec, model: ModelState, delta_updates: bool | None) -> None:
    """Refuse (RefusedError, kind ``payload``) a result whose count, time, metrics or tensors are
    not what an honest site of this plan sends: for a training task, exactly the global model's
    tensor names, shapes and dtypes, finite (as measured on arrival, ``measured_against``, else read);
    ``delta_updates`` as the plan says (None: either)."""
    check_report(result)
    origin = result.collaborator
    if spec.returns_model:
        if not result.tensors:
            raise RefusedError(f"result from {origin} for {result.task!r} carries no model", kind="payload")
        if delta_updates is not None and result.is_delta != delta_updates:
            said = "deltas" if result.is_delta else "weights"
            raise RefusedError(f"result from {origin} sends {said}, but the plan says delta_updates={delta_updates}", kind="payload")
        measured = measured_against(result, model)
        check_update(model, result.tensors, origin, None if measured is None else measured.non_finite)
    elif result.tensors:
        raise RefusedError(
            f"result from {origin} for {result.task!r} carries tensors, but that task returns none",
            kind="payload",
        )


def measured_against(result: TaskResult, model: ModelState) -> Measured | None:
    """What was measured of ``result``'s tensors as they arrived, if against ``model`` itself (and
    the result's own ``is_delta``); else None (then its tensors are read)."""
    measured = result.measured
    if measured is None or measured.reference is not model or measured.is_delta != result.is_delta:
        return None
    return measured


def check_report(result: TaskResult) -> None:
    """Refuse (RefusedError, kind ``payload``) a result whose sample count, task time or metrics
    are not what an honest site sends (its tensors are checked by whoever folds them)."""
    origin = result.collaborator
    if not 0 < result.sample_count <= MAX_SAMPLE_COUNT:
        raise RefusedError(
            f"result from {origin} for {result.task!r} has sample count {result.sample_count}; "
            f"expected 1..{MAX_SAMPLE_COUNT}",
            kind="payload",
        )
    if not math.isfinite(result.task_seconds) or abs(result.task_seconds) > MAX_TASK_SECONDS:
        raise RefusedError(
            f"result from {origin}: task time is {result.task_seconds} s; expected a finite time of at most {MAX_TASK_SECONDS:g} s",
            kind="payload",
        )
    if len(result.metrics) > MAX_METRICS:
        raise RefusedError(f"result from {origin} carries {len(result.metrics)} metrics; at most {MAX_METRICS}", kind="payload")
    for metric, value in result.metrics.items():
        if not METRIC_NAME.fullmatch(metric):
            raise RefusedError(
                f"result from {origin}: metric name {metric[:64]!r} must match {METRIC_NAME.pattern} "
                "(letters, digits and _ . : + -, at most 128)",
                kind="payload",
            )
        if not math.isfinite(value) or abs(value) > MAX_METRIC_MAGNITUDE:
            raise RefusedError(
                f"result from {origin}: metric {metric!r} is {value}; expected a finite value of magnitude "
                f"at most {MAX_METRIC_MAGNITUDE:g}",
                kind="payload",
            )
