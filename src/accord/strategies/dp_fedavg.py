"""DPFedAvg: central differential privacy at the site level (McMahan et al. 2018), with fixed
or adaptive clipping (Andrew et al. 2021), accounted by dp-accounting (dp/accountant.py).

Each round: a cohort of the plan's size is drawn uniformly at random with a *secret* seed (the
plan's sampling seed is public, and a cohort everyone can predict amplifies nothing); each
reply's change is clipped to L2 norm C (strategies/clipping.py), *unweighted* (a site's sample
count is ignored: a lying count cannot amplify it); the clipped changes are summed, Gaussian
noise N(0, (z C)^2) is added to the sum, and the sum divided by the cohort size m (fixed before
any reply: a dropped site adds nothing, the sensitivity stays C/m). The wrapped strategy's
``finish`` then steps from that noisy mean (post-processing: a server optimizer keeps the
guarantee). With ``target_quantile`` the clip adapts: the count of unclipped replies, itself
noised (std ``unclipped_count_stddev``), moves C geometrically towards that quantile of the
norms; its noise is accounted with the sum's.

The noise of round r is drawn from a generator seeded by (secret seed, r, the digest of the set
of replies it includes: each one's site name and a digest of its update): a restart after a
kill -9 that closes round r over the same replies draws exactly the noise an uninterrupted run
draws, and a close over a different set (a site late the first time replies after the restart)
draws fresh noise, so two releases of round r never share noise and their difference is not a
site's noise-free update. No round repeats another's. The seed and the accountant's rows are the
strategy's snapshot, journaled at each round's start; the accountant charges the round once, when
the committed close runs ``finish`` (a release served before a crash and lost with the
uncommitted state is a second release the accountant does not see: docs/privacy.md).
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from accord.aggregation.bounds import blocks, change_of, flat, normed, source
from accord.dp.accountant import RoundMechanism, Rounds
from accord.strategies.base import Strategy
from accord.strategies.clipping import clip_reply
from accord.strategies.fedavg import FedAvg
from accord.strategies.robust import require
from accord.strategies.seam import EVERYONE, Accumulator, Aggregate, ClientSampling, Reply, RoundContext, StrategyState
from accord.strategies.wrapper import Wrapper
from accord.tensors.state import ModelState


@dataclass
class NoisyAggregate(Aggregate):
    """The noisy mean, and the noised count of unclipped replies (adaptive clipping only)."""

    noisy_unclipped: float | None = None


class DPFedAvg(Wrapper):
    """Wraps ``strategy`` (FedAvg by default; a FedAvg-family one: its ``finish`` steps from the
    noisy mean) with central DP: see the module docstring and docs/privacy.md."""

    @property
    def needs_individual_updates(self) -> bool:  # type: ignore[override]
        """Server-side clipping needs each update (with secure aggregation, clip at the sites)."""
        return True

    def __init__(
        self,
        noise_multiplier: float,
        clip_norm: float,
        strategy: Strategy | None = None,
        delta: float = 1e-5,
        target_epsilon: float | None = None,
        target_quantile: float | None = None,
        clip_learning_rate: float = 0.2,
        unclipped_count_stddev: float | None = None,
        noise_seed: int | None = None,
    ) -> None:
        name = "DPFedAvg"
        require(
            0 <= noise_multiplier < math.inf,
            name,
            "noise_multiplier",
            noise_multiplier,
            "a number >= 0 (noise std over the clip norm)",
        )
        require(
            0 < clip_norm < math.inf, name, "clip_norm", clip_norm, "a positive number (the L2 norm each change is clipped to)"
        )
        require(0 < delta < 1, name, "delta", delta, "a number in (0, 1), below 1 / the number of sites")
        require(
            target_epsilon is None or 0 < target_epsilon < math.inf, name, "target_epsilon", target_epsilon, "a positive number"
        )
        require(
            target_quantile is None or 0 < target_quantile < 1, name, "target_quantile", target_quantile, "a number in (0, 1)"
        )
        require(0 < clip_learning_rate < math.inf, name, "clip_learning_rate", clip_learning_rate, "a positive number")
        require(
            unclipped_count_stddev is None or 0 < unclipped_count_stddev < math.inf,
            name, "unclipped_count_stddev", unclipped_count_stddev, "a positive number",
        )  # fmt: skip
        inner = strategy or FedAvg()
        require(
            not inner.needs_individual_updates,
            name,
            "strategy",
            type(inner).__name__,
            "a FedAvg-family strategy (robust ones need each update unnoised)",
        )
        super().__init__(inner)
        self.noise_multiplier = noise_multiplier
        self.clip_norm = clip_norm
        self.delta = delta
        self.target_epsilon = target_epsilon
        self.target_quantile = target_quantile
        self.clip_learning_rate = clip_learning_rate
        self.unclipped_count_stddev = unclipped_count_stddev
        #: secret unless the plan sets it (then every site can remove the noise: tests only)
        self.noise_seed = secrets.randbits(128) if noise_seed is None else noise_seed
        self.rounds = Rounds()
        self._unclipped_fraction: float | None = None

    def select(self, round_number: int, candidates: Sequence[str], sampling: ClientSampling = EVERYONE) -> Sequence[str]:
        """The plan's cohort size, drawn uniformly with the secret seed."""
        return replace(sampling, seed=self.noise_seed).sample(round_number, candidates)

    def mechanism(self, context: RoundContext) -> RoundMechanism:
        """What round ``context`` releases: its cohort of the population, its noise multipliers
        (under replace-one: 2 C is the sum's sensitivity, 1 the count's)."""
        size = len(context.cohort)
        multipliers: tuple[float, ...] = (self.noise_multiplier / 2,)
        if self.target_quantile is not None:
            multipliers += (self.count_stddev(size),)
        return RoundMechanism(size, max(context.population, size), multipliers)

    def count_stddev(self, cohort_size: int) -> float:
        """The noise std on the count of unclipped replies (Andrew et al.: cohort / 20)."""
        return self.unclipped_count_stddev or max(cohort_size, 1) / 20

    def stop_reason(self, context: RoundContext) -> str | None:
        """Refuse the round whose release would take epsilon past ``target_epsilon``."""
        if self.target_epsilon is None:
            return None
        after = self.rounds.epsilon(self.delta, self.mechanism(context))
        if after <= self.target_epsilon:
            return None
        spent = self.rounds.epsilon(self.delta)
        return (
            f"round {context.round_number} would take epsilon from {spent:.4f} to {after:.4f}, past the plan's "
            f"target_epsilon {self.target_epsilon:g} (delta {self.delta:g}): training stops"
        )

    def accumulator(self, context: RoundContext) -> Accumulator:
        seed = (self.noise_seed, context.round_number, 1)  # the cohort's draw is (seed, round)
        return NoisySum(
            context, self.clip_norm, self.noise_multiplier, self.mechanism(context), seed, self.target_quantile is not None
        )

    def finish(self, context: RoundContext, aggregate: Aggregate) -> ModelState:
        """Account the round, adapt the clip, then the wrapped strategy's step from the noisy mean."""
        mechanism = self.mechanism(context)
        self.rounds.add(mechanism)  # whatever the aggregate: the round was released
        noisy_unclipped = aggregate.noisy_unclipped if isinstance(aggregate, NoisyAggregate) else None
        if self.target_quantile is not None and noisy_unclipped is not None:
            fraction = noisy_unclipped / max(mechanism.sample_size, 1)
            self._unclipped_fraction = fraction
            self.clip_norm *= math.exp(-self.clip_learning_rate * (fraction - self.target_quantile))
        return self.strategy.finish(context, aggregate)

    def report(self) -> dict[str, float]:
        """(epsilon, delta) spent so far, the clip norm of the next round, and (adaptive) the
        noised fraction of unclipped replies: all public (functions of noised releases)."""
        figures = {
            "privacy/epsilon": self.rounds.epsilon(self.delta),
            "privacy/delta": self.delta,
            "privacy/clip_norm": self.clip_norm,
            "privacy/noise_multiplier": self.noise_multiplier,
        }
        if self._unclipped_fraction is not None:
            figures["privacy/unclipped_fraction"] = self._unclipped_fraction
        return figures

    def snapshot(self) -> StrategyState:
        inner = self.strategy.snapshot()
        values = {
            "noise_seed": format(self.noise_seed, "x"),
            "clip_norm": self.clip_norm,
            "rounds": self.rounds.as_json(),
            "unclipped_fraction": self._unclipped_fraction,
            "strategy": inner.values,
        }
        return StrategyState(values, inner.tensors)

    def restore(self, state: StrategyState) -> None:
        values = state.values
        if "noise_seed" not in values:  # a snapshot from before DP was planned
            self.strategy.restore(state)
            return
        self.noise_seed = int(values["noise_seed"], 16)
        self.clip_norm = float(values["clip_norm"])
        self.rounds = Rounds.from_json(values["rounds"])
        self._unclipped_fraction = values["unclipped_fraction"]
        self.strategy.restore(StrategyState(values["strategy"], state.tensors))

    def __repr__(self) -> str:
        return (
            f"DPFedAvg(noise_multiplier={self.noise_multiplier!r}, clip_norm={self.clip_norm!r}, "
            f"strategy={self.strategy!r}, delta={self.delta!r}, target_epsilon={self.target_epsilon!r}, "
            f"target_quantile={self.target_quantile!r})"
        )


