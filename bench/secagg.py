"""Secure aggregation (SecAgg+ as the engine's phases) against plain FedAvg, same model, same run.

    .venv/bin/python bench/secagg.py [--sites 10,50,100] [--dropouts 0,0.3] [--modes unsigned,signed]
        [--params 100000] [--repeats 3] [--samples 512] [--epochs 5] [--workers N]

Lightweight in-process sites over the real RoundEngine: the aggregator side is the engine with
``SecureAggregation(FedAvg())`` (strategies/secure.py: accord.secagg's ServerSession, its
secrets rebuilt by MPyC's Shamir, secagg/shamir.py, its masks expanded over the aggregator's
process pool, aggregator/mask_pool.py, up to ``--workers`` of them as the work justifies, one
per CPU by default, started before the timing as a serving aggregator keeps it; 1: no pool) or plain ``FedAvg()``; each
site answers its phases with the real site code (collaborator/secure_site.py: accord.secagg's
SiteSession, X25519, AES-GCM, AES-CTR masks, Shamir shares) on payloads that went through the
engine. No network. The model is a torch MLP 64-H-10 with ~``--params`` float32 values; each
site's update is its local training: ``--epochs`` of SGD (batch 16) over ``--samples`` digits
drawn for it (seeded by its number), done once per site and repeat and used by every round
(the same training in each). The rounds run with BLAS on one thread, as the serving aggregator
does (aggregator/serve.py). A ``--dropouts`` share of the cohort drops in the worst phase
for SecAgg+ (after sharing, before masking: its pairwise masks are in the survivors' sums, which
a signed round's survivors' corrections take out; an unsigned round's aggregator rebuilds the
dropped sites' mask keys from shares and expands those masks itself), and
the same share never replies in plain FedAvg; the phases close under cutoff_time (an
injected clock), the round with FedAvg over the survivors.

``--modes``: the secure rounds run beside each plain one, interleaved (plain, unsigned, signed
in each repeat), one row each against the same plain rounds:
- unsigned: the bare library's four phases (advertise, share, mask, unmask);
- signed: the deployment's configuration (SIGNED_PHASES): each site signs its advert, which
  carries its certificate, checks its neighbours' adverts, signs the survivor list in the
  ``confirm`` phase and checks the threshold of survivors' confirmations before it reveals;
  the aggregator checks every advert and confirmation as it arrives. Real certificates: a CA and
  a key and certificate per site made by accord.pki.ca.make_federation_pki (what ``fx`` runs;
  the default key, ECDSA P-256) in a temporary folder, each site's Signing from
  collaborator/secure_site.py ``site_signing`` and the aggregator's verifier from
  aggregator/serve.py ``site_verifier``, made once for the run as a site and a serving
  aggregator make them once per process. Each verifier checks a certificate's chain once and
  then only its revocation and validity (pki/signatures.py CollaboratorVerifier), so before the timed
  rounds at each N one untimed signed round (0% dropouts) has the verifiers meet every
  certificate; its figures are printed (a federation's first round).

Figures, per N, dropout share and mode (min and median over the repeats):
- aggregator CPU (s): CPU spent in the engine's calls for the round (assignments, submits, the
  close and unmasking; in a signed round the certificate and signature checks), the
  aggregator's process and its mask workers together, and its ratio secure/plain; beside it,
  the secure round's process and workers apart (median). The workers' CPU is read from /proc
  outside the window the process's own CPU is measured in;
- round time (s), the issue's measure: sites train and answer in parallel, so a round is the
  slowest site's training, plus, per phase, the slowest site's CPU in it, plus the
  aggregator's time: its process's CPU in its calls and its workers' CPU divided by their
  number (they run in parallel; CPU, not wall time, so the other work of a shared machine
  does not count; network time excluded), and its ratio secure/plain;
  the issue's goal is <= 2x at N = 100 with 30% dropouts;
- aggregation only (s): the same without the training, and its ratio: what secure
  aggregation itself costs against plain FedAvg's summing (not the goal's measure);
- training (s): the slowest site's training, the same in every round;
- the slowest site's CPU per phase (s, median): what the sites add to the round, phase by
  phase (signing and checking signatures in a signed round's advertise, share, confirm and
  unmask);
- bytes per site: what one surviving site sends and receives (the model download, phase
  payloads, the update or masked update, and in a signed round's ``unmask`` its correction:
  one more model-sized vector beside the reveals), and its ratio secure/plain (Bonawitz et al. report
  1.73x at 2^10 users and 2^20 values);
- max |secure - plain|: the largest difference between the two rounds' models (the
  fixed-point error: it must stay near 2^-24).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import torch
from _digits_workload import _splits

from accord.aggregation.bounds import UNBOUNDED
from accord.aggregation.robust import one_blas_thread
from accord.aggregator.assigner import RandomGroupedAssigner
from accord.aggregator.engine import RoundEngine
from accord.aggregator.mask_pool import MaskPool
from accord.aggregator.serve import site_verifier
from accord.aggregator.stragglers import StragglerPolicy
from accord.collaborator.secure_site import SecureSite, site_signing
from accord.messages import Action, TaskResult
from accord.pki.ca import make_federation_pki
from accord.pki.layout import CertLayout
from accord.plan.aggregator_settings import SecureAggregationSettings
from accord.plan.round_settings import TaskSpec
from accord.secagg.signing import Signing, Verifier
from accord.strategies.fedavg import FedAvg
from accord.strategies.secure import SecureAggregation
from accord.strategies.secure_phases import MASK, REPLY_PHASES, SHARE, SIGNED_PHASES

TASKS = {"train": TaskSpec(function="train")}
CUTOFF = 1.0
MODES = ("unsigned", "signed")
TICK = os.sysconf("SC_CLK_TCK")
torch.set_num_threads(1)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def workers_cpu(pool: MaskPool) -> float:
    """CPU seconds the pool's live worker processes have spent (Linux /proc)."""
    executor = pool._executor  # the bench reads its workers' CPU
    total = 0
    for pid in list(getattr(executor, "_processes", None) or {}):
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICK


