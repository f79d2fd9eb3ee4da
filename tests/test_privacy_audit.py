"""The privacy audit's attacks (bench/_membership.py): the figures' arithmetic, and that the
loss-threshold attack and LiRA detect membership on an overfit model and see ~nothing on an
untrained one (bench/privacy_audit.py's NumPy MLP on digits, trained centrally: fast)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import _membership as mia
import privacy_audit


def test_separated_scores_give_advantage_one_and_equal_scores_zero() -> None:
    perfect = mia.audit(np.array([3.0, 4.0, 5.0]), np.array([0.0, 1.0, 2.0]))
    assert (perfect.advantage, perfect.auc, perfect.tpr_at_fpr) == (1.0, 1.0, (1.0, 1.0))
    ties = mia.audit(np.ones(50), np.ones(70))
    assert (ties.advantage, ties.auc, ties.tpr_at_fpr) == (0.0, 0.5, (0.0, 0.0))
    inverted = mia.audit(np.array([0.0, 1.0]), np.array([2.0, 3.0]))
    assert inverted.advantage == 0.0 and inverted.auc == 0.0


def test_auc_is_the_probability_a_member_outscores_a_non_member() -> None:
    rng = np.random.default_rng(0)
    members, others = rng.normal(0.3, 1, 300).round(1), rng.normal(0, 1, 200).round(1)  # rounded: ties
    pairs = (members[:, None] > others[None, :]).mean() + 0.5 * (members[:, None] == others[None, :]).mean()
    figures = mia.audit(members, others)
    assert figures.auc == pytest.approx(pairs, abs=1e-12)
    cuts = np.unique(np.concatenate([members, others]))
    best = max((members >= c).mean() - (others >= c).mean() for c in cuts)
    assert figures.advantage == pytest.approx(max(best, 0.0), abs=1e-12)


def test_bad_scores_are_refused() -> None:
    with pytest.raises(ValueError, match="finite scores"):
        mia.audit(np.array([1.0, np.nan]), np.array([0.0]))
    with pytest.raises(ValueError, match="at least one member"):
        mia.audit(np.array([]), np.array([0.0]))


@pytest.fixture(autouse=True)
def one_blas_thread():
    with threadpool_limits(1):  # small matrices: BLAS threads only fight the other load
        yield


@pytest.fixture(scope="module")
def split() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, y = privacy_audit.digits()
    member = np.zeros(len(y), bool)
    member[np.random.default_rng(1).permutation(len(y))[:100]] = True
    pool = np.zeros(len(y), bool)  # the audit: 100 members against 600 non-members
    pool[np.flatnonzero(member)] = True
    pool[np.flatnonzero(~member)[:600]] = True
    return x[pool], y[pool], member[pool]


@pytest.fixture(scope="module")
def halves() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All of digits, a random half called members: the blind checks' split (large, so chance
    alone moves the AUC by ~0.014 (one sigma) and the advantage by < 0.09 (99.9%))."""
    x, y = privacy_audit.digits()
    return x, y, np.random.default_rng(3).permutation(len(y)) < len(y) // 2


def _train(x: np.ndarray, y: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    return privacy_audit.sgd_steps(privacy_audit.initial_model(seed), x, y, steps=1000, lr=1.0)


def test_loss_attack_detects_an_overfit_model_and_not_an_untrained_one(split, halves) -> None:
    x, y, member = split
    overfit = mia.loss_scores(privacy_audit.probabilities(_train(x[member], y[member], 0), x), y)
    detected = mia.audit(overfit[member], overfit[~member])
    assert detected.advantage > 0.3 and detected.auc > 0.7
    x, y, member = halves
    untrained = mia.loss_scores(privacy_audit.probabilities(privacy_audit.initial_model(0), x), y)
    blind = mia.audit(untrained[member], untrained[~member])
    assert blind.advantage < 0.1 and abs(blind.auc - 0.5) < 0.06


def test_lira_detects_an_overfit_model_and_not_an_untrained_one(split, halves) -> None:
    x, y, member = split
    shadow_in = privacy_audit.shadow_halves(len(y), 8, seed=2)
    shadows = [_train(x[inside], y[inside], 10 + k) for k, inside in enumerate(shadow_in)]
    shadow_phi = [mia.logit_confidence(privacy_audit.probabilities(s, x), y) for s in shadows]
    target = mia.logit_confidence(privacy_audit.probabilities(_train(x[member], y[member], 0), x), y)
    scores = mia.lira_scores(target, shadow_phi, shadow_in)
    detected = mia.audit(scores[member], scores[~member])
    assert detected.advantage > 0.3 and detected.auc > 0.7 and detected.tpr_at_fpr[0] > 0.05
    x, y, member = halves
    shadow_in = privacy_audit.shadow_halves(len(y), 8, seed=2)
    untrained = [mia.logit_confidence(privacy_audit.probabilities(privacy_audit.initial_model(k), x), y) for k in range(8)]
    target = mia.logit_confidence(privacy_audit.probabilities(privacy_audit.initial_model(99), x), y)
    blind_scores = mia.lira_scores(target, untrained, shadow_in)
    blind = mia.audit(blind_scores[member], blind_scores[~member])
    assert blind.advantage < 0.1 and abs(blind.auc - 0.5) < 0.06


def test_lira_needs_a_shadow_in_and_out_of_each_record() -> None:
    phi = [np.zeros(3), np.zeros(3)]
    with pytest.raises(ValueError, match="train more shadows"):
        mia.lira_scores(np.zeros(3), phi, [np.array([True, True, False]), np.array([True, False, False])])


def test_an_audited_federation_reports_the_epsilon_it_was_calibrated_for() -> None:
    """The bench's DP row end to end on a small federation: run_simulation with DPFedAvg at the
    noise dp's accountant calibrates for eps 3 reports eps 3 after its last round, and the
    audit's figures come out."""
    import argparse

    from accord.dp.accountant import noise_multiplier_for

    x, y = privacy_audit.digits()
    args = argparse.Namespace(
        members=20, rounds=2, cohort=20, clip=1.0, delta=1e-5, server_lr=1.0, momentum=0.9, hidden=8, shadows=2
    )
    z = noise_multiplier_for(3.0, 1e-5, 2, 20, 20)
    outcome = privacy_audit.one_audit(x, y, privacy_audit.Setting("eps 3", z, 3.0), args, seed=0)
    assert outcome.epsilon == pytest.approx(3.0, rel=1e-3)
    assert 0 <= outcome.loss_attack.advantage <= 1 and outcome.lira is not None and 0 <= outcome.accuracy <= 1