class NoisySum:
    """Clips each reply (unweighted), keeps its saved copy's view; at the close, the noisy sum
    over the cohort size, one tensor at a time, added to the global model. Only the model's
    floating-point tensors are released: optimizer state and non-float tensors stay the global's
    (they would leak unnoised)."""

    def __init__(
        self,
        context: RoundContext,
        clip_norm: float,
        noise_multiplier: float,
        mechanism: RoundMechanism,
        seed: tuple[int, ...],
        count_unclipped: bool,
    ) -> None:
        self.context, self.clip_norm, self.noise_multiplier = context, clip_norm, noise_multiplier
        self.mechanism, self.seed, self.count_unclipped = mechanism, seed, count_unclipped
        self._replies: list[Reply] = []
        self._digests: dict[str, bytes] = {}
        self._unclipped = 0

    def add(self, reply: Reply) -> None:
        clipped, _ = clip_reply(reply, self.context.global_model, self.clip_norm)
        self._unclipped += clipped is reply
        self._digests[reply.collaborator] = reply_digest(reply)
        self._replies.append(replace(clipped, update=clipped.kept, stored=None))

    def included(self) -> int:
        """The digest of the set of replies included (their names and update digests, in any
        order), as a number: the part of the noise's seed that changes with the set."""
        h = hashlib.blake2b(digest_size=16)
        for name in sorted(self._digests):
            h.update(hashlib.blake2b(name.encode()).digest())
            h.update(self._digests[name])
        return int.from_bytes(h.digest(), "little")

    def result(self) -> Aggregate:
        """The noisy mean; the same noise however often it is taken over the same replies (the
        generator is the round's and the included set's), fresh noise over another set."""
        rng = np.random.default_rng([*self.seed, self.included()])
        noisy_unclipped = None
        if self.count_unclipped:
            noisy_unclipped = self._unclipped + float(rng.normal(0.0, self.mechanism.noise_multipliers[1]))
        cohort = max(self.mechanism.sample_size, 1)
        std = self.noise_multiplier * self.clip_norm
        model = dict(self.context.global_model)
        for name, reference in self.context.global_model.items():
            if not normed(name, reference):
                continue
            ref = flat(reference)
            total = rng.normal(0.0, std, ref.size) if std > 0 else np.zeros(ref.size)
            for reply in self._replies:
                values, factor = source(reply.update, name)
                for part in blocks(ref.size):
                    total[part] += factor * change_of(values[part], reply.is_delta, ref[part])
            total /= cohort
            total += ref
            model[name] = total.astype(reference.dtype).reshape(reference.shape)
        return NoisyAggregate(model, [], noisy_unclipped)


def reply_digest(reply: Reply) -> bytes:
    """A digest of ``reply``'s update as it arrived: each tensor's name, dtype, shape and bytes."""
    h = hashlib.blake2b(digest_size=32)
    h.update(b"delta" if reply.is_delta else b"model")
    for name in sorted(reply.update):
        values = np.ascontiguousarray(reply.update[name])
        h.update(f"{name}\0{values.dtype.str}\0{values.shape}\0".encode())
        h.update(values)  # type: ignore[arg-type]  # a contiguous buffer
    return h.digest()