class Federation:
    """A signed federation's PKI and hooks, made as the deployment makes them: a CA and every
    site's key and certificate (accord.pki.ca.make_federation_pki, what ``fx`` runs; the default
    key type, ECDSA P-256) in ``cert_dir``, each site's Signing (collaborator/secure_site.py
    site_signing: its own key and certificate, its own CollaboratorVerifier over the chain) and the
    aggregator's verifier (aggregator/serve.py site_verifier: the chain and the CA's revocations
    as they happen). Made once for the run, as a site and a serving aggregator make them once per
    process, so each verifier checks each certificate's chain once (CollaboratorVerifier)."""

    def __init__(self, names: list[str], cert_dir: str) -> None:
        make_federation_pki(cert_dir, "localhost", names)
        self.signings: dict[str, Signing] = {name: site_signing(cert_dir, name) for name in names}
        self.verify: Verifier = site_verifier(CertLayout(cert_dir))


class Meter:
    """The aggregator's CPU and elapsed time, each site's CPU in each phase, bytes per site."""

    def __init__(self, pool: MaskPool | None, training: float) -> None:
        self.pool = pool
        self.training = training
        self.own = 0.0  # the aggregator's process
        self.pooled = 0.0  # its mask workers
        self.sites: dict[str, dict[str, float]] = {}
        self.bytes: dict[str, int] = {}
        self.model: dict[str, np.ndarray] = {}

    def agg(self, call: Callable[[], object]) -> object:
        # the workers' CPU is read (/proc) outside the process-time window, so its reads are not
        # billed to the aggregator's process
        workers = workers_cpu(self.pool) if self.pool else 0.0
        cpu = time.process_time()
        try:
            return call()
        finally:
            self.own += time.process_time() - cpu
            self.pooled += workers_cpu(self.pool) - workers if self.pool else 0.0

    @property
    def aggregator(self) -> float:
        """The aggregator's CPU: its process's and its workers'."""
        return self.own + self.pooled

    def aggregator_seconds(self) -> float:
        """The aggregator's time: its process's CPU plus its workers' shared out over them (they
        run in parallel, one per CPU), so a busy shared machine's scheduling does not count."""
        return self.own + (self.pooled / self.pool.workers if self.pool else 0.0)

    def site(self, phase: str, name: str, call: Callable[[], object]) -> object:
        started = time.process_time()
        try:
            return call()
        finally:
            spent = self.sites.setdefault(phase, {})
            spent[name] = spent.get(name, 0.0) + time.process_time() - started

    def count(self, name: str, nbytes: int) -> None:
        self.bytes[name] = self.bytes.get(name, 0) + nbytes

    def aggregation_seconds(self) -> float:
        """The aggregator's time plus, per phase, the slowest site's CPU (no training)."""
        return self.aggregator_seconds() + sum(max(spent.values(), default=0.0) for spent in self.sites.values())

    def round_seconds(self) -> float:
        """The slowest site's training plus ``aggregation_seconds``: the goal's round time."""
        return self.training + self.aggregation_seconds()


