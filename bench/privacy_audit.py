"""The privacy audit: DP-FedAvg's accuracy on digits at eps ~ 1, 3 and 8 (delta 1e-5), and
what a membership-inference attack learns from the final model at each, beside no DP.

    .venv/bin/python bench/privacy_audit.py                      # setting "wide" (minutes)
    .venv/bin/python bench/privacy_audit.py --members 200 --rounds 100 --hidden 128   # "overfit"
    .venv/bin/python bench/privacy_audit.py --shadows 4 ...      # and LiRA (5x the time)
    options: [--quick] [--seeds 3] [--eps 1,3,8] [--delta 1e-5] [--clip 1.0] [--cohort N]
             [--server-lr 1.0] [--momentum 0.9]

**What unit is protected.** scikit-learn's digits (1,797 records) is split per seed into
``--members`` random records (default 898, half) and the held-out rest (the test set of the
accuracy, and the attack's non-members). Each member record is one client, so the unit that
central DP protects, the site, is here exactly one record: DP-FedAvg's site-level (user-level)
guarantee is a record-level one, and a membership-inference attack on a record audits it
directly. (A deployment whose sites hold many records gets the same eps per *site*; with 10
sites, eps ~ 1 noise drowns the model: its scale is set by one site's whole contribution,
against a mean over 10.) The attacks audit the record-level leakage of the **final model**
only; the DP bound also covers an observer of every round's model.

**The federation.** Each round asks ``--cohort`` clients (default: every member; fewer: Accord's
fixed-size sampling, which dp's accountant charges as sampling without replacement); each trains
``LOCAL_STEPS`` SGD steps on its record from the global model (a NumPy MLP 64-hidden-10 as an
Accord NumpyClient through ``accord.simulation.run_simulation``: the deployment's RoundEngine and
strategy), and the strategy folds the updates: FedAvgM (server momentum, as McMahan et al. 2018
run DP-FedAvg) for "no DP"; ``accord.strategies.DPFedAvg`` around the same FedAvgM for the others
(each change clipped to L2 ``--clip``, unweighted; N(0, (z C)^2) on the sum; over the cohort
size), "clip only" being z = 0 (the cost of clipping alone). The noise multiplier z of each
target eps comes from ``accord.dp.accountant.noise_multiplier_for`` (dp-accounting's RDP,
replace-one, the accountant the strategy itself runs) for ``--rounds`` rounds; the ``eps`` column
is what the federation's own accountant reported after its last round (``privacy/epsilon``).
The DP noise seed is set per seed (``noise_seed``: reproducible figures; a deployment leaves it
secret).

Two settings. "wide" (the default: 898 clients, 20 rounds, MLP 64-32-10) is where DP-FedAvg's
accuracy means something; its no-DP model generalises well, and the loss attack gets no more
than chance from it. "overfit" (200 clients, 100 rounds, MLP 64-128-10) is where the no-DP
model leaks measurably, so the DP rows show what the noise takes away (at the cost of accuracy:
200 units are few for DP).

**The attacks** (bench/_membership.py):
- loss threshold (Yeom et al. 2018): score = -loss of the record;
- LiRA (Carlini et al. 2022; online, pooled variance), with ``--shadows`` (even) shadow
  federations trained exactly like the target (same setting, noise included) on paired random
  halves of all 1,797 records: each record's in/out Gaussians of phi = log(p / (1 - p)).

**Figures**, per setting: the test accuracy of the final model, and for each attack the
advantage (max over thresholds of TPR - FPR: 0 = the model tells nothing about membership, 1 =
everything), the AUC, the TPR at FPR 1% (and 0.1% for LiRA); each as min/median over
``--seeds`` independent splits and federations. ``chance``: the advantage a blind attacker
reaches by luck on the same scores (95th percentile over random relabellings; the largest over
the seeds): an advantage below it is no evidence of leakage. ``bound``: the most any attack's
advantage can be against an (eps, delta)-DP mechanism, (e^eps - 1 + 2 delta) / (e^eps + 1)
(Kairouz et al. 2015's hypothesis-testing view). ``--quick``: 1 seed, 10 rounds, no shadows,
eps 8 only (development; the figures mean little). Measured figures, with the load they ran
under: docs/privacy.md, "The audit".
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from _membership import AttackFigures, audit, chance_advantage, lira_scores, logit_confidence, loss_scores  # noqa: E402
from _table import Column, Table  # noqa: E402

LOCAL_STEPS, LOCAL_LR = 4, 0.5
NAMES = ("w1", "b1", "w2", "b2")


def digits() -> tuple[np.ndarray, np.ndarray]:
    """All of scikit-learn's digits: features scaled to [0, 1], labels."""
    import _digits_workload

    xt, yt, xv, yv = _digits_workload._splits()
    return np.concatenate([xt, xv]).astype(np.float64), np.concatenate([yt, yv])


