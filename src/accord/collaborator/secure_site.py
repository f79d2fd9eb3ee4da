"""This site's side of secure aggregation (strategies/secure.py is the aggregator's): one
SiteSession (accord.secagg.site) per round, driven by the phase payloads the aggregator sends.

The training reply is masked after the client mods ran (ClipUpdate clips the change first),
as the last step before it leaves the site. The unmask reply carries, beside the reveals, the
site's correction (``tensors``: its pair masks with the neighbours named dropped, summed), so
the aggregator need not expand those masks from the dropped sites' rebuilt mask keys. The site
reveals at most once per round, whatever
the round's seed: an aggregator that restarts a round's phases cannot get a second set of
reveals for the same update (docs/privacy.md, "Running it"). That memory, and the seeds it
advertised under, are kept in the site's state folder (``save/site-NAME/secagg.json``, 0600,
written before each advert and reveal leaves), so a restarted site keeps refusing.

With ``signing`` (the deployment: ``site_signing``, over the site's own collaborator key and
certificate and the federation's CA) the site signs its advert, checks its neighbours' and
answers ``confirm``, the consistency check, revealing only after the threshold of valid
survivor signatures on the lists it confirmed (accord.secagg.signing).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from accord.dp.ledger import Ledger
from accord.errors import RefusedError
from accord.messages import TaskResult
from accord.plan.aggregator_settings import SecureAggregationSettings
from accord.plan.secure_aggregation import secagg_params, threshold_floor
from accord.strategies.secure_phases import (
    ADVERTISE,
    CONFIRM,
    CORRECTION,
    MASKED,
    MASKED_DTYPE,
    SHARE,
    UNMASK,
    decode_entries,
    decode_opening,
    decode_request,
    encode_entries,
    flatten_change,
    update_length,
)
from accord.tensors.state import ModelState

if TYPE_CHECKING:
    from accord.secagg.signing import Signing
    from accord.secagg.site import SiteSession

log = logging.getLogger("accord.collaborator")

#: the file in a site's state folder (dp/ledger.py SITE_STATE) where this memory is kept
SECURE_STATE = "secagg.json"


class SecureSite:
    """Answers secure aggregation's phases for the site ``name`` under its own plan's ``settings``
    (signed with ``signing``, if given). ``expected_cohort``: how many sites its own plan expects
    a round to ask; it refuses a round whose threshold would fall below that cohort's
    (plan.secure_aggregation.threshold_floor), whatever cohort the aggregator names."""

    def __init__(
        self,
        name: str,
        settings: SecureAggregationSettings,
        signing: Signing | None = None,
        expected_cohort: int = 0,
        state: Path | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.signing = signing
        self.floor = threshold_floor(settings, expected_cohort)
        #: the seeds advertised under and the reveals made, recorded before each reply leaves:
        #: in ``state`` (the site's state folder, 0600) so they survive a restart, else in memory
        self._ledger = Ledger(state)
        rows = self._ledger.rows
        #: every round seed this site advertised under: a seed is never reused (signed statements
        #: bind the seed, so a reused one would let old signatures count in a new session)
        self._seeds: set[bytes] = {bytes.fromhex(row["seed"]) for row in rows if "round" not in row}
        self._session: SiteSession | None = None
        self._round = -1
        #: the session's cohort in name order (decode_opening's): the payloads' indexed maps are over it
        self._cohort: list[str] = []
        #: round -> the seed of the session that revealed in it (the only one that may answer
        #: again: a retry of the same request, which the session answers the same)
        self._revealed: dict[int, bytes] = {int(row["round"]): bytes.fromhex(row["seed"]) for row in rows if "round" in row}

    def answer(self, phase: str, round_number: int, payload: bytes, global_model: ModelState) -> bytes:
        """This site's reply to ``phase`` (advertise, share, confirm or unmask) of ``round_number``;
        RefusedError (a SecAggRefused) if the request is malformed, out of order or unsafe."""
        if phase == ADVERTISE:
            return self._open(round_number, payload, global_model)
        session = self._current(round_number, phase)
        if phase == SHARE:
            return encode_entries(session.share(decode_entries(payload, self._cohort, "the roster")), self._cohort)
        if phase == CONFIRM:
            survivors, dropped, _ = decode_request(payload)
            return session.confirm(survivors, dropped)
        if phase == UNMASK:
            if self._revealed.get(round_number, session.round_seed) != session.round_seed:
                raise RefusedError(
                    f"the aggregator asks this site to reveal shares for round {round_number} again, in a new "
                    "session of the round: it reveals in one session a round",
                    "nothing to do at the site; the aggregator's operator should check why it restarted the round",
                    kind="payload",
                )
            survivors, dropped, confirmations = decode_request(payload)
            reveals = session.unmask(survivors, dropped, confirmations)
            if round_number not in self._revealed:  # recorded before the reveals leave
                self._ledger.add({"round": round_number, "seed": session.round_seed.hex()})
                self._revealed[round_number] = session.round_seed
            log.info("%s: round %d: revealed shares for %d survivors and %d dropped sites", self.name, round_number, len(survivors), len(dropped))
            return encode_entries(reveals, self._cohort)
        raise RefusedError(f"phase {phase!r} carries no reply of its own", kind="payload")

    def tensors(self, phase: str, round_number: int) -> ModelState | None:
        """The tensors of this site's reply to ``phase`` of ``round_number``, after ``answer``: in
        a signing session's ``unmask`` its correction (CORRECTION, for the lists it revealed for),
        else None (an unsigned session sends none: SiteSession.correction)."""
        if phase != UNMASK:
            return None
        session = self._current(round_number, phase)
        return None if session.signing is None else {CORRECTION: session.correction().view(MASKED_DTYPE)}

    def masked(self, reply: TaskResult, payload: bytes, global_model: ModelState) -> TaskResult:
        """The training ``reply`` with its change masked (the one tensor MASKED), given the shares
        routed to this site (``payload``); RefusedError if they are malformed."""
        assert reply.tensors is not None
        session = self._current(reply.round_number, "mask")
        change = flatten_change(reply.tensors, global_model, reply.is_delta)
        vector = session.mask(decode_entries(payload, self._cohort, "the shares routed to this site"), change, int(reply.sample_count))
        for sender, why in session.skipped.items():
            log.warning("%s: round %d: skipped the share from %s (%s)", self.name, reply.round_number, sender, why)
        return dataclasses.replace(reply, tensors={MASKED: vector.view(MASKED_DTYPE)}, is_delta=False)

    def _open(self, round_number: int, payload: bytes, global_model: ModelState) -> bytes:
        from accord.secagg.site import SiteSession  # cryptography and MPyC: accord[secagg]

        seed, cohort = decode_opening(payload)
        if self.name not in cohort:
            raise RefusedError(f"the aggregator asks {self.name} to advertise in a round whose cohort omits it", kind="payload")
        current = self._session
        if current is not None and (self._round, current.round_seed, current.cohort) == (round_number, seed, frozenset(cohort)):
            return current.advertise()  # a retry of the same request
        if seed in self._seeds:
            raise RefusedError(
                f"the aggregator opens a secure round {round_number} with a round seed this site already advertised under",
                "an aggregator draws a fresh seed for every session; its operator should check it",
                kind="payload",
            )
        if len(cohort) < self.floor:
            raise RefusedError(
                f"the aggregator names a secure cohort of {len(cohort)} sites for round {round_number}, fewer than the "
                f"threshold {self.floor} this site's own plan sets (its threshold, or the default for the cohort its "
                "sampling of its collaborators list asks)",
                "the aggregator must ask the cohort the plan samples; check that its collaborators list is the sites'",
                kind="payload",
            )
        derived = secagg_params(self.settings, len(cohort))
        params = dataclasses.replace(derived, threshold=max(derived.threshold, self.floor))
        session = SiteSession(params, self.name, cohort, seed, update_length(global_model), signing=self.signing)
        self._ledger.add({"seed": seed.hex()})  # recorded before the advert leaves
        self._seeds.add(seed)
        self._session, self._round, self._cohort = session, round_number, cohort
        return session.advertise()

    def _current(self, round_number: int, phase: str) -> SiteSession:
        if self._session is None or self._round != round_number:
            raise RefusedError(
                f"the aggregator asks for phase {phase!r} of round {round_number}, but this site advertised in no such round",
                kind="state",
            )
        return self._session


def site_signing(cert_dir: str | os.PathLike[str], name: str) -> Signing:
    """The signing of collaborator ``name``: its own key and certificate in ``cert_dir``, and a
    check of the other sites' certificates against the federation's chain there and its
    installed revocation list (cert/crl.pem, read once: a CRL installed later counts from the
    next start). PKIError naming the file if one is missing."""
    from accord.pki.crl import installed_crl
    from accord.pki.keys import load_private_key, read_pem_bytes
    from accord.pki.layout import CertLayout, collaborator_fix
    from accord.pki.signatures import CollaboratorVerifier, signer_for
    from accord.secagg.signing import Signing

    layout = CertLayout(cert_dir)
    certificate = read_pem_bytes(layout.collaborator_cert(name), "collaborator certificate", collaborator_fix(name))
    crl = installed_crl(layout.cert_dir)
    serials = crl.serials if crl is not None else frozenset()
    verifier = CollaboratorVerifier(layout.chain, lambda: serials)
    return Signing(certificate, signer_for(load_private_key(layout.collaborator_key(name))), verifier)
