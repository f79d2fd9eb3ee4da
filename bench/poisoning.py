"""Poisoning table: one hostile site among 5 honest ones, with the update bounds on and off.

Each row runs the torch_digits federation (IID shards of 6 by default, 10 rounds) in this
process through the real AggregatorRuntime and RoundEngine, every site on the in-process
transport (the same codec checks and the same ``submit`` as behind the gRPC server). The
hostile site trains on its own shard like the others, then replaces what it sends:

- ``float32-max values``: every floating-point tensor filled with float32's largest value;
- ``100x-norm update``: the global model plus 100 x its change (a boosted, "model replacement" update);
- ``10^12 samples``: the initial (untrained) model, claiming 10^12 samples (it tries to set the global model);
- ``all three``: float32-max values claiming 10^12 samples;
- ``sign flip (in bounds)``: the global model minus its change, honest count: a lie within the bounds,
  which the bounds do not claim to stop (docs/failure-model.md);
- ``sign flip x100, 10^12``: minus 100 x its change, claiming 10^12 samples.

The accuracy is that of the final global model on the whole digits validation split,
evaluated here (not what any site reports). The honest run is the 5 honest sites alone on the
same shards. "bounds off" sets sample_count_multiple and norm_multiple to null (the float64
mean, the finite check and the clamped optimizer-state mean stay). A run that cannot finish
(an honest site's training turns NaN) is shown as failed, with why.

    PYTHONPATH=src .venv/bin/python bench/poisoning.py [--rounds 10] [--opt-treatment RESET|CONTINUE_GLOBAL]
        [--partition iid|dirichlet] [--count-multiple X] [--norm-multiple Y] [--attacks NAME ...]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from accord.aggregator.metrics import read_metrics
from accord.aggregator.runtime import AggregatorRuntime
from accord.collaborator.site import build_collaborator
from accord.data.builtin import DigitsDataLoader
from accord.experiment.local import prepare_workspace
from accord.messages import TaskResult
from accord.plan.loader import load_plan, update_plan_file
from accord.tensors.state import ModelState, load_state
from accord.transport.base import TensorSpecs
from accord.transport.inprocess import InProcessClient
from accord.workspace.initialize import build_runner

HONEST = [f"collaborator{i}" for i in range(1, 6)]
HOSTILE = "collaborator6"
FLOAT32_MAX = float(np.finfo(np.float32).max)
OFF = {"sample_count_multiple": None, "norm_multiple": None}

#: (what the site trained, the global model it got, the initial model) -> what it sends
Craft = Callable[[ModelState, ModelState, ModelState], ModelState]


def scaled_change(factor: float) -> Craft:
    """global + factor x (trained - global), on floating-point tensors."""
    return lambda trained, model, _: {
        k: (model[k] + factor * (v - model[k])).astype(v.dtype) if v.dtype.kind == "f" else v for k, v in trained.items()
    }


def float32_max(trained: ModelState, model: ModelState, _: ModelState) -> ModelState:
    return {k: np.full_like(v, FLOAT32_MAX) if v.dtype.kind == "f" else v for k, v in trained.items()}


def initial(trained: ModelState, model: ModelState, init: ModelState) -> ModelState:
    """The untrained model: the site tries to set the global model back to it every round."""
    return dict(init)


#: name -> (how the update is crafted, the sample count claimed or None for the honest one)
ATTACKS: dict[str, tuple[Craft, int | None]] = {
    "float32-max values": (float32_max, None),
    "100x-norm update": (scaled_change(100.0), None),
    "10^12 samples": (initial, 10**12),
    "all three": (float32_max, 10**12),
    "sign flip (in bounds)": (scaled_change(-1.0), None),
    "sign flip x100, 10^12": (scaled_change(-100.0), 10**12),
}


def run(rounds: int, attack: str | None, bounds: dict | None, partition: str = "iid", treatment: str = "RESET") -> tuple[float | None, str]:
    """Final accuracy of one federation (None if it did not finish) and why not, or how often the bounds bit honest sites."""
    names = HONEST + ([HOSTILE] if attack else [])
    overrides = {
        "data_loader.settings.collaborator_count": 6,
        "data_loader.settings.partition": partition,
        "straggler_handling_policy.settings.round_deadline_seconds": 30.0,
        "collaborator.settings.opt_treatment": treatment,
        **({"aggregator.settings.update_bounds": bounds} if bounds is not None else {}),
    }
    plan = prepare_workspace(Path(tempfile.mkdtemp(prefix="accord-poison-")) / "ws", 5, rounds, overrides=overrides)
    if attack:
        update_plan_file(plan.path, {"collaborators": names})
        (plan.workspace / "plan" / "data.yaml").write_text("".join(f"{n}: {i}\n" for i, n in enumerate(names, 1)))
        plan = load_plan(plan.path, workspace=plan.workspace)
    runtime = AggregatorRuntime(plan)
    init = load_state(plan.resolve_path("save/init.safetensors"))
    errors: dict[str, BaseException] = {}

    def work(name: str) -> None:
        client = InProcessClient(runtime, name, plan.hash, 5.0)
        if name == HOSTILE:
            client = HostileClient(runtime, name, plan.hash, 5.0, *ATTACKS[attack], init)
        try:
            build_collaborator(plan, name, client).run()
        except BaseException as exc:  # reported in the table
            errors[name] = exc

    threads = [threading.Thread(target=work, args=(n,), daemon=True) for n in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    runtime.close()
    if HOSTILE in errors:  # an attacker that crashed measured nothing
        return None, f"the hostile site failed: {errors[HOSTILE]!r}"[:120]
    honest_errors = {n: e for n, e in errors.items() if n != HOSTILE}
    if not runtime.finished or honest_errors:
        why = next((f"{n}: {e}" for n, e in honest_errors.items()), "did not finish")
        return None, why[:120]
    runner = build_runner(plan)
    runner.set_weights(load_state(plan.resolve_path("save/last.safetensors")), with_optimizer=True)
    whole = DigitsDataLoader(data_path=1, collaborator_count=1, seed=0)
    bit = [r for r in read_metrics(plan.resolve_path("logs/metrics.jsonl")) if r.task == "aggregator/bounds" and r.origin in HONEST]
    return float(runner.validate(whole).metrics["accuracy"]), f"the bounds bit honest sites {len(bit)} times"


class HostileClient(InProcessClient):
    """The in-process transport, but the training result is crafted (``craft``, ``count``) before it is sent."""

    def __init__(self, runtime: AggregatorRuntime, name: str, plan_hash: str, poll: float, craft: Craft, count: int | None, init: ModelState) -> None:
        super().__init__(runtime, name, plan_hash, poll)
        self.craft, self.count, self.init, self.model = craft, count, init, {}

    def get_model(self, round_number: int, expected: TensorSpecs | None = None) -> ModelState:
        self.model = super().get_model(round_number, expected)
        return self.model

    def send_result(self, result: TaskResult) -> None:
        if result.tensors:
            result.tensors = self.craft(result.tensors, self.model, self.init)
            result.sample_count = self.count or result.sample_count
        super().send_result(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--attacks", nargs="+", default=list(ATTACKS), choices=list(ATTACKS))
    parser.add_argument("--partition", default="iid", choices=["iid", "dirichlet"], help="how the digits are sharded")
    parser.add_argument("--opt-treatment", default="RESET", choices=["RESET", "CONTINUE_GLOBAL"], help="CONTINUE_GLOBAL averages the optimizer state too")
    parser.add_argument("--count-multiple", type=float, help="sample_count_multiple of the bounded runs (default: the plan's)")
    parser.add_argument("--norm-multiple", type=float, help="norm_multiple of the bounded runs (default: the plan's)")
    args = parser.parse_args()
    chosen = {"sample_count_multiple": args.count_multiple, "norm_multiple": args.norm_multiple}
    bounds = {k: v for k, v in chosen.items() if v is not None} or None
    logging.getLogger("accord").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=RuntimeWarning)  # the attacks' overflows, the NaN they cause

    started = time.perf_counter()
    honest, bit = run(args.rounds, None, bounds, args.partition, args.opt_treatment)
    honest_off, _ = run(args.rounds, None, OFF, args.partition, args.opt_treatment)
    assert honest is not None and honest_off is not None
    print(f"honest run (5 sites): {honest:.4f} with the bounds ({bit}), {honest_off:.4f} without")
    print(f"{'attack':<24} {'final accuracy':>15} {'honest run':>11} {'difference':>11}   bounds off")
    for attack in args.attacks:
        bounded, why = run(args.rounds, attack, bounds, args.partition, args.opt_treatment)
        off, why_off = run(args.rounds, attack, OFF, args.partition, args.opt_treatment)
        shown = f"{bounded:15.4f} {honest:11.4f} {100 * (bounded - honest):+10.2f}pt" if bounded is not None else f"{'failed':>15} {honest:11.4f} ({why})"
        print(f"{attack:<24} {shown}   {f'{off:.4f}' if off is not None else 'failed: ' + why_off[:70]}")
    print(f"({args.rounds} rounds, 5 honest sites, {args.partition} shards of digits, {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
