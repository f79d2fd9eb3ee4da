"""Signed SecAgg+: the statements sites sign and the checks on them (Bonawitz et al. 2017's
actively secure variant, against an aggregator that lies).

A site signs (1) its advert, bound to the round seed and its name, so an aggregator cannot put
its own keys in the roster and sit between two sites; and (2) in the consistency check, the
survivor and dropped lists the aggregator sent it and the digest of the roster it was sent (every
name and key: the keys are fresh, so this binds the session too; a confirmation replayed from
another session, or made over another roster, does not verify), so that a site reveals only after seeing at
least the threshold of valid survivor signatures on the very lists it was sent: the aggregator
can neither name survivors that never masked nor tell two sites different stories.

The library knows no certificates: ``Signing`` carries this site's credential (opaque bytes:
in the deployment, its certificate) and two hooks over the federation's PKI
(accord.pki.signatures makes them from a site's key and the CA). Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from accord.secagg.messages import Advert, SecAggRefused, SignedAdvert, decode_confirmation, read_advert

Signer = Callable[[bytes], bytes]
"""Signs a statement with this site's long-term private key."""
Verifier = Callable[[str, bytes, bytes, bytes], bool]
"""(site, credential, statement, signature) -> whether ``credential`` is a valid certificate of
the federation named ``site`` and ``signature`` is its signature of ``statement``."""

_UNSIGNED_FIX = "every site of a signing federation signs its advert; run the same Accord version everywhere"


@dataclass(frozen=True)
class Signing:
    """A site's signing: its ``credential`` (certificate bytes, sent in its advert), ``sign`` over
    its private key and ``verify`` for the other sites' signatures."""

    credential: bytes
    sign: Signer
    verify: Verifier


def _names(names: Iterable[str]) -> bytes:
    ordered = sorted(names)
    parts = [struct.pack(">I", len(ordered))]
    for name in ordered:
        raw = name.encode("utf-8")
        parts += [struct.pack(">H", len(raw)), raw]
    return b"".join(parts)


def _statement(purpose: bytes, round_seed: bytes, *fields: bytes) -> bytes:
    parts = [b"accord-secagg/1/", purpose, struct.pack(">H", len(round_seed)), round_seed]
    return b"".join(parts + list(fields))


def advert_statement(round_seed: bytes, site: str, advert: Advert) -> bytes:
    """What ``site`` signs to vouch for its advert in the round of ``round_seed``."""
    return _statement(b"advert", round_seed, _names([site]), advert.c_pk, advert.s_pk)


def roster_digest(adverts: Mapping[str, Advert]) -> bytes:
    """SHA-256 of a roster: every site's name and both public keys, in name order. The keys are
    fresh per session, so the digest names the session as well as the roster."""
    digest = hashlib.sha256(struct.pack(">I", len(adverts)))
    for name in sorted(adverts):
        digest.update(_names([name]) + adverts[name].c_pk + adverts[name].s_pk)
    return digest.digest()


def survivors_statement(round_seed: bytes, roster: bytes, survivors: Iterable[str], dropped: Iterable[str]) -> bytes:
    """What a survivor signs in the consistency check: the round, the ``roster`` it was sent (its
    roster_digest), the survivors, the dropped. A threshold of valid signatures on one statement
    shows that a threshold of sites saw the same roster in the same session."""
    return _statement(b"survivors", round_seed, roster, _names(survivors), _names(dropped))


def check_advert(verify: Verifier, round_seed: bytes, site: str, data: bytes) -> SignedAdvert:
    """``site``'s advert, refused unless it is signed by a valid credential of ``site``."""
    return check_signed(verify, round_seed, site, read_advert(data, f"the advert of {site!r}"))


def check_signed(verify: Verifier, round_seed: bytes, site: str, signed: SignedAdvert) -> SignedAdvert:
    """``signed`` (``site``'s advert, parsed), refused unless it is signed by a valid credential of ``site``."""
    what = f"the advert of {site!r}"
    if not signed.signature:
        raise SecAggRefused(f"{what} is unsigned, and this federation signs its adverts", _UNSIGNED_FIX)
    if not verify(site, signed.credential, advert_statement(round_seed, site, signed.advert), signed.signature):
        raise SecAggRefused(
            f"{what} is not signed by a valid certificate of {site!r} (a substituted key, or a forged advert)",
            "the aggregator must forward each site's signed advert unchanged; check the site's certificate",
        )
    return signed


def check_confirmations(
    verify: Verifier,
    credentials: Mapping[str, bytes],
    statement: bytes,
    confirmations: Mapping[str, bytes],
    survivors: frozenset[str],
    threshold: int,
) -> None:
    """Refuse unless ``confirmations`` (site -> confirmation message) hold at least ``threshold``
    valid survivor signatures on ``statement``; any carried signature that is invalid, or from a
    site that is no survivor, is refused too. Stops verifying at ``threshold`` (O(threshold))."""
    fix = "the aggregator must forward the survivors' confirmations of the survivor list it sent, unchanged"
    if not isinstance(confirmations, Mapping):
        raise SecAggRefused("the unmask request's confirmations are not a mapping of site names to confirmations", fix)
    strangers = sorted(set(confirmations) - survivors)
    if strangers:
        raise SecAggRefused(f"the unmask request carries confirmations from sites that are not survivors: {strangers[:5]}", fix)
    valid = 0
    for site in sorted(confirmations):
        if valid >= threshold:
            return
        signature = decode_confirmation(confirmations[site], f"the confirmation of {site!r}")
        if site not in credentials or not verify(site, credentials[site], statement, signature):
            raise SecAggRefused(f"the confirmation of {site!r} is not its valid signature on the survivor list this site was sent", fix)
        valid += 1
    if valid < threshold:
        raise SecAggRefused(
            f"the unmask request carries {valid} survivor signatures on its survivor list, fewer than the threshold {threshold}",
            "the aggregator must collect the threshold of confirmations before asking for reveals; "
            "otherwise end the round without secure aggregation",
        )
