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
import time
import warnings
from collections.abc import Callable

import numpy as np
from _federation import BOUNDS_OFF, HostileClient, digits_plan, honest_client, run_federation, scaled_change

from accord.aggregator.runtime import AggregatorRuntime
from accord.metric_records import read_metrics
from accord.plan.loader import Plan
from accord.tensors.state import ModelState, load_state
from accord.transport.base import AggregatorClient

HONEST = [f"collaborator{i}" for i in range(1, 6)]
HOSTILE = "collaborator6"
FLOAT32_MAX = float(np.finfo(np.float32).max)

#: (what the site trained, the global model it got, the initial model) -> what it sends
Craft = Callable[[ModelState, ModelState, ModelState], ModelState]


def float32_max(trained: ModelState, model: ModelState, _: ModelState) -> ModelState:
    return {k: np.full_like(v, FLOAT32_MAX) if v.dtype.kind == "f" else v for k, v in trained.items()}


def initial(trained: ModelState, model: ModelState, init: ModelState) -> ModelState:
    """The untrained model: the site tries to set the global model back to it every round."""
    return dict(init)


def boosted(factor: float) -> Craft:
    """global + factor x (trained - global)."""
    scaled = scaled_change(factor)
    return lambda trained, model, _: scaled(trained, model)


#: name -> (how the update is crafted, the sample count claimed or None for the honest one)
ATTACKS: dict[str, tuple[Craft, int | None]] = {
    "float32-max values": (float32_max, None),
    "100x-norm update": (boosted(100.0), None),
    "10^12 samples": (initial, 10**12),
    "all three": (float32_max, 10**12),
    "sign flip (in bounds)": (boosted(-1.0), None),
    "sign flip x100, 10^12": (boosted(-100.0), 10**12),
}


def run(rounds: int, attack: str | None, bounds: dict | None, partition: str = "iid", treatment: str = "RESET") -> tuple[float | None, str]:
    """Final accuracy of one federation (None if it did not finish) and why not, or how often the bounds bit honest sites."""
    overrides = {
        "data_loader.settings.collaborator_count": 6,
        "straggler_handling_policy.settings.round_deadline_seconds": 30.0,
        "data_loader.settings.partition": partition,
        "collaborator.settings.opt_treatment": treatment,
        **({"aggregator.settings.update_bounds": bounds} if bounds is not None else {}),
    }
    plan = digits_plan(6 if attack else 5, rounds, overrides, prefix="accord-poison-")
    outcome = run_federation(plan, hostile_client(plan, attack), frozenset({HOSTILE}))
    if outcome.accuracy is None:
        return None, outcome.why
    bit = [r for r in read_metrics(plan.resolve_path("logs/metrics.jsonl")) if r.task == "aggregator/bounds" and r.origin in HONEST]
    return outcome.accuracy, f"the bounds bit honest sites {len(bit)} times"


def hostile_client(plan: Plan, attack: str | None) -> Callable[[AggregatorRuntime, str, Plan], AggregatorClient]:
    """Site 6 sends what ``attack`` crafts; the others are honest."""
    if attack is None:
        return honest_client
    craft, count = ATTACKS[attack]
    init = load_state(plan.resolve_path("save/init.safetensors"))

    def client(runtime: AggregatorRuntime, name: str, plan: Plan) -> AggregatorClient:
        if name != HOSTILE:
            return honest_client(runtime, name, plan)
        return HostileClient(runtime, name, plan, lambda trained, model, _round: craft(trained, model, init), count)

    return client


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
    honest_off, _ = run(args.rounds, None, BOUNDS_OFF, args.partition, args.opt_treatment)
    assert honest is not None and honest_off is not None
    print(f"honest run (5 sites): {honest:.4f} with the bounds ({bit}), {honest_off:.4f} without")
    print(f"{'attack':<24} {'final accuracy':>15} {'honest run':>11} {'difference':>11}   bounds off")
    for attack in args.attacks:
        bounded, why = run(args.rounds, attack, bounds, args.partition, args.opt_treatment)
        off, why_off = run(args.rounds, attack, BOUNDS_OFF, args.partition, args.opt_treatment)
        shown = f"{bounded:15.4f} {honest:11.4f} {100 * (bounded - honest):+10.2f}pt" if bounded is not None else f"{'failed':>15} {honest:11.4f} ({why})"
        print(f"{attack:<24} {shown}   {f'{off:.4f}' if off is not None else 'failed: ' + why_off[:70]}")
    print(f"({args.rounds} rounds, 5 honest sites, {args.partition} shards of digits, {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
