"""SecureAggregation: a FedAvg-family strategy whose rounds run SecAgg+ as phases, so the
aggregator only ever sees the sum of the cohort's weighted updates (docs/privacy.md).

Each training round has four phases (strategies/secure_phases.py): ``advertise`` (each site's
two public keys), ``share`` (its secrets' sealed shares for its neighbours, routed by the
aggregator), ``mask`` (the round's tasks: the training reply is the masked, fixed-point update
with its weight inside) and ``unmask`` (the survivors' reveals, each with its correction: its
pair masks with the dropped, summed, which the unmasking subtracts). With ``verify`` (the
deployment: a check of a named site's signature against its certificate and the federation's
CA) the round is signed: adverts carry each site's certificate and signature, and a fifth
phase, ``confirm``, before ``unmask`` collects the survivors' signatures on the survivor list
(accord.secagg.signing). The engine owns who owes what
in each phase and each phase's deadline; the wrapped strategy steps from the unmasked mean
(FedAvgM's and FedAdam's server optimizers included). Robust strategies, which need every
update on its own, are refused.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import numpy as np

from accord.aggregation.bounds import BoundEvent
from accord.errors import PlanError, RefusedError
from accord.plan.aggregator_settings import SecureAggregationSettings
from accord.plan.secure_aggregation import secagg_params
from accord.secagg.messages import decode_map, encode_map
from accord.secagg.params import SecAggParams
from accord.secagg.signing import Verifier
from accord.strategies.base import Strategy
from accord.strategies.seam import Aggregate, RoundContext, RoundPhases
from accord.strategies.secure_phases import (
    ADVERTISE,
    CONFIRM,
    CORRECTION,
    MASK,
    MASKED,
    MASKED_DTYPE,
    PHASES,
    SEED_BYTES,
    SHARE,
    SIGNED_PHASES,
    UNMASK,
    apply_mean_change,
    decode_entries,
    encode_entries,
    encode_opening,
    encode_request,
    update_length,
)
from accord.strategies.wrapper import Wrapper
from accord.tensors.state import ModelState

if TYPE_CHECKING:
    from accord.secagg.server import MaskTotal

#: who a held round's event names (SecurePhases.result)
HELD_BY = "secure aggregation"


class SecureAggregation(Wrapper):
    """Wraps ``strategy`` (FedAvg, FedProx, FedAvgM, FedAdam...): its cohort, config, minimum
    replies and server step, over the mean SecAgg+ unmasks. ``entropy(n)`` draws each round's
    seed (the OS's by default; a restarted round draws a fresh one). ``verify`` signs the rounds
    (see the module docstring; the deployment's aggregator sets it, aggregator/serve.py)."""

    def __init__(
        self,
        strategy: Strategy,
        settings: SecureAggregationSettings,
        entropy: Callable[[int], bytes] = secrets.token_bytes,
        verify: Verifier | None = None,
    ) -> None:
        if strategy.needs_individual_updates:
            name = type(strategy).__name__
            raise PlanError(
                f"strategy {name} needs each site's update on its own, but secure aggregation reveals only their sum",
                f"choose a FedAvg-family strategy (FedAvg, FedProx, FedAvgM, FedAdam...) or set "
                f"aggregator.settings.secure_aggregation.enabled: false to keep {name}",
            )
        super().__init__(strategy)
        self.settings = settings
        self.entropy = entropy
        self.verify = verify
        #: how the unmasking expands and sums its masks (None: ServerSession's default, in this
        #: process; the aggregator's runtime sets a process pool's, aggregator/mask_pool.py)
        self.mask_total: MaskTotal | None = None

    def min_replies(self, cohort_size: int) -> int:
        """The wrapped strategy's, or the SecAgg+ threshold if more (every phase needs it)."""
        return max(self.strategy.min_replies(cohort_size), secagg_params(self.settings, cohort_size).threshold)

    def finish(self, context: RoundContext, aggregate: Aggregate) -> ModelState:
        """The wrapped strategy's step; none in a held round (SecurePhases.result): the global
        model and the server optimizer's state stay as they were."""
        if any(event.kind == "held" and event.collaborator == HELD_BY for event in aggregate.events):
            return dict(context.global_model)
        return self.strategy.finish(context, aggregate)

    def phased(self, context: RoundContext) -> RoundPhases:
        params = secagg_params(self.settings, len(context.cohort))
        return SecurePhases(context, params, self.entropy(SEED_BYTES), self.verify, self.mask_total)


def signed(strategy: Strategy, verify: Verifier) -> Strategy:
    """``strategy`` with its secure rounds signed under ``verify`` (a SecureAggregation; any
    other strategy is returned as it is: it has no secure rounds)."""
    if isinstance(strategy, SecureAggregation):
        strategy.verify = verify
    return strategy


class SecurePhases:
    """One round's SecAgg+ phases over the ServerSession (accord.secagg.server): it routes the
    sites' bytes and folds each masked update into a running sum (O(model) per result)."""

    names: tuple[str, ...] = PHASES
    tasks_phase: str = MASK

    def __init__(
        self, context: RoundContext, params: SecAggParams, seed: bytes, verify: Verifier | None = None, mask_total: MaskTotal | None = None
    ) -> None:
        from accord.secagg.server import ServerSession  # cryptography and MPyC: accord[secagg]

        self.context = context
        self.threshold = params.threshold
        self.length = update_length(context.global_model)
        #: the cohort in name order, as the sites get it: the payloads' indexed maps are over it
        self._cohort = sorted(context.cohort)
        hooks = {} if mask_total is None else {"mask_total": mask_total}
        self._session: Callable[[bytes], ServerSession] = lambda seed: ServerSession(params, context.cohort, seed, self.length, verify=verify, **hooks)
        self.signed = verify is not None
        if self.signed:
            self.names = SIGNED_PHASES
        self._roster = b""
        self._request = b""
        self._open(seed)

    def _open(self, seed: bytes) -> None:
        self.seed = seed
        self.session = self._session(seed)
        self._opening = encode_opening(seed, self.context.cohort)

    def checkpoint(self, phase: str) -> bytes | None:
        """From ``unmask`` on, the seed and the session's checkpoint: a restarted aggregator
        takes the same round's reveals (a site answers the same request again) rather than
        opening a new session, which the sites that revealed would refuse."""
        if phase != UNMASK:
            return None
        return encode_map({"seed": self.seed, "session": self.session.checkpoint()})

    def resume(self, phase: str, state: bytes) -> None:
        if phase != UNMASK:
            raise RefusedError(f"a secure round resumes at phase {UNMASK!r}, not {phase[:32]!r}", kind="state")
        parts = decode_map(state, "the secure round's checkpoint", max_entries=2, max_value=len(state))
        if sorted(parts) != ["seed", "session"] or len(parts["seed"]) != SEED_BYTES:
            raise RefusedError("the secure round's checkpoint is malformed", kind="state")
        self._open(parts["seed"])
        self.session.resume(parts["session"])

    def begin(self, phase: str, members: tuple[str, ...]) -> None:
        if phase == SHARE:
            self._roster = encode_entries(self.session.roster(), self._cohort)
        elif phase == CONFIRM:
            self._request = encode_request(*self.session.unmask_request())
        elif phase == UNMASK:
            confirmations = self.session.confirmations() if self.signed else None
            self._request = encode_request(*self.session.unmask_request(), confirmations)

    def min_replies(self, phase: str, members: int) -> int:
        return self.threshold

    def can_close(self, phase: str) -> bool:
        """The unmask phase ends only once the session can unmask (ServerSession.ready: every
        survivor's self-mask seed, and each dropped site's mask-key seed that an uncorrected
        pair still needs, has its share threshold of reveals)."""
        return phase != UNMASK or self.session.ready

    def excused(self, phase: str) -> Mapping[str, str]:
        """In the unmask phase, the sites whose reveals the session excluded (a wrong share)."""
        return self.session.excluded if phase == UNMASK else {}

    def payload(self, phase: str, collaborator: str) -> bytes:
        if phase == ADVERTISE:
            return self._opening
        if phase == SHARE:
            return self._roster
        if phase == MASK:
            return encode_entries(self.session.shares_for(collaborator), self._cohort)
        return self._request

    def tensor_specs(self, phase: str) -> Mapping[str, tuple[str, tuple[int, ...]]]:
        """``mask``: the masked update; a signed round's ``unmask``: the correction beside the
        reveals (an unsigned session takes none: SiteSession.correction); else none."""
        ring = (MASKED_DTYPE, (self.length + 1,))
        return {MASKED: ring} if phase == MASK else {CORRECTION: ring} if phase == UNMASK and self.signed else {}

    def take(self, phase: str, collaborator: str, payload: bytes, tensors: Mapping[str, np.ndarray] | None, weight: float) -> None:
        if phase == ADVERTISE:
            self.session.add_advert(collaborator, payload)
        elif phase == SHARE:
            self.session.add_shares(collaborator, decode_entries(payload, self._cohort, f"the shares of {collaborator}"))
        elif phase == CONFIRM:
            self.session.add_confirmation(collaborator, payload)
        elif phase == MASK:
            if tensors is None or set(tensors) != {MASKED} or payload:
                raise RefusedError(
                    f"the masked update of {collaborator} must be the one tensor {MASKED!r} and no payload",
                    kind="payload",
                )
            if not float(weight).is_integer():
                raise RefusedError(f"the masked update of {collaborator} declares {weight!r} samples, not a whole number", kind="payload")
            self.session.add_masked(collaborator, np.asarray(tensors[MASKED]).view(np.uint64), int(weight))
        else:
            if tensors and set(tensors) != {CORRECTION}:
                raise RefusedError(f"the unmask reply of {collaborator} may carry the one tensor {CORRECTION!r} only", kind="payload")
            correction = np.asarray(tensors[CORRECTION]).view(np.uint64) if tensors else None
            self.session.add_reveal(collaborator, decode_entries(payload, self._cohort, f"the reveals of {collaborator}"), correction)

    def result(self) -> Aggregate:
        """The unmasked mean change on the global model. When the sum fails a check (the total
        weight is not the survivors' declared sample counts, a value of the mean lies beyond the
        clip, a dealer's inconsistent shares) the round is held: the global model, with a
        ``held`` event naming the check, which SecureAggregation.finish does not step from."""
        try:
            weighted_sum, total_weight = self.session.result()
        except RefusedError as exc:
            detail = f"round {self.context.round_number} held, the global model unchanged: {exc.message}"
            return Aggregate(dict(self.context.global_model), [BoundEvent(HELD_BY, "held", 0.0, 0.0, detail)])
        return Aggregate(apply_mean_change(self.context.global_model, weighted_sum / total_weight))
