"""Shamir secret sharing over GF(2^128 - 159) by MPyC (accord.secagg.shamir): round trips,
refusals of what a lying site may send, seeds drawn below the prime, the bounded cache."""

from __future__ import annotations

import random
import secrets
import subprocess
import sys
from collections.abc import Callable

import pytest

from accord.secagg import shamir
from accord.secagg.crypto import Drawer
from accord.secagg.messages import SecAggRefused


def _secret() -> bytes:
    return shamir.draw_secret(secrets.token_bytes)


@pytest.mark.parametrize(("threshold", "count"), [(1, 1), (2, 3), (3, 5), (6, 10), (26, 50), (50, 99)])
def test_any_threshold_of_shares_rebuilds_each_secret_and_fewer_do_not(threshold: int, count: int) -> None:
    first, second = _secret(), _secret()
    rows = shamir.split([first, second], threshold, count)
    assert [index for index, _ in rows] == list(range(1, count + 1))
    assert all(len(share) == 16 and int.from_bytes(share, "big") < shamir.PRIME for _, pair in rows for share in pair)
    picked = random.Random(threshold).sample(rows, threshold)
    rebuilt = shamir.combine_all({"b": [(i, pair[0]) for i, pair in picked], "s": [(i, pair[1]) for i, pair in picked]}, threshold)
    assert rebuilt == {"b": first, "s": second}
    if threshold > 1:  # threshold - 1 shares interpolate some other polynomial
        short = picked[:-1]
        assert shamir.combine_all({"b": [(i, pair[0]) for i, pair in short]}, threshold - 1)["b"] != first


def test_a_secret_at_or_above_the_prime_is_not_split() -> None:
    with pytest.raises(ValueError, match="below PRIME"):
        shamir.split([shamir.PRIME.to_bytes(16, "big")], 2, 3)
    with pytest.raises(ValueError, match="threshold"):
        shamir.split([_secret()], 4, 3)


Shares = list[tuple[int, bytes]]


def _shares(threshold: int = 3, count: int = 5) -> Shares:
    return [(index, pair[0]) for index, pair in shamir.split([_secret()], threshold, count)]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s[:2], "has 2 Shamir shares, fewer than its threshold 3"),
        (lambda s: [s[0], (s[0][0], s[1][1]), s[2]], "repeat an index"),
        (lambda s: [(0, s[0][1]), *s[1:]], "has index 0, not in 1..65535"),
        (lambda s: [(65_536, s[0][1]), *s[1:]], "has index 65536"),
        (lambda s: [(s[0][0], shamir.PRIME.to_bytes(16, "big")), *s[1:]], "not a 16-byte value below 2\\^128 - 159"),
        (lambda s: [(s[0][0], b"\xff" * 16), *s[1:]], "not a 16-byte value below"),
        (lambda s: [(s[0][0], b"\x01" * 15), *s[1:]], "not a 16-byte value below"),
    ],
)
def test_shares_a_lying_site_may_send_are_refused_naming_the_owner(change: Callable[[Shares], Shares], message: str) -> None:
    with pytest.raises(SecAggRefused, match=message) as caught:
        shamir.combine_all({"site007": change(_shares())}, 3)
    assert "'site007'" in caught.value.message and caught.value.fix


def test_secrets_are_drawn_below_the_prime_and_the_test_drawer_stays_deterministic() -> None:
    draws = iter([b"\xff" * 16, shamir.PRIME.to_bytes(16, "big"), (shamir.PRIME - 1).to_bytes(16, "big")])
    assert shamir.draw_secret(lambda n: next(draws)) == (shamir.PRIME - 1).to_bytes(16, "big")
    one, two = Drawer(b"seed"), Drawer(b"seed")
    assert [shamir.draw_secret(one.draw) for _ in range(3)] == [shamir.draw_secret(two.draw) for _ in range(3)]


def test_a_batch_recombines_once_per_x_set_and_leaves_no_vector_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    """100 secrets, each with the shares of the same 70 holders at indices shifted by its own
    place (as a plain SecAgg round with 30 dropped sites gives them): a few recombinations, not
    100, and MPyC's cache empty after each batch, however many different batches came before."""
    calls: list[int] = []
    recombine = shamir._thresha.recombine

    def counted(field: object, points: list[tuple[int, list[int]]]) -> list[int]:
        calls.append(len(points[0][1]))
        return recombine(field, points)

    monkeypatch.setattr(shamir._thresha, "recombine", counted)
    names = [f"site{i:03d}" for i in range(100)]
    for batch in range(5):
        survivors = random.Random(batch).sample(names, 70)
        secrets_of = {owner: _secret() for owner in names}
        shares = {}
        for owner in names:
            others = [name for name in names if name != owner]
            dealt = dict(shamir.split([secrets_of[owner]], 50, 99))
            shares[owner] = [(others.index(holder) + 1, dealt[others.index(holder) + 1][0]) for holder in survivors if holder != owner]
        calls.clear()
        assert shamir.combine_all(shares, 50) == secrets_of
        assert sum(calls) == 100 and len(calls) <= 8  # 100 secrets over a few x-sets
        assert shamir._thresha._recombination_vector.cache_info().currsize == 0  # MPyC's cache, cleared


def test_importing_shamir_leaves_argv_logging_and_environment_alone() -> None:
    code = (
        "import logging, os, sys; env = dict(os.environ); "
        "from accord.secagg import shamir; "
        "print(logging.getLogger().handlers, sorted(set(os.environ) ^ set(env)), 'mpyc.runtime' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code, "-M", "x", "-H"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[] [] False" and out.stderr == ""
