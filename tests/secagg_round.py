"""A SecAgg+ round between a ServerSession and honest SiteSessions, driven phase by phase
(for tests/test_secagg_protocol.py and tests/test_secagg_refusals.py)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from accord.secagg.params import SecAggParams
from accord.secagg.server import ServerSession
from accord.secagg.signing import Signing, Verifier
from accord.secagg.site import SiteSession

ROUND = b"round-seed-0001-" * 2
PHASES = ("advertise", "share", "mask", "reveal")


def ed25519_signings(names: Iterable[str]) -> dict[str, Signing]:
    """A Signing per site over a fresh Ed25519 key (its raw public key as its credential): the
    consistency check's signatures, real, without a federation PKI (pki/ makes the deployment's)."""
    def verify(site: str, credential: bytes, data: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(credential).verify(signature, data)
        except (InvalidSignature, ValueError):
            return False
        return True

    signings = {}
    for name in names:
        key = Ed25519PrivateKey.generate()
        signings[name] = Signing(key.public_key().public_bytes_raw(), key.sign, verify)
    return signings


def plain(count: int) -> SecAggParams:
    """The defaults for ``count`` sites (plain SecAgg at test sizes)."""
    return SecAggParams.for_cohort(count)


class Round:
    """Sites ``site000``... with random updates and weights; each step takes the sites that skip it.
    ``signings`` (site -> Signing) makes the sites sign, ``verify`` the server check signatures;
    ``session`` goes to the ServerSession as it is (its ``mask_total``)."""

    def __init__(
        self,
        params: SecAggParams,
        count: int,
        length: int,
        seed: int = 0,
        round_seed: bytes = ROUND,
        *,
        signings: dict[str, Signing] | None = None,
        verify: Verifier | None = None,
        **session: Any,
    ) -> None:
        self.params, self.length = params, length
        self.names = [f"site{i:03d}" for i in range(count)]
        self.server = ServerSession(params, self.names, round_seed, length, verify=verify, **session)
        self.sites = {
            name: SiteSession(
                params, name, self.names, round_seed, length, seed=bytes([seed]) + name.encode(),
                signing=(signings or {}).get(name),
            )
            for name in self.names
        }
        rng = np.random.default_rng(seed)
        self.updates = {name: rng.uniform(-1.5, 1.5, length) for name in self.names}
        self.weights = {name: int(rng.integers(1, 500)) for name in self.names}
        self.gone: set[str] = set()
        self.sent: dict[str, dict[str, bytes]] = {}
        self.survivors: list[str] = []
        self.dropped: list[str] = []

    def _live(self, skip: Iterable[str]) -> list[str]:
        self.gone.update(skip)
        return [name for name in self.names if name not in self.gone]

    def advertise(self, skip: Iterable[str] = ()) -> dict[str, bytes]:
        for name in self._live(skip):
            self.server.add_advert(name, self.sites[name].advertise())
        return self.server.roster()

    def share(self, skip: Iterable[str] = (), *, send: bool = True) -> dict[str, dict[str, bytes]]:
        """Every live site's sealed shares (given to the server unless ``send`` is False), after ``advertise``."""
        roster = self.server.roster()
        for name in self._live(skip):
            self.sent[name] = self.sites[name].share(roster)
            if send:
                self.server.add_shares(name, self.sent[name])
        return self.sent

    def mask(self, skip: Iterable[str] = ()) -> tuple[list[str], list[str]]:
        for name in self._live(skip):
            shares = self.server.shares_for(name)
            # with the declared weight, as the aggregator passes it: result() checks the unmasked total weight
            self.server.add_masked(name, self.sites[name].mask(shares, self.updates[name], self.weights[name]), self.weights[name])
        self.survivors, self.dropped = self.server.unmask_request()
        return self.survivors, self.dropped

    def confirm(self, skip: Iterable[str] = ()) -> dict[str, bytes]:
        """The consistency check of a signed round: each live survivor confirms, the server closes it."""
        for name in self._live(skip):
            self.server.add_confirmation(name, self.sites[name].confirm(self.survivors, self.dropped))
        return self.server.confirmations()

    def run(self, drops: dict[str, set[str]] | None = None) -> tuple[np.ndarray, float]:
        """Every phase (the consistency check if the sites sign); sites in ``drops[phase]`` stop
        before that phase; in a signed round, those in ``drops["correction"]`` reveal without their
        correction (an unsigned one sends none)."""
        drops = drops or {}
        self.advertise(drops.get("advertise", ()))
        self.share(drops.get("share", ()))
        survivors, dropped = self.mask(drops.get("mask", ()))
        signed = any(site.signing is not None for site in self.sites.values())
        confirmations = self.confirm(drops.get("confirm", ())) if signed else None
        assert not self.server.ready
        for name in self._live(drops.get("reveal", ())):
            reveals = self.sites[name].unmask(survivors, dropped, confirmations)
            corrected = signed and name not in drops.get("correction", ())  # an unsigned session sends no correction
            self.server.add_reveal(name, reveals, self.sites[name].correction() if corrected else None)
        assert self.server.ready
        return self.server.result()

    def expected(self) -> tuple[np.ndarray, float]:
        """The plain weighted sum over the sites that masked (clipped as the sites clip)."""
        clip = self.params.clip
        total = sum(self.weights[n] * np.clip(self.updates[n], -clip, clip) for n in self.survivors)
        return np.asarray(total), float(sum(self.weights[n] for n in self.survivors))

    def check(self, result: tuple[np.ndarray, float]) -> None:
        """The result is the plain weighted sum, within the fixed-point bound."""
        total, weight = result
        want_total, want_weight = self.expected()
        assert weight == want_weight
        # Rounding is at most half a unit (2^-fraction_bits) per value and site.
        assert np.abs(total - want_total).max() <= len(self.survivors) / 2 ** (self.params.fraction_bits + 1)


def masked_round(count: int = 9) -> tuple[Round, list[str], list[str]]:
    """A round in which every site advertised, shared and masked; the server asks for reveals next."""
    federation = Round(plain(count), count, 8)
    federation.advertise()
    federation.share()
    survivors, dropped = federation.mask()
    return federation, survivors, dropped
