"""ServerSession: the aggregator's side of a SecAgg+ round (pure: it only routes and sums).

Phase by phase: ``add_advert`` until ``roster()`` closes the adverts; ``add_shares`` until the
first ``shares_for`` closes the sharing; ``add_masked`` (a running sum in Z_{2^64}, O(model) per
result) until ``unmask_request()`` closes the masking; in a signed round, ``add_confirmation``
until ``confirmations()`` closes the consistency check; ``add_reveal`` until ``result()``. Sites
may drop at every phase: one that advertised but did not share is left out of every mask (no
site got its shares, so none masked with it), one that shared but did not mask has its pairwise
masks removed: by the correction each surviving neighbour sends with its reveals, and, for a
neighbour that sent none, expanded from its mask-key seed rebuilt from its neighbours' shares
(secagg/unmasking.py); one that masked but did not reveal still has its self mask removed from
its neighbours' shares of its seed b. Every
reveal is checked against the commitment its owner sent with the share (crypto.commit_share): a
site revealing a wrong share is refused, named in ``excluded`` and none of its reveals is used,
so one lying site can neither hold the round nor make it wrong while honest reveals suffice.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from accord.secagg import crypto, encoding, shamir
from accord.secagg.graph import Neighbourhood
from accord.secagg.messages import (
    REVEAL_BYTES,
    SECRET_MASK_KEY,
    SECRET_SELF,
    Advert,
    SecAggRefused,
    all_sealed,
    decode_confirmation,
    decode_map,
    decode_reveal,
    decode_sealed,
    encode_map,
    encode_reveal,
    is_sealed,
    joined_reveals,
    read_advert,
    reveal_body,
    revealed_shares,
    sealed_commitment,
    sealed_commitments,
)
from accord.secagg.params import SecAggParams, check_session
from accord.secagg.signing import Verifier, check_advert, roster_digest, survivors_statement
from accord.secagg.unmasked import check_clip, check_mask_key, check_weight
from accord.secagg.unmasking import Unmasking

_ADVERTS, _SHARES, _MASKS, _CONFIRMS, _REVEALS, _DONE = range(6)
#: the masks the unmasking takes out, summed (crypto.mask_total's signature)
MaskTotal = Callable[[bytes, int, Sequence[bytes], Sequence[crypto.DroppedPair]], np.ndarray]
_PHASES = ("taking adverts", "taking shares", "taking masked updates", "taking confirmations", "taking reveals", "finished")


def _revealed(site: str, owner: str) -> str:
    return f"the reveal by {site!r} of a share of {owner!r}"


class ServerSession:
    """The aggregator's state for one SecAgg+ round over ``cohort`` (see SiteSession for the rest).

    With ``verify`` (a signed federation) it refuses adverts and confirmations that are not
    signed by a valid certificate of their sender, so one lying site cannot make the honest
    sites refuse the round; the sites check them again (they trust no aggregator).
    The unmasking's secrets (one per survivor, and per dropped site whose pair masks some
    survivor did not correct) are rebuilt in one batch (shamir.combine_all); ``mask_total``
    then expands the masks they seed and sums them:
    crypto.mask_total in this process by default, a process pool's in the aggregator's runtime
    (aggregator/mask_pool.py).
    """

    def __init__(
        self,
        params: SecAggParams,
        cohort: Sequence[str],
        round_seed: bytes,
        length: int,
        *,
        verify: Verifier | None = None,
        mask_total: MaskTotal = crypto.mask_total,
    ) -> None:
        self.params = params
        self._mask_total = mask_total
        self.cohort = frozenset(check_session(params, cohort, round_seed, length))
        self.round_seed, self.length = round_seed, length
        self._phase = _ADVERTS
        self._adverts: dict[str, bytes] = {}
        self._keys: dict[bytes, str] = {}
        #: a throwaway key, one per session: an advertised low-order point fails the exchange with it
        self._probe = crypto.X25519PrivateKey.generate()
        self._parsed: dict[str, Advert] = {}
        self._graph: Neighbourhood | None = None
        self._digest = b""
        #: holder -> owner -> (the index it holds, the owner's sealed share to it, checked in
        #: ``add_shares``: the reveals are checked against its two commitments)
        self._held: dict[str, dict[str, tuple[int, bytes]]] = {}
        self._sharers: set[str] = set()
        #: dealer -> its part of every commitment to its shares (crypto.commit_dealer)
        self._dealers: dict[str, bytes] = {}
        self._sum = np.zeros(length + 1, dtype=np.uint64)
        self._masked: set[str] = set()
        self._declared: dict[str, int] = {}
        self._request: tuple[list[str], list[str]] | None = None
        self._statement = b""
        self._verify = verify
        self._credentials: dict[str, bytes] = {}
        self._confirmations: dict[str, bytes] = {}
        self._revealers: set[str] = set()
        self._unmasking: Unmasking | None = None
        #: site -> why its reveals were refused (one did not match its owner's commitment)
        self.excluded: dict[str, str] = {}
        self._result: tuple[np.ndarray, float] | None = None

    def _expect(self, phase: int, site: str, step: str) -> None:
        if self._phase != phase:
            raise SecAggRefused(
                f"{step} from {site!r} refused: this SecAgg round is {_PHASES[self._phase]}, not {_PHASES[phase]}",
                "send each SecAgg message in its phase; a late one is not taken",
                kind="state",
            )

    def _member(self, site: str, members: set[str] | frozenset[str] | Mapping[str, object], what: str) -> None:
        if site not in members:
            raise SecAggRefused(f"site {site!r} is not {what} in this SecAgg round", "only the sites of each phase take part in the next", kind="state")

    def add_advert(self, site: str, advert: bytes) -> None:
        """Take ``site``'s advert (once; refused after ``roster()``, or from outside the cohort)."""
        if self._adverts.get(site) == advert:
            return
        self._expect(_ADVERTS, site, "an advert")
        self._member(site, self.cohort, "in the cohort")
        if site in self._adverts:
            raise SecAggRefused(f"site {site!r} already advertised other keys this round", "advertise once per round")
        signed = read_advert(advert, f"the advert of {site!r}") if self._verify is None else check_advert(self._verify, self.round_seed, site, advert)
        parsed = signed.advert
        for name, key in (("c_pk", parsed.c_pk), ("s_pk", parsed.s_pk)):
            crypto.agree(self._probe, key, f"the {name} in the advert of {site!r}")
        reused = [self._keys[key] for key in (parsed.c_pk, parsed.s_pk) if key in self._keys]
        if reused or parsed.c_pk == parsed.s_pk:
            raise SecAggRefused(f"site {site!r} advertises keys already advertised (by {reused[:1]})", "each site draws fresh keys each round")
        self._adverts[site], self._parsed[site], self._credentials[site] = bytes(advert), parsed, signed.credential
        self._keys[parsed.c_pk] = self._keys[parsed.s_pk] = site

    def roster(self) -> dict[str, bytes]:
        """Close the adverts: every advertised site's advert (refused below the threshold)."""
        if self._phase == _ADVERTS:
            self._at_least(len(self._adverts), "advertised")
            self._graph = Neighbourhood(self.params, self._adverts, self.round_seed, len(self.cohort))
            self._digest = roster_digest(self._parsed)  # what the survivors' confirmations sign
            self._held = {site: {} for site in self._adverts}
            self._dealers = {site: crypto.commit_dealer(site) for site in self._adverts}
            self._phase = _SHARES
        return dict(self._adverts)

    def add_shares(self, site: str, sealed: Mapping[str, bytes]) -> None:
        """Take ``site``'s sealed shares (one per neighbour of it, exactly; once; refused after the
        first ``shares_for``)."""
        self._expect(_SHARES, site, "shares")
        self._member(site, self._adverts, "advertised")
        graph = self._graph
        assert graph is not None
        if not isinstance(sealed, Mapping) or set(sealed) != set(graph.of(site)):
            raise SecAggRefused(
                f"the shares from {site!r} are not addressed to exactly its {graph.degree} neighbours",
                "send the dictionary SiteSession.share returned, unchanged",
            )
        values: Mapping[str, bytes] = sealed
        if not all_sealed(sealed.values()):  # the common case in a few C-level steps; the rest one by one
            values = {}
            for peer, data in sealed.items():
                if not is_sealed(data):  # parsed, or refused by name
                    decode_sealed(data, f"the sealed share from {site!r} to {peer!r}")
                    data = bytes(data)
                values[peer] = data
        held = self._held
        if site in self._sharers:
            if all(held[peer][site][1] == data for peer, data in values.items()):
                return
            raise SecAggRefused(f"site {site!r} already sent other shares this round", "share once per round")
        for index, peer in enumerate(graph.of(site), 1):  # the neighbour at position i holds index i + 1
            held[peer][site] = (index, values[peer])
        self._sharers.add(site)

    def shares_for(self, site: str) -> dict[str, bytes]:
        """The sealed shares addressed to ``site`` (sender -> bytes); the first call closes sharing.

        Refused for a site that did not share, or when fewer than the threshold shared.
        """
        if self._phase == _SHARES:
            self._at_least(len(self._sharers), "shared")
            self._phase = _MASKS
        self._member(site, self._sharers, "one of the sites that shared")
        return {sender: sealed for sender, (_, sealed) in self._held[site].items()}

    def add_masked(self, site: str, masked: np.ndarray, weight: int | None = None) -> None:
        """Fold ``site``'s masked vector (uint64, length + 1) into the running sum (once; only
        from a site that shared; refused after ``unmask_request()``). ``weight``: the sample count
        the site declared in the clear, in [1, max_weight]; when every survivor declared one,
        ``result()`` checks the unmasked total weight against their sum."""
        self._expect(_MASKS, site, "a masked update")
        self._member(site, self._sharers, "one of the sites that shared")
        if site in self._masked:
            raise SecAggRefused(f"site {site!r} already sent its masked update this round", "send it once per round", kind="state")
        self._check_vector(masked, f"the masked update from {site!r}", "send the vector SiteSession.mask returned")
        if weight is not None:
            if isinstance(weight, bool) or not isinstance(weight, int) or not 1 <= weight <= self.params.max_weight:
                raise SecAggRefused(
                    f"the masked update from {site!r} declares weight {weight!r}; it must be an integer in [1, {self.params.max_weight}]",
                    "declare the site's sample count, at most the plan's max_weight",
                )
            self._declared[site] = weight
        self._sum += masked
        self._masked.add(site)

    def unmask_request(self) -> tuple[list[str], list[str]]:
        """Close the masking: (survivors: the sites that masked, dropped: shared but did not mask).
        Refused below the threshold. The same answer on every call."""
        if self._request is None:
            self._at_least(len(self._masked), "sent masked updates")
            self._request = (sorted(self._masked), sorted(self._sharers - self._masked))
            self._statement = survivors_statement(self.round_seed, self._digest, *self._request)  # what confirmations sign
            assert self._graph is not None
            self._unmasking = Unmasking(self._graph.share_threshold, *self._request, self._held, self.length)
            self._phase = _CONFIRMS
        return list(self._request[0]), list(self._request[1])

    def add_confirmation(self, site: str, confirmation: bytes) -> None:
        """Take a survivor's confirmation of the unmask request (once; refused after
        ``confirmations()``; with ``verify``, refused unless it is the site's valid signature)."""
        if self._confirmations.get(site) == confirmation:
            return
        self._expect(_CONFIRMS, site, "a confirmation")
        self._member(site, self._masked, "a survivor")
        if site in self._confirmations:
            raise SecAggRefused(f"site {site!r} already sent another confirmation this round", "confirm once per round", kind="state")
        signature = decode_confirmation(confirmation, f"the confirmation of {site!r}")
        if self._verify is not None and not self._verify(site, self._credentials[site], self._statement, signature):
            raise SecAggRefused(
                f"the confirmation of {site!r} is not its valid signature on this round's survivor list",
                "send the confirmation SiteSession.confirm returned, unchanged",
            )
        self._confirmations[site] = bytes(confirmation)

    def confirmations(self) -> dict[str, bytes]:
        """Close the consistency check: the survivors' confirmations (site -> message), which the
        unmask request carries. Refused below the threshold. The same answer on every call."""
        if self._phase == _CONFIRMS:
            self._at_least(len(self._confirmations), "confirmed the survivor list")
            self._phase = _REVEALS
        if self._phase < _CONFIRMS:
            self._expect(_CONFIRMS, "the aggregator", "closing the consistency check")
        return dict(self._confirmations)

    def checkpoint(self) -> bytes:
        """What a restarted aggregator needs to take this round's reveals (after
        ``unmask_request()``): the adverts, the sealed shares, the masked sum and weights, the
        confirmations. No secret of a site: the shares are sealed to their holders."""
        assert self._request is not None, "a checkpoint is taken once the masking closed"
        by_sharer = {site: encode_map({peer: held[site][1] for peer, held in self._held.items() if site in held}) for site in self._sharers}
        weights = {site: struct.pack(">Q", self._declared.get(site, 0)) for site in self._masked}
        return encode_map({
            "adverts": encode_map(self._adverts), "confirmations": encode_map(self._confirmations),
            "masked": encode_map(weights), "shares": encode_map(by_sharer), "sum": self._sum.tobytes(),
        })

    def resume(self, checkpoint: bytes) -> None:
        """Take a fresh session (same params, cohort, seed, length) to where ``checkpoint`` was
        taken, replaying its adverts, shares and confirmations through the checks above."""
        self._expect(_ADVERTS, "the aggregator", "resuming from a checkpoint")
        what = "the secure round's checkpoint"
        parts = decode_map(checkpoint, what, max_entries=5, max_value=len(checkpoint))
        if sorted(parts) != ["adverts", "confirmations", "masked", "shares", "sum"] or len(parts["sum"]) != 8 * (self.length + 1):
            raise SecAggRefused(f"{what} is malformed", "remove it: the round's secure phases then run again with a fresh seed")
        for site, advert in decode_map(parts["adverts"], what, max_value=len(checkpoint)).items():
            self.add_advert(site, advert)
        self.roster()
        for site, sealed in decode_map(parts["shares"], what, max_value=len(checkpoint)).items():
            self.add_shares(site, decode_map(sealed, what, max_value=len(sealed)))
        if self._sharers:
            self.shares_for(min(self._sharers))
        for site, weight in decode_map(parts["masked"], what, max_value=8).items():
            self._member(site, self._sharers, "one of the sites that shared")
            (declared,) = struct.unpack(">Q", weight)
            if declared:
                self._declared[site] = declared
            self._masked.add(site)
        self._sum = np.frombuffer(parts["sum"], dtype=np.uint64).copy()
        self.unmask_request()
        confirmations = decode_map(parts["confirmations"], what, max_value=len(checkpoint))
        for site, confirmation in confirmations.items():
            self.add_confirmation(site, confirmation)
        if confirmations:
            self.confirmations()

    def add_reveal(self, site: str, reveals: Mapping[str, bytes], correction: np.ndarray | None = None) -> None:
        """Take a surviving ``site``'s reveals (owner -> reveal bytes) and, with them, its
        ``correction`` (SiteSession.correction: uint64, length + 1; signed sessions only; None: it
        sent none, and its pairs with the dropped are expanded from their rebuilt mask keys). Once; refused after
        ``result()``. Each reveal must be the share kind asked for, at the index ``site`` holds;
        nothing is taken from a reply refused. An unsigned round takes reveals right after
        ``unmask_request()``."""
        if self._phase == _CONFIRMS and self._verify is None and not self._confirmations:
            self._phase = _REVEALS
        self._expect(_REVEALS, site, "reveals")
        self._member(site, self._masked, "a survivor")
        if site in self.excluded:
            raise SecAggRefused(self.excluded[site], "this site's reveals are not used this round", kind="state")
        if site in self._revealers:
            raise SecAggRefused(
                f"site {site!r} already sent its reveals and correction this round", "send them, together, once per round", kind="state"
            )
        graph, fix = self._graph, "send the dictionary SiteSession.unmask returned, unchanged"
        assert graph is not None and self._unmasking is not None
        if correction is not None:
            if self._verify is None:  # without the consistency check a correction could leak a pair mask (site.py correction)
                raise SecAggRefused(
                    f"the reveals from {site!r} come with a correction, but this session is unsigned: it takes none",
                    "send corrections only in signed sessions (SiteSession.correction refuses in an unsigned one)",
                )
            self._check_vector(correction, f"the correction from {site!r}", "send the vector SiteSession.correction returned")
        if not isinstance(reveals, Mapping):
            raise SecAggRefused(f"the reveals from {site!r} are not a mapping of site names to reveals", fix)
        survivors, dropped = self._request if self._request is not None else ([], [])
        if not reveals and any(owner in self._held.get(site, {}) for owner in (*survivors, *dropped)):
            raise SecAggRefused(f"the reveals from {site!r} are empty, but it holds shares of sites named in the unmask request", fix)
        held = self._held.get(site, {})
        fast = self._common_reveals(site, reveals, held)
        if fast is None:  # anything uncommon, or a wrong share: one by one, refused by name
            fast = self._checked_reveals(site, reveals, held, fix)
        self._unmasking.take_shares(*fast)
        if correction is not None:
            self._unmasking.take_correction(site, correction)
        self._revealers.add(site)

    def _common_reveals(self, site: str, reveals: Mapping[str, bytes], held: Mapping[str, tuple[int, bytes]]) -> tuple[list[str], list[int], bytes] | None:
        """(owners, indices, shares joined) of ``site``'s reveals when all are the common case
        and match their commitments, in a few array steps and one hashing pass; else None."""
        if type(reveals) is not dict or not reveals:
            return None
        owners = list(reveals)
        try:
            entries = [held[owner] for owner in owners]
        except KeyError:
            return None
        masked = self._masked
        selfs = [owner in masked for owner in owners]
        indices = [index for index, _ in entries]
        joined = joined_reveals(list(reveals.values()), selfs, indices)
        if joined is None:
            return None
        dealers = self._dealers
        digests = crypto.commit_reveals([dealers[owner] for owner in owners], crypto.commit_holder(self.round_seed, site), joined, REVEAL_BYTES, 5)
        if digests != sealed_commitments([sealed for _, sealed in entries], selfs):
            return None
        return owners, indices, revealed_shares(joined)

    def _checked_reveals(self, site: str, reveals: Mapping[str, bytes], held: Mapping[str, tuple[int, bytes]], fix: str) -> tuple[list[str], list[int], bytes]:
        """_common_reveals one reveal at a time: each refused by name (a wrong share excludes
        ``site``), a bytes-like one parsed."""
        owners: list[str] = []
        indices: list[int] = []
        shares: list[bytes] = []
        masked, round_seed = self._masked, self.round_seed
        for owner, data in reveals.items():
            entry, body = held.get(owner), reveal_body(data)
            if entry is None or body is None or body[0] != (SECRET_SELF if owner in masked else SECRET_MASK_KEY) or (body[1] << 8 | body[2]) != entry[0]:
                body = self._reveal_body(site, owner, data, fix)  # refused by name, or a bytes-like parsed
            index, sealed = held[owner]
            if crypto.commit_tail(crypto.commit_prefix(round_seed, owner, site), body) != sealed_commitment(sealed, body[0]):
                self.excluded[site] = (
                    f"{_revealed(site, owner)} does not match the commitment {owner!r} sent with that share: {site!r} revealed a wrong "
                    "share and is excluded from this round's unmasking (none of its reveals is used, nor its correction)"
                )
                raise SecAggRefused(self.excluded[site], "the round unmasks from the other survivors' reveals; look into that site")
            owners.append(owner)
            indices.append(index)
            shares.append(body[3:])
        return owners, indices, b"".join(shares)

    def _reveal_body(self, site: str, owner: str, data: object, fix: str) -> bytes:
        """The body of ``site``'s reveal of a share of ``owner`` that is not the common case:
        refused, naming what is wrong, unless it is a well-formed bytes-like (then its body)."""
        held = self._held.get(site, {})
        if owner not in held:
            raise SecAggRefused(f"{_revealed(site, owner)}: {site!r} holds no share of {owner!r}", fix)
        body = reveal_body(data) or encode_reveal(decode_reveal(data, _revealed(site, owner)))[5:]  # type: ignore[arg-type]
        wanted, index = SECRET_SELF if owner in self._masked else SECRET_MASK_KEY, held[owner][0]
        if body[0] != wanted:
            asked = "survivor (its self-mask seed)" if wanted == SECRET_SELF else "dropped (its mask-key seed)"
            raise SecAggRefused(f"{_revealed(site, owner)} is of the other secret; {owner!r} was named {asked}", fix)
        if body[1] << 8 | body[2] != index:
            raise SecAggRefused(f"{_revealed(site, owner)} has index {body[1] << 8 | body[2]}; {site!r} holds index {index}", fix)
        return body

    @property
    def ready(self) -> bool:
        """Whether ``result()`` can unmask now: every survivor's self-mask seed, and every dropped
        site's mask-key seed some of whose pair masks no correction took out, has its share
        threshold of reveals (the reveal phase may close before every survivor answered)."""
        return self._unmasking is not None and self._unmasking.ready

    def result(self) -> tuple[np.ndarray, float]:
        """(weighted sum as float64 of ``length`` values, total weight): the survivors' sum of
        weight * clipped update, masks removed (the corrections subtracted; the pair masks no
        correction covered expanded). Refused while a secret ``ready`` needs has fewer revealed
        shares than its share threshold."""
        if self._result is not None:
            return self._result[0].copy(), self._result[1]
        self._expect(_REVEALS, "the aggregator", "unmasking")
        graph, unmasking = self._graph, self._unmasking
        assert graph is not None and unmasking is not None
        short = unmasking.short()
        if short:
            raise SecAggRefused(
                f"cannot unmask: sites {short[:5]} have fewer than {graph.share_threshold} revealed shares "
                f"({len(self._revealers)} of {len(unmasking.survivors)} survivors revealed)",
                "wait for more survivors to reveal; below the share threshold the sum stays masked",
                kind="state",
            )
        total = self._sum - unmasking.correction
        # every reveal matched its commitment: any threshold of them will do (combine_all picks)
        rebuilt = shamir.combine_all(unmasking.secrets(), graph.share_threshold)
        for owner in unmasking.dropped:
            if owner in rebuilt:
                check_mask_key(owner, rebuilt[owner], self._parsed[owner].s_pk)
        pairs = unmasking.pairs(rebuilt, {site: self._parsed[site].s_pk for site in unmasking.survivors})
        self_keys = [crypto.self_mask_key(rebuilt[owner], owner, self.round_seed) for owner in unmasking.survivors]
        total -= self._mask_total(self.round_seed, self.length + 1, self_keys, pairs)
        if len(self._declared) == len(unmasking.survivors):
            check_weight(total, sum(self._declared.values()))
        weighted_sum, weight = encoding.decode(self.params, total)
        check_clip(self.params, weighted_sum, weight, len(unmasking.survivors))
        self._phase = _DONE
        self._result = (weighted_sum, weight)
        return self._result[0].copy(), self._result[1]

    def _check_vector(self, vector: object, what: str, fix: str) -> None:
        """Refuse ``vector`` (``what``) unless it is a ring vector: uint64, length + 1 values."""
        if not isinstance(vector, np.ndarray) or vector.dtype != np.uint64 or vector.shape != (self.length + 1,):
            shown = f"{vector.dtype} of shape {vector.shape}" if isinstance(vector, np.ndarray) else f"a {type(vector).__name__}"
            raise SecAggRefused(f"{what} is {shown}, expected uint64 of shape ({self.length + 1},)", fix)

    def _at_least(self, count: int, what: str) -> None:
        if count < self.params.threshold:
            raise SecAggRefused(
                f"only {count} sites {what}, fewer than the SecAgg threshold {self.params.threshold}",
                "end the round without a result; below the threshold the sum is not safe to unmask",
                kind="state",
            )