# -- the model: a NumPy MLP ------------------------------------------------------------------


def initial_model(seed: int, hidden: int = 32) -> dict[str, np.ndarray]:
    """The MLP 64-``hidden``-10's first weights (seeded)."""
    rng = np.random.default_rng(seed)
    return {
        "w1": rng.normal(0, 1 / 8, (64, hidden)),
        "b1": np.zeros(hidden),
        "w2": rng.normal(0, 1 / math.sqrt(hidden), (hidden, 10)),
        "b2": np.zeros(10),
    }


def probabilities(model: Mapping[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The model's class probabilities for each row of ``x``."""
    hidden = np.maximum(x @ model["w1"] + model["b1"], 0)
    logits = hidden @ model["w2"] + model["b2"]
    logits -= logits.max(1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(1, keepdims=True)


def sgd_steps(model: Mapping[str, np.ndarray], x: np.ndarray, y: np.ndarray, steps: int, lr: float) -> dict[str, np.ndarray]:
    """``steps`` full-batch gradient steps of the cross-entropy on (``x``, ``y``)."""
    w = {k: np.array(v, np.float64) for k, v in model.items()}
    onehot = np.eye(10)[y]
    for _ in range(steps):
        pre = x @ w["w1"] + w["b1"]
        hidden = np.maximum(pre, 0)
        logits = hidden @ w["w2"] + w["b2"]
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        g_logits = (p - onehot) / len(y)
        g_hidden = (g_logits @ w["w2"].T) * (pre > 0)
        w["w2"] -= lr * hidden.T @ g_logits
        w["b2"] -= lr * g_logits.sum(0)
        w["w1"] -= lr * x.T @ g_hidden
        w["b1"] -= lr * g_hidden.sum(0)
    return w


class RecordClient:
    """One client holding one record: ``LOCAL_STEPS`` SGD steps on it from the global model."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y = x[None, :], np.array([y])

    def fit(self, parameters, config):
        trained = sgd_steps(parameters, self.x, self.y, LOCAL_STEPS, LOCAL_LR)
        return {k: v.astype(np.float32) for k, v in trained.items()}, 1, {}

    def evaluate(self, parameters, config):
        return 1, {"accuracy": float(probabilities(parameters, self.x).argmax(1)[0] == self.y[0])}


# -- the federation ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One row: its label, the noise multiplier (None: plain FedAvg) and the eps it gives."""

    label: str
    noise_multiplier: float | None
    epsilon: float


def strategy_overrides(setting: Setting, args: argparse.Namespace, seed: int) -> dict[str, object]:
    """The plan's strategy for ``setting``: FedAvgM (server momentum, as McMahan et al. 2018
    run DP-FedAvg), alone or inside helper dp's central DP."""
    server = {"template": "accord.strategies.FedAvgM", "settings": {"server_lr": args.server_lr, "momentum": args.momentum}}
    if setting.noise_multiplier is None:
        return {"aggregator.settings.strategy": server}
    return {
        "aggregator.settings.strategy": {
            "template": "accord.strategies.DPFedAvg",
            "settings": {
                "clip_norm": args.clip,
                "noise_multiplier": setting.noise_multiplier,
                "delta": args.delta,
                "noise_seed": seed,
                "strategy": server,
            },
        }
    }


def federate(
    x: np.ndarray, y: np.ndarray, setting: Setting, args: argparse.Namespace, seed: int
) -> tuple[dict[str, np.ndarray], float]:
    """The final global model of a federation of one client per record of (``x``, ``y``), and
    the epsilon its strategy's accountant reported after the last round (inf without DP)."""
    from accord.plan.loader import apply_overrides, read_yaml, validate_plan
    from accord.simulation import run_simulation
    from accord.workspace.create import TEMPLATES_DIR

    overrides = {
        "aggregator.settings.rounds_to_train": args.rounds,
        "aggregator.settings.final_validation": False,
        "collaborator.settings.opt_treatment": "RESET",
        "assigner.settings.task_groups": [{"name": "train", "percentage": 1.0, "tasks": ["train"]}],
        **strategy_overrides(setting, args, seed),
    }
    if args.cohort < len(y):
        overrides["aggregator.settings.sampling"] = {"count": args.cohort, "seed": seed}
    raw = read_yaml(TEMPLATES_DIR / "torch_digits" / "plan" / "plan.yaml")
    with tempfile.TemporaryDirectory(prefix="accord-audit-") as folder:
        plan = validate_plan(apply_overrides(raw, overrides), Path(folder))
        initial = {k: v.astype(np.float32) for k, v in initial_model(seed, args.hidden).items()}
        result = run_simulation(
            plan, lambda cid: RecordClient(x[int(cid) - 1], y[int(cid) - 1]), len(y), initial=initial, stop_on_error=True
        )
    epsilon = result.final("privacy/epsilon") if setting.noise_multiplier is not None else math.inf
    return {k: np.asarray(v, np.float64) for k, v in result.model.items()}, epsilon


# -- one audit ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    accuracy: float
    epsilon: float
    #: the advantage reached by luck on this split (chance_advantage)
    chance: float
    loss_attack: AttackFigures
    lira: AttackFigures | None


def shadow_halves(records: int, shadows: int, seed: int) -> list[np.ndarray]:
    """The shadows' training sets as masks over ``records``: pairs of a random half and its
    complement (Carlini et al.), so each record is in exactly half of an even number of shadows."""
    rng = np.random.default_rng([seed, records])
    halves = []
    for _ in range((shadows + 1) // 2):
        inside = np.zeros(records, bool)
        inside[rng.permutation(records)[: records // 2]] = True
        halves += [inside, ~inside]
    return halves[:shadows]


def one_audit(x: np.ndarray, y: np.ndarray, setting: Setting, args: argparse.Namespace, seed: int) -> Outcome:
    """Draw the audit's pool (2 x ``--members`` records) and its members (half of it), federate
    the members, attack the final model (and ``--shadows`` shadows trained on halves of the pool).
    The accuracy is on every record the model did not train on."""
    order = np.random.default_rng(1000 + seed).permutation(len(y))
    pool = order[: 2 * args.members]
    member = np.zeros(len(y), bool)
    member[pool[: args.members]] = True
    model, epsilon = federate(x[member], y[member], setting, args, seed)
    p = probabilities(model, x)
    accuracy = float((p[~member].argmax(1) == y[~member]).mean())
    scores, is_member = loss_scores(p, y)[pool], member[pool]
    loss_attack = audit(scores[is_member], scores[~is_member])
    chance = chance_advantage(scores, is_member, seed=seed)
    lira = None
    if args.shadows:
        shadow_phi, shadow_in = [], []
        for k, inside in enumerate(shadow_halves(len(pool), args.shadows, seed)):
            shadow, _ = federate(x[pool[inside]], y[pool[inside]], setting, args, 10_000 + 100 * seed + k)
            shadow_phi.append(logit_confidence(probabilities(shadow, x[pool]), y[pool]))
            shadow_in.append(inside)
        ratio = lira_scores(logit_confidence(p[pool], y[pool]), shadow_phi, shadow_in)
        lira = audit(ratio[is_member], ratio[~is_member])
    return Outcome(accuracy, epsilon, chance, loss_attack, lira)


def advantage_bound(epsilon: float, delta: float) -> float:
    """The most any attack's advantage can be against an (eps, delta)-DP mechanism."""
    if math.isinf(epsilon):
        return 1.0
    return (math.exp(epsilon) - 1 + 2 * delta) / (math.exp(epsilon) + 1)


def lira_cells(figures: Sequence[AttackFigures]) -> list[list[float]]:
    """LiRA's columns over the seeds: advantage, AUC, TPR at FPR 1% and 0.1%."""
    return [[f.advantage for f in figures], [f.auc for f in figures], *([f.tpr_at_fpr[i] for f in figures] for i in range(2))]


def spread(values: Sequence[float]) -> str:
    return f"{min(values):.3f}/{statistics.median(values):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 30 rounds, no shadows, eps 8 only")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--hidden", type=int, default=32, help="the MLP's hidden units")
    parser.add_argument("--members", type=int, default=898, help="member records (= clients), at most 898")
    parser.add_argument("--cohort", type=int, default=898, help="clients a round (at most --members: every one)")
    parser.add_argument("--shadows", type=int, default=0, help="LiRA's shadow federations (even; 0: no LiRA)")
    parser.add_argument("--eps", default="1,3,8")
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--clip", type=float, default=1.0)
    parser.add_argument("--server-lr", type=float, default=1.0)
    parser.add_argument("--momentum", type=float, default=0.9)
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.rounds, args.shadows, args.eps = 1, 10, 0, "8"
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)
    with threadpool_limits(1):  # the matrices are small: BLAS threads only fight each other
        run(args)


def run(args: argparse.Namespace) -> None:
    from accord.dp.accountant import noise_multiplier_for

    x, y = digits()
    if not 0 < args.members <= len(y) // 2:
        parser_error = f"--members must be in 1..{len(y) // 2} (the audit's pool is twice the members)"
        raise SystemExit(parser_error)
    clients = args.members
    cohort = min(args.cohort, clients)
    settings = [Setting("no DP", None, math.inf), Setting("clip only", 0.0, math.inf)]
    for target in (float(e) for e in args.eps.split(",")):
        settings.append(
            Setting(f"eps {target:g}", noise_multiplier_for(target, args.delta, args.rounds, cohort, clients), target)
        )
    print(
        f"{clients} clients of one record, {cohort} a round (q = {cohort / clients:.3f}), {args.rounds} rounds, "
        f"MLP 64-{args.hidden}-10, clip {args.clip}, server lr {args.server_lr} momentum {args.momentum}, delta {args.delta:g}, "
        f"{args.seeds} seeds, {args.shadows} shadows; load average {os.getloadavg()[0]:.1f}"
    )
    table = Table(
        Column("setting", 9),
        Column("z", 6, ".2f"),
        Column("eps", 5, ".2f"),
        Column("bound", 5, ".3f"),
        Column("accuracy", 11),
        Column("loss adv", 11),
        Column("loss AUC", 11),
        Column("loss TPR@1%", 11),
        Column("chance", 6, ".3f"),
        Column("LiRA adv", 11),
        Column("LiRA AUC", 11),
        Column("LiRA TPR@1%", 11),
        Column("LiRA @0.1%", 11),
        Column("s/seed", 6, ".0f"),
    )
    for setting in settings:
        started = time.perf_counter()
        outcomes = [one_audit(x, y, setting, args, seed) for seed in range(args.seeds)]
        seconds = (time.perf_counter() - started) / args.seeds
        lira = [o.lira for o in outcomes if o.lira is not None]
        epsilon = max(o.epsilon for o in outcomes)
        table.row(
            setting.label,
            setting.noise_multiplier if setting.noise_multiplier is not None else "-",
            epsilon if math.isfinite(epsilon) else "inf",
            advantage_bound(epsilon, args.delta),
            spread([o.accuracy for o in outcomes]),
            spread([o.loss_attack.advantage for o in outcomes]),
            spread([o.loss_attack.auc for o in outcomes]),
            spread([o.loss_attack.tpr_at_fpr[0] for o in outcomes]),
            max(o.chance for o in outcomes),
            *(spread(values) if lira else "-" for values in lira_cells(lira)),
            seconds,
        )
    print(
        "cells: min/median over the seeds; adv = max(TPR - FPR); eps = what the federation's accountant reported "
        "after its last round; bound = the most any attack's advantage can be at that eps; chance = the advantage "
        "a blind attacker reaches by luck (95th percentile; the largest over the seeds)"
    )


if __name__ == "__main__":
    main()
