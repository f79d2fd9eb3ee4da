"""The aggregator checks the unmasked sum (review 12, findings 1, 2, 3 and 10): a forged weight or
values beyond the clip, low-order keys in an advert, and an empty reveal are refused with the
check named (a wrong reveal: tests/test_secagg_commitments.py)."""

from __future__ import annotations

import numpy as np
import pytest
from secagg_round import Round, plain

from accord.secagg.messages import Advert, SecAggRefused, encode_advert


def _masked(federation: Round, forge: dict[str, np.ndarray] | None = None) -> tuple[list[str], list[str]]:
    """Advertise, share and mask with every site declaring its weight; ``forge[site]`` is added to its vector."""
    federation.advertise()
    federation.share()
    for name in federation.names:
        vector = federation.sites[name].mask(federation.server.shares_for(name), federation.updates[name], federation.weights[name])
        if forge and name in forge:
            vector = vector + forge[name]
        federation.server.add_masked(name, vector, federation.weights[name])
    federation.survivors, federation.dropped = federation.server.unmask_request()
    return federation.survivors, federation.dropped


def _reveal(federation: Round) -> None:
    """Every survivor reveals."""
    for name in federation.survivors:
        federation.server.add_reveal(name, federation.sites[name].unmask(federation.survivors, federation.dropped))


def _forge(length: int, slot: int, amount: int) -> np.ndarray:
    delta = np.zeros(length + 1, dtype=np.uint64)
    delta[slot] = np.uint64(amount % 2**64)
    return delta


def test_a_forged_weight_is_refused_naming_the_declared_counts() -> None:
    federation = Round(plain(5), 5, 8)
    _masked(federation, {"site004": _forge(8, 8, -int(federation.weights["site004"]) + 1)})
    _reveal(federation)
    with pytest.raises(SecAggRefused, match=r"total weight .* declared sample counts"):
        federation.server.result()


def test_values_beyond_the_clip_are_refused_naming_the_clip() -> None:
    federation = Round(plain(5), 5, 8)
    _masked(federation, {"site004": _forge(8, 0, 1 << 40)})
    _reveal(federation)
    with pytest.raises(SecAggRefused, match=r"beyond total weight .* clip"):
        federation.server.result()


def test_a_declared_weight_outside_max_weight_is_refused() -> None:
    federation = Round(plain(5), 5, 8)
    federation.advertise()
    federation.share()
    vector = federation.sites["site000"].mask(federation.server.shares_for("site000"), federation.updates["site000"], 3)
    with pytest.raises(SecAggRefused, match="declares weight 0"):
        federation.server.add_masked("site000", vector, 0)


def test_an_advert_with_a_low_order_key_is_refused_and_the_round_goes_on() -> None:
    federation = Round(plain(5), 5, 8)
    for name in federation.names[:-1]:
        federation.server.add_advert(name, federation.sites[name].advertise())
    federation.sites["site004"].advertise()
    for bad in (Advert(bytes(32), bytes([9]) + bytes(31)), Advert(bytes([9]) + bytes(31), bytes(32))):
        with pytest.raises(SecAggRefused, match="not a usable X25519 public key"):
            federation.server.add_advert("site004", encode_advert(bad))
    federation.gone.add("site004")
    assert set(federation.server.roster()) == set(federation.names[:-1])
    federation.share()
    federation.mask()
    _reveal(federation)
    federation.check(federation.server.result())


def test_an_empty_reveal_is_not_a_reply() -> None:
    federation = Round(plain(5), 5, 8)
    _masked(federation)
    with pytest.raises(SecAggRefused, match="reveals from 'site000' are empty"):
        federation.server.add_reveal("site000", {})
    assert not federation.server.ready
