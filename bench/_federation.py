"""What the federation benches share: a digits workspace, one federation run, the final accuracy.

A federation here is the torch_digits workspace run in this process through the real
AggregatorRuntime and RoundEngine, every site on the in-process transport (the same codec
checks and the same ``submit`` as behind the gRPC server), each site in a thread. A bench
may give some sites a client of its own (:class:`HostileClient` crafts what a site sends).
The accuracy reported is that of the final global model (save/last.safetensors) on the whole
digits validation split, evaluated here, not what any site reports.
A bench script imports this module as ``from _federation import ...`` (its own folder is on
``sys.path``).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accord.aggregator.runtime import AggregatorRuntime
from accord.collaborator.site import build_collaborator
from accord.data.builtin import DigitsDataLoader
from accord.errors import AccordError
from accord.experiment.local import prepare_workspace
from accord.messages import TaskResult
from accord.plan.loader import Plan
from accord.runners.from_plan import build_runner
from accord.tensors.state import ModelState, load_state
from accord.transport.base import AggregatorClient, TensorSpecs
from accord.transport.inprocess import InProcessClient

#: the plan's update bounds switched off (the float64 mean and the finite check stay)
BOUNDS_OFF = {"sample_count_multiple": None, "norm_multiple": None}
#: seconds an in-process site waits for its next task before asking again
POLL = 5.0
#: seconds a federation may run
TIMEOUT = 1800.0


def digits_plan(sites: int, rounds: int, overrides: Mapping[str, Any] | None = None, prefix: str = "accord-bench-") -> Plan:
    """A fresh torch_digits workspace of ``sites`` sites (collaborator1..N, shard i for site i)
    and ``rounds`` rounds, with the plan ``overrides`` (dotted keys) applied; removed when the
    bench exits."""
    settings = {"straggler_handling_policy.settings.round_deadline_seconds": 60.0, **(overrides or {})}
    root = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return prepare_workspace(root / "ws", sites, rounds, overrides=settings)


#: (the runtime, the site's name, the plan) -> the client the site talks through
ClientFactory = Callable[[AggregatorRuntime, str, Plan], AggregatorClient]


def honest_client(runtime: AggregatorRuntime, name: str, plan: Plan) -> AggregatorClient:
    """The plain in-process transport."""
    return InProcessClient(runtime, name, plan.hash, POLL)


@dataclass(frozen=True)
class Outcome:
    """How one federation ended: the final model's accuracy (None if it did not finish), why
    not, and its wall time."""

    accuracy: float | None
    why: str
    seconds: float


def run_federation(plan: Plan, client: ClientFactory = honest_client, hostile: frozenset[str] = frozenset()) -> Outcome:
    """Run every site of ``plan`` to the end, then evaluate the final model.

    A ``hostile`` site that fails spoils the measurement (its attack was not made); an honest
    site that fails, or a federation that does not finish, is an outcome with why.
    """
    started = time.perf_counter()
    runtime = AggregatorRuntime(plan)
    errors: dict[str, BaseException] = {}

    def work(name: str) -> None:
        try:
            build_collaborator(plan, name, client(runtime, name, plan)).run()
        except BaseException as exc:  # reported in the table
            errors[name] = exc

    threads = [threading.Thread(target=work, args=(name,), daemon=True) for name in plan.model.collaborators]
    for thread in threads:
        thread.start()
    stopped = ""
    try:
        runtime.wait_until_done(timeout=TIMEOUT)
    except AccordError as exc:  # the aggregator stopped (a strategy failed at a close, say)
        stopped = exc.message
    runtime.close()
    end = time.monotonic() + POLL + 10.0
    for thread in threads:  # a site of a stopped aggregator may wait on (a daemon thread: left behind)
        thread.join(max(0.0, end - time.monotonic()))
    seconds = time.perf_counter() - started
    failed_hostile = sorted(set(errors) & hostile)
    if failed_hostile and not stopped:
        return Outcome(None, f"the hostile site failed: {errors[failed_hostile[0]]!r}"[:160], seconds)
    if stopped or errors or not runtime.finished:
        why = stopped or next((f"{name}: {exc}" for name, exc in errors.items()), "did not finish")
        return Outcome(None, why[:160], seconds)
    return Outcome(final_accuracy(plan), "", seconds)


def whole_validation(plan: Plan) -> DigitsDataLoader:
    """The whole digits validation split of the plan's split (every site's validation shard)."""
    settings = plan.model.data_loader.settings
    return DigitsDataLoader(data_path=1, collaborator_count=1, valid_fraction=settings["valid_fraction"], seed=settings["seed"])


def final_accuracy(plan: Plan) -> float:
    """Accuracy of the plan's last global model on :func:`whole_validation`."""
    runner = build_runner(plan)
    runner.set_weights(load_state(plan.resolve_path(plan.model.aggregator.settings.last_state_path)), with_optimizer=False)
    return float(runner.validate(whole_validation(plan)).metrics["accuracy"])


#: (what the site trained, the global model it got, the round) -> what it sends
Craft = Callable[[ModelState, ModelState, int], ModelState]


class HostileClient(InProcessClient):
    """The in-process transport, but a training result is crafted (``craft``; its sample count
    replaced by ``count`` unless None) before it is sent."""

    def __init__(self, runtime: AggregatorRuntime, name: str, plan: Plan, craft: Craft, count: int | None = None) -> None:
        super().__init__(runtime, name, plan.hash, POLL)
        self.craft, self.count = craft, count
        self.model: ModelState = {}
        self.round = -1

    def get_model(self, round_number: int, expected: TensorSpecs | None = None) -> ModelState:
        self.model, self.round = super().get_model(round_number, expected), round_number
        return self.model

    def send_result(self, result: TaskResult) -> None:
        if result.tensors:
            result.tensors = self.craft(result.tensors, self.model, self.round)
            result.sample_count = self.count or result.sample_count
        super().send_result(result)


def scaled_change(factor: float) -> Callable[[ModelState, ModelState], ModelState]:
    """(trained, global) -> global + factor x (trained - global), on floating-point tensors."""
    return lambda trained, model: {
        k: (model[k] + factor * (v - model[k])).astype(v.dtype) if v.dtype.kind == "f" else v for k, v in trained.items()
    }