def hidden_for(params: int) -> int:
    """H of the MLP 64-H-10 with about ``params`` values (64H + H + 10H + 10)."""
    return max(1, (params - 10) // 75)


def model_of(params: int) -> dict[str, np.ndarray]:
    torch.random.default_generator.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, hidden_for(params)), torch.nn.ReLU(), torch.nn.Linear(hidden_for(params), 10))
    return {name: value.detach().numpy().copy() for name, value in net.state_dict().items()}


def train(model: dict[str, np.ndarray], cid: int, samples: int, epochs: int) -> tuple[dict[str, np.ndarray], float]:
    """One site's local training from ``model``: (trained weights, its CPU seconds)."""
    started = time.process_time()
    xt, yt, _, _ = _splits()
    pick = np.random.default_rng(cid).choice(len(yt), samples, replace=True)
    x, y = torch.from_numpy(xt[pick]), torch.from_numpy(yt[pick])
    hidden = model["0.bias"].shape[0]
    net = torch.nn.Sequential(torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10))
    net.load_state_dict({name: torch.from_numpy(value.copy()) for name, value in model.items()})
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05)
    for _ in range(epochs):
        for at in range(0, samples, 16):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(x[at : at + 16]), y[at : at + 16]).backward()
            optimizer.step()
    trained = {name: value.detach().numpy().copy() for name, value in net.state_dict().items()}
    return trained, time.process_time() - started


def nbytes(state) -> int:
    return sum(np.asarray(t).nbytes for t in state.values())


