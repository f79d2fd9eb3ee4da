"""Shamir secret sharing of the SecAgg+ seeds over the prime field GF(PRIME), by MPyC.

PRIME = 2^128 - 159, the largest prime below 2^128: a share is a field element < PRIME, so it
still travels in 16 bytes (big-endian); the secrets shared (each site's seeds b and s) are drawn
below PRIME (``draw_secret``, rejection sampling). The polynomials' coefficients are MPyC's
``secrets.randbelow`` (the OS's entropy); the sharing and the Lagrange recombination are MPyC's
``mpyc.thresha`` (a maintained MPC library). Nothing hand-rolled here but the checks a share must
pass before MPyC sees it: a value below PRIME, an index in 1..65535, each index once, at least
the threshold of them (a lying site may send anything).

``combine_all`` rebuilds a round's secrets in one batch: it picks for each secret a threshold
of its shares so that few distinct index sets (x-sets) occur, and recombines the secrets of one
x-set in one ``recombine`` call, so each recombination vector is computed once. MPyC caches
those vectors per x-set in an unbounded functools.cache; over a long-lived aggregator whose
survivor sets change it would grow without end, so every batch clears it when done: the cache
holds at most one batch's x-sets (a few), never a previous round's.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType

from accord.errors import AccordError
from accord.secagg.messages import SHARE_BYTES, SecAggRefused

PRIME = 2**128 - 159
"""The field's order: the largest prime below 2^128 (checked at import by MPyC's is_prime)."""
_PRIME_BYTES = PRIME.to_bytes(SHARE_BYTES, "big")
MAX_INDEX = 65_535
"""Share indices (x-coordinates) travel as 16-bit numbers; 0 would be the secret itself."""


def _load() -> tuple[ModuleType, object]:
    """mpyc.thresha and GF(PRIME), imported without MPyC's start-up side effects.

    ``import mpyc`` parses sys.argv (exiting on some flags), calls logging.basicConfig and sets
    environment variables unless READTHEDOCS is "True" (its documentation builds' switch), and
    its gmpy stub logs at import (which would give the root logger a handler): so both are held
    off for the import alone. No MPyC runtime is started (mpyc.runtime is never imported)."""
    root, quiet = logging.getLogger(), logging.NullHandler()
    before = os.environ.get("READTHEDOCS")
    os.environ["READTHEDOCS"] = "True"
    root.addHandler(quiet)
    try:
        from mpyc import finfields, gmpy, thresha
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise AccordError(f"secure aggregation needs MPyC ({exc})", "pip install 'accord[secagg]'") from exc
    finally:
        root.removeHandler(quiet)
        if before is None:
            del os.environ["READTHEDOCS"]
        else:
            os.environ["READTHEDOCS"] = before
    if not gmpy.is_prime(PRIME):  # pragma: no cover - a constant
        raise AssertionError("the SecAgg field order is not prime")
    return thresha, finfields.GF(PRIME)


_thresha, _field = _load()


def draw_secret(draw: Callable[[int], bytes]) -> bytes:
    """A 16-byte secret below PRIME from ``draw`` (the site's Drawer): redrawn while >= PRIME
    (a chance of 159 in 2^128 a draw), so a deterministic test drawer stays deterministic."""
    while True:
        secret = draw(SHARE_BYTES)
        if int.from_bytes(secret, "big") < PRIME:
            return secret


def split(secrets: Sequence[bytes], threshold: int, count: int) -> list[tuple[int, list[bytes]]]:
    """Shamir shares of each 16-byte secret (< PRIME), ``threshold`` of which rebuild it:
    ``count`` rows (index 1..count, one 16-byte share of each secret), one polynomial a secret."""
    if not 1 <= threshold <= count <= MAX_INDEX:
        raise ValueError(f"Shamir threshold {threshold} of {count} shares is not in 1..count..{MAX_INDEX}")
    values = [int.from_bytes(secret, "big") for secret in secrets]
    if any(len(secret) != SHARE_BYTES for secret in secrets) or any(value >= PRIME for value in values):
        raise ValueError("a Shamir secret must be 16 bytes below PRIME (SiteSession draws them with draw_secret)")
    rows = _thresha.random_split(_field, values, threshold - 1, count)
    return [(at + 1, [int(value).to_bytes(SHARE_BYTES, "big") for value in row]) for at, row in enumerate(rows)]


def combine_all(batch: Mapping[str, Sequence[tuple[int, bytes]]], threshold: int) -> dict[str, bytes]:
    """Each named secret (owner -> its (index, 16-byte share) pairs) rebuilt from ``threshold``
    of its shares; SecAggRefused naming the owner for too few shares, an index outside 1..65535
    or repeated, or a value >= PRIME."""
    points = {owner: _checked(owner, shares, threshold) for owner, shares in batch.items()}
    rebuilt: dict[str, bytes] = {}
    try:
        for xs, owners in _grouped(points, threshold).items():
            sums = _thresha.recombine(_field, [(x, [points[owner][x] for owner in owners]) for x in xs])
            rebuilt.update((owner, (int(value) % PRIME).to_bytes(SHARE_BYTES, "big")) for owner, value in zip(owners, sums, strict=True))
    finally:
        _thresha._recombination_vector.cache_clear()  # bounded: one batch's x-sets at most (see above)
    return {owner: rebuilt[owner] for owner in batch}


def _checked(owner: str, shares: Sequence[tuple[int, bytes]], threshold: int) -> dict[int, int]:
    fix = "the round is held and run again; look into the sites that dealt or revealed these shares"
    if len({index for index, _ in shares}) != len(shares):
        raise SecAggRefused(f"the Shamir shares of {owner!r} repeat an index", fix, kind="state")
    if len(shares) < threshold:
        raise SecAggRefused(f"the secret of {owner!r} has {len(shares)} Shamir shares, fewer than its threshold {threshold}", fix, kind="state")
    # the common case in one pass (16 big-endian bytes compare as their values do)
    if all(type(i) is int and 1 <= i <= MAX_INDEX and type(v) is bytes and len(v) == SHARE_BYTES and v < _PRIME_BYTES for i, v in shares):
        return {index: int.from_bytes(share, "big") for index, share in shares}
    values: dict[int, int] = {}
    for index, share in shares:
        if isinstance(index, bool) or not isinstance(index, int) or not 1 <= index <= MAX_INDEX:
            raise SecAggRefused(f"a Shamir share of {owner!r} has index {index!r}, not in 1..{MAX_INDEX}", fix, kind="state")
        value = int.from_bytes(share, "big") if isinstance(share, bytes) and len(share) == SHARE_BYTES else PRIME
        if value >= PRIME:
            raise SecAggRefused(f"the Shamir share of {owner!r} at index {index} is not a 16-byte value below 2^128 - 159", fix, kind="state")
        values[index] = value
    return values


def _grouped(points: Mapping[str, Mapping[int, int]], threshold: int) -> dict[tuple[int, ...], list[str]]:
    """x-set -> the owners recombined over it. Any threshold of a secret's shares rebuilds it
    (they all matched their commitments), so the choice is free: each owner takes the first
    x-set already chosen that its shares cover, else a new one of its ``threshold`` indices
    that most owners hold (the likeliest to be covered by the next ones; ties: the lowest)."""
    held = Counter(index for shares in points.values() for index in shares)
    groups: dict[tuple[int, ...], list[str]] = {}
    covers: list[tuple[tuple[int, ...], frozenset[int]]] = []
    for owner in sorted(points):
        have = set(points[owner])
        xs = next((xs for xs, members in covers if members <= have), None)
        if xs is None:
            xs = tuple(sorted(sorted(have, key=lambda index: (-held[index], index))[:threshold]))
            covers.append((xs, frozenset(xs)))
        groups.setdefault(xs, []).append(owner)
    return groups
