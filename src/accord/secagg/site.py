"""SiteSession: one honest site's side of a SecAgg+ round, one method per phase.

Phases, in order (each refuses out-of-order or malformed input with SecAggRefused):
1. ``advertise()``: the advert message (two X25519 public keys).
2. ``share(roster)``: sealed shares of its secrets for each neighbour.
3. ``mask(shares_for_me, update, weight)``: the masked, fixed-point encoded weighted update.
4. ``confirm(survivors, dropped)`` (signing sessions only): its signature on the lists and on
   the roster it was sent (its digest: every name and key, so the session too).
5. ``unmask(survivors, dropped, confirmations)``: reveals, answered once, never both secrets of
   one site; a signing session first needs the threshold of survivors' valid confirmations of
   the same lists (accord.secagg.signing). Then ``correction()``: its pairwise masks with the
   neighbours those lists name dropped, summed as it added them, which the aggregator takes
   out of the sum instead of expanding them from the dropped sites' rebuilt mask keys.

With ``signing`` (the deployment), the advert is signed and carries the site's certificate,
and every neighbour's advert in the roster must be signed by a valid certificate of that
neighbour; without it (tests, the bare library) adverts are plain and there is no check.

A retried call with the same input gets the same answer (advertise, share, unmask, correction);
any other repeat is refused, so a transport may retry but an aggregator cannot ask twice differently.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from accord.secagg import crypto, encoding, shamir
from accord.secagg.graph import Neighbourhood
from accord.secagg.messages import (
    SECRET_MASK_KEY,
    SECRET_SELF,
    Advert,
    Reveal,
    Sealed,
    SecAggRefused,
    SignedAdvert,
    decode_sealed,
    decode_share_pair,
    encode_advert,
    encode_confirmation,
    encode_reveal,
    encode_sealed,
    encode_share_pair,
    encode_signed_advert,
    read_advert,
)
from accord.secagg.params import SecAggParams, check_session
from accord.secagg.signing import (
    Signing,
    advert_statement,
    check_confirmations,
    check_signed,
    roster_digest,
    survivors_statement,
)

_NEW, _ADVERTISED, _SHARED, _MASKED, _CONFIRMED, _REVEALED = range(6)
_PHASES = ("new", "advertised", "shared", "masked", "confirmed", "revealed")


class SiteSession:
    """The state of one site in one SecAgg+ round.

    ``site`` is this site's name, ``cohort`` the names the round selected, ``round_seed`` bytes
    every party agrees on for this round (e.g. derived from the plan hash and round number; it
    fixes the neighbourhood graph and binds every key derivation to the round), ``length`` the
    number of model values the update holds. ``seed`` (tests only) makes the keys, seeds and
    nonces deterministic; None draws them from the OS's entropy (``secrets``). The Shamir
    polynomials' coefficients always come from the OS's entropy (MPyC's ``secrets.randbelow``).
    ``signing`` (the site's certificate and hooks over its key and the CA) turns on signed
    adverts and the consistency check.
    """

    def __init__(
        self,
        params: SecAggParams,
        site: str,
        cohort: Sequence[str],
        round_seed: bytes,
        length: int,
        *,
        seed: bytes | None = None,
        signing: Signing | None = None,
    ) -> None:
        self.params = params
        self.cohort = frozenset(check_session(params, cohort, round_seed, length))
        if site not in self.cohort:
            raise SecAggRefused(f"site {site!r} is not in this round's cohort", "start a session only for a selected site")
        self.site, self.round_seed, self.length = site, round_seed, length
        self._drawer = crypto.Drawer(seed)
        self._c_sk = crypto.X25519PrivateKey.from_private_bytes(self._drawer.draw(32))
        self._s_seed = shamir.draw_secret(self._drawer.draw)
        self._s_sk = crypto.mask_key_from_seed(self._s_seed)
        self._b = shamir.draw_secret(self._drawer.draw)
        self._keys = Advert(crypto.public_bytes(self._c_sk), crypto.public_bytes(self._s_sk))
        self._advert = b""
        self.signing = signing
        self._credentials: dict[str, bytes] = {}
        self._confirmed: tuple[frozenset[str], frozenset[str], bytes] | None = None
        self._phase = _NEW
        self._roster: dict[str, Advert] = {}
        self._graph: Neighbourhood | None = None
        self._digest = b""
        self._shared: tuple[dict[str, bytes], dict[str, bytes]] | None = None
        self._held: dict[str, tuple[int, bytes, bytes]] = {}
        #: neighbour -> the AES-GCM key of the pair (``share`` seals with it, ``mask`` opens with it)
        self._share_keys: dict[str, bytes] = {}
        #: routed sender -> the key of the pair's mask (``mask`` adds it, ``correction`` takes it out)
        self._pair_keys: dict[str, bytes] = {}
        #: the senders whose shares were routed to this site (``mask``): it added a pair mask with each
        self._routed: tuple[str, ...] = ()
        self._revealed: tuple[frozenset[str], frozenset[str], dict[str, bytes]] | None = None
        #: sender -> why its sealed share to this site did not open (``mask``): it is masked against
        #: all the same, and this site reveals nothing of it
        self.skipped: dict[str, str] = {}

    def _expect(self, phase: int, step: str) -> None:
        if self._phase != phase:
            raise SecAggRefused(
                f"site {self.site!r} cannot {step} now: its SecAgg session is {_PHASES[self._phase]}, "
                f"this step needs it {_PHASES[phase]}",
                "run the SecAgg phases in order, each once",
                kind="state",
            )

    def advertise(self) -> bytes:
        """Phase 1: the advert message (c_pk for share encryption, s_pk for masks); public, so any
        later call returns it again. A signing session signs it (with the round seed and its name)."""
        if not self._advert:
            if self.signing is None:
                self._advert = encode_advert(self._keys)
            else:
                signature = self.signing.sign(advert_statement(self.round_seed, self.site, self._keys))
                self._advert = encode_signed_advert(SignedAdvert(self._keys, self.signing.credential, signature))
        self._phase = max(self._phase, _ADVERTISED)
        return self._advert

    def share(self, roster: Mapping[str, bytes]) -> dict[str, bytes]:
        """Phase 2: given every advertised site's advert (``roster``, including this site's own,
        unchanged), one sealed share message per neighbour (neighbour name -> bytes).

        Refuses a roster smaller than the threshold, naming sites outside the cohort, or
        carrying a different advert for this site.
        """
        if self._shared is not None and self._phase == _SHARED and dict(roster) == self._shared[0]:
            return dict(self._shared[1])
        self._expect(_ADVERTISED, "share")
        fix = "the aggregator must send the adverts of the sites that advertised, unchanged"
        if not isinstance(roster, Mapping):
            raise SecAggRefused("the SecAgg roster is not a mapping of site names to adverts", fix)
        strangers = sorted(name for name in roster if name not in self.cohort)
        if strangers:
            raise SecAggRefused(f"the SecAgg roster names sites outside the cohort: {strangers[:5]}", fix)
        if roster.get(self.site) != self._advert:
            raise SecAggRefused(f"the SecAgg roster changes or leaves out the advert of this site, {self.site!r}", fix)
        if len(roster) < self.params.threshold:
            raise SecAggRefused(
                f"the SecAgg roster has {len(roster)} sites, fewer than the threshold {self.params.threshold}",
                "wait for more sites to advertise, or end the round without secure aggregation",
            )
        signed = {name: read_advert(data, f"the advert of {name!r}") for name, data in roster.items()}
        adverts = {name: entry.advert for name, entry in signed.items()}
        own = adverts[self.site]
        copies = sorted(name for name, advert in adverts.items() if name != self.site and {own.c_pk, own.s_pk} & {advert.c_pk, advert.s_pk})
        if copies:
            raise SecAggRefused(f"the SecAgg roster gives sites {copies[:5]} the keys of site {self.site!r}", fix)
        graph = Neighbourhood(self.params, adverts, self.round_seed, len(self.cohort))
        neighbours = graph.of(self.site)
        if len(neighbours) < graph.share_threshold:
            raise SecAggRefused(
                f"the SecAgg roster has {len(roster)} of the cohort's {len(self.cohort)} sites: site {self.site!r} would have "
                f"{len(neighbours)} neighbours, fewer than the {graph.share_threshold} shares its secrets need",
                "wait for more sites to advertise, or end the round without secure aggregation",
            )
        if self.signing is not None:
            for peer in neighbours:  # O(k): only the neighbours' keys are used
                check_signed(self.signing.verify, self.round_seed, peer, signed[peer])
            self._credentials = {name: entry.credential for name, entry in signed.items()}
        sealed: dict[str, bytes] = {}
        share_keys: dict[str, bytes] = {}
        for peer, (index, (b_share, s_share)) in zip(neighbours, shamir.split([self._b, self._s_seed], graph.share_threshold, len(neighbours))):
            key = share_keys[peer] = crypto.share_key(self._c_sk, adverts[peer].c_pk, self.site, peer, self.round_seed)
            nonce = self._drawer.draw(12)
            b_commit = crypto.commit_share(self.round_seed, self.site, peer, SECRET_SELF, index, b_share)
            s_commit = crypto.commit_share(self.round_seed, self.site, peer, SECRET_MASK_KEY, index, s_share)
            aad = crypto.share_aad(self.round_seed, self.site, peer, b_commit + s_commit)
            ciphertext = crypto.seal_share(key, nonce, encode_share_pair(index, b_share, s_share), aad)
            sealed[peer] = encode_sealed(Sealed(nonce, b_commit, s_commit, ciphertext))
        self._roster, self._graph, self._digest, self._share_keys = adverts, graph, roster_digest(adverts), share_keys
        self._shared = (dict(roster), sealed)
        self._phase = _SHARED
        return dict(sealed)

    def mask(self, shares_for_me: Mapping[str, bytes], update: np.ndarray, weight: int) -> np.ndarray:
        """Phase 3: the masked vector (uint64, ``length`` + 1 values: weight * clipped update in
        fixed point, then the weight) given the sealed shares neighbours sent this site.

        Refuses shares from non-neighbours, malformed share messages, fewer than a majority of its
        neighbours (its update would be too weakly masked), an update of the wrong size or with
        NaN/inf, and a weight outside [1, max_weight]. A share that does not decrypt under this
        round, sender and receiver, carries the wrong index or a share outside the Shamir field
        (>= 2^128 - 159), is skipped (``skipped`` says why),
        not refused: one lying neighbour must not knock this site out of the round; so is one
        that does not match the commitments its sender sent with it (the aggregator checks
        reveals against them, and would exclude this site for revealing it). Its pair mask
        is added all the same; this site just holds, and reveals, nothing of that sender.
        """
        self._expect(_SHARED, "mask")
        graph = self._graph
        assert graph is not None
        neighbours = graph.of(self.site)
        fix = "the aggregator must forward each neighbour's sealed share to the site it names, unchanged"
        if not isinstance(shares_for_me, Mapping):
            raise SecAggRefused("the shares for this site are not a mapping of sender names to sealed shares", fix)
        strangers = sorted(name for name in shares_for_me if name not in neighbours)
        if strangers:
            raise SecAggRefused(f"site {self.site!r} got shares from sites that are not its neighbours: {strangers[:5]}", fix)
        if len(shares_for_me) < graph.share_threshold:
            raise SecAggRefused(
                f"site {self.site!r} got shares from {len(shares_for_me)} of its {len(neighbours)} neighbours, fewer than "
                f"the {graph.share_threshold} its update needs to be masked",
                "too many neighbours dropped: end the round without this site",
            )
        encoded = encoding.encode(self.params, update, weight, self.length)
        sealed = {
            sender: decode_sealed(data, f"the sealed share from {sender!r} to {self.site!r}") for sender, data in shares_for_me.items()
        }
        held: dict[str, tuple[int, bytes, bytes]] = {}
        skipped: dict[str, str] = {}
        for sender, box in sorted(sealed.items()):
            what = f"the sealed share from {sender!r} to {self.site!r}"
            key = self._share_keys[sender]  # the key it sealed its own share to the sender with (one agreement a pair)
            aad = crypto.share_aad(self.round_seed, sender, self.site, box.b_commit + box.s_commit)
            try:
                plain = crypto.open_share(key, box.nonce, box.ciphertext, aad, what)
            except SecAggRefused as exc:
                skipped[sender] = exc.message
                continue
            index, b_share, s_share = decode_share_pair(plain)
            if index != graph.index(sender, self.site):
                skipped[sender] = f"{what} carries share index {index}, not this site's {graph.index(sender, self.site)}"
                continue
            if max(int.from_bytes(b_share, "big"), int.from_bytes(s_share, "big")) >= shamir.PRIME:
                skipped[sender] = f"{what} carries a share outside the Shamir field (>= 2^128 - 159)"
                continue
            if (box.b_commit, box.s_commit) != (
                crypto.commit_share(self.round_seed, sender, self.site, SECRET_SELF, index, b_share),
                crypto.commit_share(self.round_seed, sender, self.site, SECRET_MASK_KEY, index, s_share),
            ):  # an honest holder reveals only shares that pass the aggregator's check
                skipped[sender] = f"{what} does not match the commitments {sender!r} sent with it"
                continue
            held[sender] = (index, b_share, s_share)
        self.skipped = skipped
        masker = crypto.Masker(self.length + 1)
        masked = encoded  # masked in place
        masker.add(masked, crypto.self_mask_key(self._b, self.site, self.round_seed))
        # Every routed sender's pair mask, whether or not its share opened: the pair mask needs only
        # its advert's s_pk, and the aggregator removes the pair's masks by what it routed.
        self._add_pair_masks(masker, masked, sealed)
        self._held, self._routed = held, tuple(sorted(sealed))
        self._phase = _MASKED
        return masked

    def confirm(self, survivors: Sequence[str], dropped: Sequence[str]) -> bytes:
        """Phase 4 (signing sessions): the confirmation message, this site's signature on the
        survivor and dropped lists it was sent, after the checks ``unmask`` makes. Answers once
        (a retry with the same lists gets the same answer)."""
        live, gone = self._names(survivors, "survivors"), self._names(dropped, "dropped")
        if self.signing is None:
            raise SecAggRefused(
                f"site {self.site!r} has no signing key: its session has no consistency check",
                "give the SiteSession a Signing to run signed SecAgg", kind="state",
            )
        if self._confirmed is not None:
            if (live, gone) == self._confirmed[:2]:
                return self._confirmed[2]
            raise SecAggRefused(
                f"site {self.site!r} already confirmed other survivor lists; it confirms once",
                "send every survivor the same survivor and dropped lists, once",
                kind="state",
            )
        self._expect(_MASKED, "confirm")
        self._check_request(live, gone)
        message = encode_confirmation(self.signing.sign(survivors_statement(self.round_seed, self._digest, live, gone)))
        self._confirmed = (live, gone, message)
        self._phase = _CONFIRMED
        return message

    def unmask(self, survivors: Sequence[str], dropped: Sequence[str], confirmations: Mapping[str, bytes] | None = None) -> dict[str, bytes]:
        """Phase 5: reveal messages (owner site -> bytes): its share of each surviving
        neighbour's self-mask seed b and of each dropped neighbour's mask-key seed s.

        Answers once. Refuses a site named both survivor and dropped, survivors fewer than the
        threshold, this site not among the survivors, names outside the roster, and a neighbour
        whose shares it holds named neither (every such site must be accounted for). A signing
        session also refuses lists other than those it confirmed, and ``confirmations`` (site ->
        confirmation) short of the threshold of valid survivor signatures on those lists.
        """
        live, gone = self._names(survivors, "survivors"), self._names(dropped, "dropped")
        if self._revealed is not None:
            if (live, gone) == self._revealed[:2]:
                return dict(self._revealed[2])
            raise SecAggRefused(
                f"site {self.site!r} already answered an unmask request; it answers once",
                "ask each site once, with the same survivors and dropped sites for all",
                kind="state",
            )
        if self.signing is None:
            self._expect(_MASKED, "unmask")
            self._check_request(live, gone)
        else:
            if self._phase == _MASKED:
                raise SecAggRefused(
                    f"site {self.site!r} refuses to reveal before the consistency check: it has confirmed no survivor list",
                    "run the confirm phase (each survivor signs the survivor list) before asking for reveals",
                )
            self._expect(_CONFIRMED, "unmask")
            assert self._confirmed is not None
            if (live, gone) != self._confirmed[:2]:
                raise SecAggRefused(
                    f"site {self.site!r} refuses to reveal: the unmask request's survivor lists are not the ones it confirmed",
                    "ask for reveals with the survivor and dropped lists of the consistency check",
                )
            check_confirmations(
                self.signing.verify, self._credentials, survivors_statement(self.round_seed, self._digest, live, gone),
                confirmations if confirmations is not None else {}, live, self.params.threshold,
            )
        reveals = {
            owner: encode_reveal(
                Reveal(SECRET_SELF, index, b_share) if owner in live else Reveal(SECRET_MASK_KEY, index, s_share)
            )
            for owner, (index, b_share, s_share) in self._held.items()
        }
        self._revealed = (live, gone, reveals)
        self._phase = _REVEALED
        return dict(reveals)

    def correction(self) -> np.ndarray:
        """After ``unmask``: the correction (uint64, ``length`` + 1 values), the signed sum, as
        ``mask`` added them, of this site's pairwise masks with the routed senders that the
        answered request names dropped (zeros when none). The aggregator subtracts it from the
        masked sum rather than expanding those masks from each dropped site's rebuilt mask key.

        It tells the aggregator nothing the same request's reveals do not: they hold this site's
        share of each of those senders' mask-key seeds, and the seeds rebuilt from the survivors'
        shares give every pair mask of theirs. That holds while the survivors answer the same
        lists, which only a signing session's consistency check guarantees, so an unsigned session
        makes none (docs/privacy.md, "Corrections"). The same on every call (it is computed
        again: nothing model-sized is kept)."""
        if self.signing is None:
            raise SecAggRefused(
                f"site {self.site!r} has no signing key: an unsigned session sends no correction (without the consistency "
                "check an aggregator could ask its neighbours inconsistent lists and collect both secrets of one site)",
                "run signed SecAgg to send corrections; an unsigned round's aggregator expands the pair masks itself",
                kind="state",
            )
        if self._revealed is None:
            raise SecAggRefused(
                f"site {self.site!r} has answered no unmask request: its correction follows its reveals",
                "call unmask first, then correction",
                kind="state",
            )
        gone = self._revealed[1]
        correction = np.zeros(self.length + 1, dtype=np.uint64)
        self._add_pair_masks(crypto.Masker(self.length + 1), correction, [peer for peer in self._routed if peer in gone])
        return correction

    def _add_pair_masks(self, masker: crypto.Masker, vector: np.ndarray, peers: Iterable[str]) -> None:
        """Add this site's pairwise mask with each of ``peers`` to ``vector`` in place: + if this
        site's name sorts first, else - (so each pair's masks cancel in the sum)."""
        for peer in peers:
            key = self._pair_keys.get(peer)
            if key is None:  # agreed once a pair: the correction takes out masks ``mask`` added
                key = self._pair_keys[peer] = crypto.pair_mask_key(self._s_sk, self._roster[peer].s_pk, self.site, peer, self.round_seed)
            masker.add(vector, key, 1 if self.site < peer else -1)

    def _check_request(self, live: frozenset[str], gone: frozenset[str]) -> None:
        """Refuse survivor and dropped lists that would be unsafe to reveal for."""
        fix = "name each site that masked as a survivor and each that shared but did not mask as dropped, never both"
        both = sorted(live & gone)
        if both:
            raise SecAggRefused(
                f"site {self.site!r} refuses to reveal: sites {both[:5]} are named both survivor and dropped "
                "(that would give the aggregator both secrets of one site)",
                fix,
            )
        if self.site not in live:
            raise SecAggRefused(f"site {self.site!r} is asked to unmask but is not named a survivor", fix)
        strangers = sorted((live | gone) - set(self._roster))
        if strangers:
            raise SecAggRefused(f"the unmask request names sites that did not advertise: {strangers[:5]}", fix)
        if len(live) < self.params.threshold:
            raise SecAggRefused(
                f"site {self.site!r} refuses to reveal: {len(live)} survivors, fewer than the threshold {self.params.threshold}",
                "end the round without secure aggregation; the sum of so few sites is not safe to unmask",
            )
        unnamed = sorted(set(self._held) - live - gone)
        if unnamed:
            raise SecAggRefused(f"the unmask request names neither survivor nor dropped sites {unnamed[:5]}, whose shares this site holds", fix)

    @staticmethod
    def _names(names: Sequence[str], what: str) -> frozenset[str]:
        if isinstance(names, str | bytes) or not all(isinstance(name, str) for name in names):
            raise SecAggRefused(f"the unmask request's {what} is not a list of site names", "send lists of site names")
        unique = frozenset(names)
        if len(unique) != len(names):
            raise SecAggRefused(f"the unmask request's {what} names a site twice", "name each site once")
        return unique
