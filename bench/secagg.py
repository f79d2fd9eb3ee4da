"""Secure aggregation (SecAgg+ as the engine's phases) against plain FedAvg, same model, same run.

    .venv/bin/python bench/secagg.py [--sites 10,50,100] [--dropouts 0,0.3] [--params 100000] [--repeats 3]

Lightweight in-process sites over the real RoundEngine: the aggregator side is the engine with
``SecureAggregation(FedAvg())`` (strategies/secure.py: accord.secagg's ServerSession) or plain
``FedAvg()``; each site answers its phases with the real site code (collaborator/secure_site.py:
accord.secagg's SiteSession, X25519, AES-GCM, AES-CTR masks, Shamir shares) on payloads that
went through the engine. No network and no training: each site's update is a fixed random
change of a ~``--params`` float32 model (a 1000 x (params/1000) layer and its bias), made
before the timing, the same for both. A ``--dropouts`` share of the cohort drops in the
worst phase for SecAgg+ (after sharing, before masking: its pairwise masks are rebuilt from
shares), and the same share never replies in plain FedAvg; the phases close under
cutoff_time (an injected clock), the round with FedAvg over the survivors.

Figures, per N and dropout share (min and median over the repeats, interleaved):
- aggregator CPU (s): process CPU spent in the engine's calls for the round (assignments,
  submits, the close and unmasking), and its ratio secure/plain;
- round time (s): the aggregator's CPU plus, per phase, the slowest site's CPU (sites run in
  parallel; network time and training, the same in both, excluded), and its ratio secure/plain;
  the issue's goal is <= 2x at N = 100 with 30% dropouts;
- bytes per site: what one surviving site sends and receives (the model download, phase
  payloads, the update or masked update), and its ratio secure/plain (Bonawitz et al. report
  1.73x at 2^10 users and 2^20 values);
- max |secure - plain|: the largest difference between the two rounds' models (the
  fixed-point error: it must stay near 2^-24).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from accord.aggregation.bounds import UNBOUNDED
from accord.aggregator.assigner import RandomGroupedAssigner
from accord.aggregator.engine import RoundEngine
from accord.aggregator.stragglers import StragglerPolicy
from accord.collaborator.secure_site import SecureSite
from accord.messages import Action, TaskResult
from accord.plan.schema import SecureAggregationSettings, TaskSpec
from accord.strategies.fedavg import FedAvg
from accord.strategies.secure import SecureAggregation
from accord.strategies.secure_phases import MASK, REPLY_PHASES, SHARE

TASKS = {"train": TaskSpec(function="train")}
CUTOFF = 1.0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Meter:
    """CPU seconds of the aggregator and of each site in each phase."""

    def __init__(self) -> None:
        self.aggregator = 0.0
        self.sites: dict[str, dict[str, float]] = {}
        self.bytes: dict[str, int] = {}
        self.model: dict[str, np.ndarray] = {}

    def agg(self, call: Callable[[], object]) -> object:
        started = time.process_time()
        try:
            return call()
        finally:
            self.aggregator += time.process_time() - started

    def site(self, phase: str, name: str, call: Callable[[], object]) -> object:
        started = time.process_time()
        try:
            return call()
        finally:
            spent = self.sites.setdefault(phase, {})
            spent[name] = spent.get(name, 0.0) + time.process_time() - started

    def count(self, name: str, nbytes: int) -> None:
        self.bytes[name] = self.bytes.get(name, 0) + nbytes

    def round_seconds(self) -> float:
        return self.aggregator + sum(max(spent.values(), default=0.0) for spent in self.sites.values())


def model_of(params: int) -> dict[str, np.ndarray]:
    width = max(1, params // 1000)
    return {"w": np.zeros((1000, width), np.float32), "b": np.zeros(width, np.float32)}


def nbytes(state) -> int:
    return sum(np.asarray(t).nbytes for t in state.values())


def one_round(sites: int, dropout: float, params: int, secure: bool, seed: int) -> Meter:
    names = [f"site{i:03d}" for i in range(sites)]
    rng = np.random.default_rng(seed)
    model = model_of(params)
    updates = {n: {k: (v + rng.normal(0, 0.01, v.shape)).astype(np.float32) for k, v in model.items()} for n in names}
    dropped = set(names[: round(dropout * sites)])
    settings = SecureAggregationSettings(enabled=True, clip=1.0)
    clock = Clock()
    engine = RoundEngine(
        collaborators=names,
        tasks=TASKS,
        assigner=RandomGroupedAssigner(names, [{"name": "all", "percentage": 1.0, "tasks": ["train"]}]),
        rounds_to_train=1,
        model=model,
        clock=clock,
        strategy=SecureAggregation(FedAvg(), settings) if secure else FedAvg(),
        bounds=UNBOUNDED,
        final_validation=False,
        policy=StragglerPolicy("cutoff_time", cutoff_seconds=CUTOFF, min_reports=1),
    )
    meter = Meter()
    site_of = {n: SecureSite(n, settings) for n in names}
    for name in names:
        meter.count(name, nbytes(model))  # every site downloads the round's model once
    while not engine.finished:
        current = engine.current
        phase = current.phase
        for name in current.members:
            if name in dropped and (not secure or phase not in ("advertise", SHARE)):
                continue  # it never replies (in secure aggregation: from the mask phase on)
            assignment = meter.agg(lambda name=name: engine.assignment(name))
            if assignment.action is not Action.RUN:
                continue
            meter.count(name, len(assignment.payload))
            result = meter.site(phase, name, lambda name=name, a=assignment: reply(site_of[name], a, name, engine, model, updates[name], secure))
            meter.count(name, len(result.payload) + nbytes(result.tensors or {}))
            meter.agg(lambda result=result: engine.submit(result))
        if not engine.finished and engine.current.phase == phase:
            clock.now += CUTOFF  # the phase's cut-off passes: it ends with who replied
            meter.agg(engine.tick)
    meter.model = engine.model
    return meter


def reply(site: SecureSite, assignment, name: str, engine: RoundEngine, model, update, secure: bool) -> TaskResult:
    digest = engine.model_digest
    if secure and assignment.phase in REPLY_PHASES:
        payload = site.answer(assignment.phase, assignment.round_number, assignment.payload, model)
        return TaskResult(name, assignment.round_number, assignment.phase, 0, {}, model_digest=digest, phase=assignment.phase, payload=payload)
    trained = TaskResult(name, assignment.round_number, "train", 100, {}, update, model_digest=digest, phase=assignment.phase)
    return site.masked(trained, assignment.payload, model) if secure and assignment.phase == MASK else trained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sites", default="10,50,100")
    parser.add_argument("--dropouts", default="0,0.3")
    parser.add_argument("--params", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"model: {model_of(args.params)['w'].size + model_of(args.params)['b'].size} float32 values; repeats {args.repeats}")
    header = f"{'N':>4} {'drop':>5} | {'agg CPU s plain/secure (x)':>30} | {'round s plain/secure (x)':>28} | {'bytes/site plain/secure (x)':>30}"
    print(header)
    for sites in (int(s) for s in args.sites.split(",")):
        for dropout in (float(d) for d in args.dropouts.split(",")):
            runs: dict[bool, list[Meter]] = {False: [], True: []}
            for repeat in range(args.repeats):
                for secure in (False, True):  # interleaved
                    runs[secure].append(one_round(sites, dropout, args.params, secure, repeat))
            print(row(sites, dropout, runs))


def row(sites: int, dropout: float, runs: dict[bool, list[Meter]]) -> str:
    def figures(secure: bool, pick: Callable[[Meter], float]) -> list[float]:
        return [pick(m) for m in runs[secure]]

    def cell(pick: Callable[[Meter], float], fmt: str) -> str:
        plain, secure = figures(False, pick), figures(True, pick)
        ratios = [s / p for s, p in zip(secure, plain)]
        return (
            f"{fmt % min(plain)}/{fmt % min(secure)} min, {fmt % statistics.median(plain)}/{fmt % statistics.median(secure)} med "
            f"({min(ratios):.1f}x-{statistics.median(ratios):.1f}x)"
        )

    survivor = lambda m: max(m.bytes.values())  # noqa: E731  (a surviving site: it sent and received the most)
    error = max(
        float(np.max(np.abs(s.model[k].astype(np.float64) - p.model[k]))) for s, p in zip(runs[True], runs[False]) for k in p.model
    )
    return (
        f"{sites:>4} {dropout:>5.0%} | agg {cell(lambda m: m.aggregator, '%.3f')} | round {cell(Meter.round_seconds, '%.3f')} "
        f"| bytes {cell(survivor, '%.0f')} | max |secure - plain| {error:.1e}"
    )


if __name__ == "__main__":
    main()