def one_round(
    model: dict[str, np.ndarray],
    updates: dict[str, dict[str, np.ndarray]],
    training: float,
    dropout: float,
    pool: MaskPool | None,
    signed: Federation | None = None,
) -> Meter:
    """One round over the sites of ``updates`` (their trained weights): secure if ``pool``,
    signed (adverts signed, the confirm phase, every signature checked) if ``signed`` too."""
    names = sorted(updates)
    secure = pool is not None
    dropped = set(names[: round(dropout * len(names))])
    settings = SecureAggregationSettings(enabled=True, clip=1.0)
    strategy = FedAvg()
    if pool is not None:
        strategy = SecureAggregation(FedAvg(), settings, verify=signed.verify if signed else None)
        strategy.mask_total = pool.mask_total
    clock = Clock()
    engine = RoundEngine(
        collaborators=names,
        tasks=TASKS,
        assigner=RandomGroupedAssigner(names, [{"name": "all", "percentage": 1.0, "tasks": ["train"]}]),
        rounds_to_train=1,
        model=model,
        clock=clock,
        strategy=strategy,
        bounds=UNBOUNDED,
        final_validation=False,
        policy=StragglerPolicy("cutoff_time", cutoff_seconds=CUTOFF, min_reports=1),
    )
    meter = Meter(pool, training)
    site_of = {n: SecureSite(n, settings, signed.signings[n] if signed else None) for n in names}
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
        tensors = site.tensors(assignment.phase, assignment.round_number)  # unmask: the correction
        return TaskResult(name, assignment.round_number, assignment.phase, 0, {}, tensors, model_digest=digest, phase=assignment.phase, payload=payload)
    trained = TaskResult(name, assignment.round_number, "train", 100, {}, update, model_digest=digest, phase=assignment.phase)
    return site.masked(trained, assignment.payload, model) if secure and assignment.phase == MASK else trained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sites", default="10,50,100")
    parser.add_argument("--dropouts", default="0,0.3")
    parser.add_argument("--modes", default=",".join(MODES), help="secure rounds to run beside plain: unsigned, signed or both")
    parser.add_argument("--params", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--samples", type=int, default=512, help="training samples per site")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=None, help="mask worker processes (default: one per CPU; 1: none)")
    args = parser.parse_args()
    modes = args.modes.split(",")
    if not modes or any(mode not in MODES for mode in modes):
        parser.error(f"--modes {args.modes!r}: name unsigned, signed or both, comma-separated")
    counts = [int(s) for s in args.sites.split(",")]
    model = model_of(args.params)
    train(model, 0, 16, 1)  # torch's first call's set-up, outside the timing
    pool = MaskPool(args.workers)
    pool.start()  # its workers started, as a serving aggregator's are after its first secure round
    print(
        f"model: MLP 64-{hidden_for(args.params)}-10, {sum(v.size for v in model.values())} float32 values; each site trains "
        f"{args.epochs} epoch(s) over {args.samples} digits; repeats {args.repeats}; mask workers {pool.workers}; modes {','.join(modes)}"
    )
    with tempfile.TemporaryDirectory(prefix="accord-secagg-bench-") as cert_dir:
        federation = Federation([f"site{i:03d}" for i in range(max(counts))], cert_dir) if "signed" in modes else None
        for sites in counts:
            names = [f"site{i:03d}" for i in range(sites)]
            warm = federation is None
            for dropout in (float(d) for d in args.dropouts.split(",")):
                runs: dict[str, list[Meter]] = {mode: [] for mode in ("plain", *modes)}
                for repeat in range(args.repeats):
                    trained = {name: train(model, 1000 * repeat + cid, args.samples, args.epochs) for cid, name in enumerate(names)}
                    updates = {name: weights for name, (weights, _) in trained.items()}
                    training = max(seconds for _, seconds in trained.values())  # the sites train in parallel
                    # BLAS on one thread, as the serving aggregator runs (aggregator/serve.py): without
                    # it plain FedAvg's change norms hit OpenBLAS's spinning threads on a busy box
                    with one_blas_thread():
                        if not warm:  # untimed: every verifier checks these sites' certificates once
                            print(warm_up(one_round(model, updates, training, 0.0, pool, federation), sites))
                            warm = True
                        for mode in runs:  # interleaved
                            secure = pool if mode != "plain" else None
                            runs[mode].append(one_round(model, updates, training, dropout, secure, federation if mode == "signed" else None))
                for mode in modes:
                    print(row(sites, dropout, mode, runs["plain"], runs[mode]))
    pool.close()


def warm_up(meter: Meter, sites: int) -> str:
    """The untimed first signed round's figures (its verifiers checked every certificate)."""
    slowest = {phase: max(spent.values(), default=0.0) for phase, spent in meter.sites.items()}
    return (
        f"N {sites:>3} signed, first round (untimed: certificates checked, 0% dropouts): aggregation only "
        f"{meter.aggregation_seconds():.3f} s, aggregator CPU {meter.aggregator:.3f} s, slowest site per phase "
        + ", ".join(f"{phase} {seconds:.3f}" for phase, seconds in slowest.items())
    )


def row(sites: int, dropout: float, mode: str, plain_runs: list[Meter], secure_runs: list[Meter]) -> str:
    def cell(pick: Callable[[Meter], float], fmt: str) -> str:
        plain, secure = [pick(m) for m in plain_runs], [pick(m) for m in secure_runs]
        ratios = [s / p for s, p in zip(secure, plain)]
        return (
            f"{fmt % min(plain)}/{fmt % min(secure)} min, {fmt % statistics.median(plain)}/{fmt % statistics.median(secure)} med "
            f"({min(ratios):.2f}x-{statistics.median(ratios):.2f}x)"
        )

    def slowest(phase: str) -> Callable[[Meter], float]:
        return lambda m: max(m.sites.get(phase, {}).values(), default=0.0)

    survivor = lambda m: max(m.bytes.values())  # noqa: E731  (a surviving site: it sent and received the most)
    error = max(
        float(np.max(np.abs(s.model[k].astype(np.float64) - p.model[k]))) for s, p in zip(secure_runs, plain_runs) for k in p.model
    )
    training = [m.training for m in plain_runs]
    phases = [phase for phase in SIGNED_PHASES if any(phase in m.sites for m in secure_runs)]
    sites_cpu = ", ".join(f"{phase} {statistics.median(map(slowest(phase), secure_runs)):.3f}" for phase in phases)
    return (
        f"N {sites:>3} drop {dropout:>4.0%} {mode:<8} | round (goal's) {cell(Meter.round_seconds, '%.3f')} | aggregation only "
        f"{cell(Meter.aggregation_seconds, '%.3f')} | training {min(training):.3f} min {statistics.median(training):.3f} med "
        f"| agg CPU {cell(lambda m: m.aggregator, '%.3f')} (secure's process / workers, med "
        f"{statistics.median(m.own for m in secure_runs):.3f} / {statistics.median(m.pooled for m in secure_runs):.3f}) "
        f"| slowest site's CPU per phase, med: {sites_cpu} "
        f"| bytes {cell(survivor, '%.0f')} | max |secure - plain| {error:.1e}"
    )


if __name__ == "__main__":
    main()
