"""Membership-inference attacks on a trained model's per-example outputs, and their figures.

An attack gives each candidate record a score (higher: more likely a training member).
:func:`audit` turns the members' and non-members' scores into the attacker's figures:

- ``advantage``: max over thresholds of TPR - FPR (Yeom et al. 2018: the membership
  advantage; 0 for a model that reveals nothing, 1 for one that reveals every member).
- ``auc``: the area under the ROC curve (0.5 = a coin; ties count half).
- ``tpr_at_fpr``: TPR at FPR <= 1% and <= 0.1% (Carlini et al. 2022: the attack that matters
  is the one confident about a few records, which an average hides).

Two attacks make the scores:

- :func:`loss_scores`: the loss-threshold attack (Yeom et al.): score = -loss of the record
  under the target model.
- :func:`lira_scores`: the offline-free ("online") LiRA of Carlini et al. 2022: shadow
  models trained like the target on random halves of the candidate pool; for each record the
  logit-scaled confidence phi = log(p_y / (1 - p_y)) under the shadows that trained on it
  (in) and those that did not (out), each fitted with a Gaussian; score = the log-likelihood
  ratio of the target's phi under in against out.

Pure NumPy: the benches and the tests import it (``sys.path`` holds bench/).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

LOW_FPRS = (0.01, 0.001)


@dataclass(frozen=True)
class AttackFigures:
    """One attack's success: advantage (max TPR - FPR), AUC and TPR at each of ``LOW_FPRS``."""

    advantage: float
    auc: float
    tpr_at_fpr: tuple[float, ...]


def audit(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> AttackFigures:
    """The figures of an attack scoring members ``member_scores`` and non-members
    ``nonmember_scores`` (higher: more likely a member), over every threshold."""
    members, others = np.asarray(member_scores, np.float64), np.asarray(nonmember_scores, np.float64)
    if members.size == 0 or others.size == 0 or not (np.isfinite(members).all() and np.isfinite(others).all()):
        raise ValueError("an audit needs finite scores for at least one member and one non-member")
    scores = np.concatenate([members, others])
    is_member = np.concatenate([np.ones(members.size), np.zeros(others.size)])
    order = np.argsort(-scores, kind="stable")
    scores, is_member = scores[order], is_member[order]
    last_of_tie = np.r_[scores[1:] != scores[:-1], True]  # a threshold sits between distinct scores
    tpr = np.r_[0.0, np.cumsum(is_member)[last_of_tie] / members.size]
    fpr = np.r_[0.0, np.cumsum(1 - is_member)[last_of_tie] / others.size]
    auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))  # trapezoids: a tie counts half
    low = tuple(float(tpr[fpr <= limit].max()) for limit in LOW_FPRS)
    return AttackFigures(float(np.max(tpr - fpr)), auc, low)


def cross_entropy(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each record's loss -log p_label, from its class ``probabilities`` (rows)."""
    chosen = probabilities[np.arange(len(labels)), labels]
    return -np.log(np.clip(chosen, 1e-12, 1.0))


def loss_scores(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The loss-threshold attack's scores: each record's -loss under the target model."""
    return -cross_entropy(probabilities, labels)


def logit_confidence(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """LiRA's statistic phi = log(p_y / (1 - p_y)), which is close to Gaussian across models."""
    chosen = np.clip(probabilities[np.arange(len(labels)), labels], 1e-12, 1 - 1e-12)
    return np.log(chosen) - np.log1p(-chosen)


def lira_scores(target_phi: np.ndarray, shadow_phi: Sequence[np.ndarray], shadow_in: Sequence[np.ndarray]) -> np.ndarray:
    """LiRA's per-record log-likelihood ratio of the target's ``target_phi`` under the
    Gaussian of the shadows that trained on the record against those that did not.

    ``shadow_phi[k]`` is shadow model k's phi on every candidate record, ``shadow_in[k]`` a
    boolean mask of the records it trained on. Per-record means, a variance pooled over the
    records (Carlini et al.'s choice with few shadows), so each record needs one in and one
    out shadow at least."""
    phi, inside = np.stack(shadow_phi), np.stack(shadow_in).astype(bool)
    counts_in, counts_out = inside.sum(0), (~inside).sum(0)
    if counts_in.min() == 0 or counts_out.min() == 0:
        raise ValueError("every record needs at least one shadow model in and one out: train more shadows")
    mean_in = np.where(inside, phi, 0).sum(0) / counts_in
    mean_out = np.where(~inside, phi, 0).sum(0) / counts_out
    var_in = np.var(phi[inside] - np.broadcast_to(mean_in, phi.shape)[inside]) + 1e-6
    var_out = np.var(phi[~inside] - np.broadcast_to(mean_out, phi.shape)[~inside]) + 1e-6
    log_in = -((target_phi - mean_in) ** 2) / (2 * var_in) - 0.5 * np.log(var_in)
    log_out = -((target_phi - mean_out) ** 2) / (2 * var_out) - 0.5 * np.log(var_out)
    return log_in - log_out


def chance_advantage(scores: np.ndarray, is_member: np.ndarray, draws: int = 200, seed: int = 0) -> float:
    """The advantage a blind attacker reaches by luck on these ``scores``: the 95th percentile
    of the advantage over ``draws`` random relabellings of the same number of members (a
    measured advantage below it is indistinguishable from none)."""
    rng = np.random.default_rng(seed)
    members = int(np.count_nonzero(is_member))
    advantages = []
    for _ in range(draws):
        pick = np.zeros(len(scores), bool)
        pick[rng.permutation(len(scores))[:members]] = True
        advantages.append(audit(scores[pick], scores[~pick]).advantage)
    return float(np.quantile(advantages, 0.95))
