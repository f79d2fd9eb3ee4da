"""The aggregator checks the unmasked sum (review 12, findings 1, 2, 3 and 10): a forged weight or
values beyond the clip, a wrong reveal (outvoted when spare reveals came), low-order keys in an
advert, and an empty reveal are refused with the check named."""

from __future__ import annotations

import numpy as np
import pytest
from secagg_round import Round, plain

from accord.secagg.messages import Advert, Reveal, SecAggRefused, decode_reveal, encode_advert, encode_reveal


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


def _reveal(federation: Round, tamper: tuple[str, str] | None = None, skip: frozenset[str] = frozenset()) -> None:
    """Every survivor not in ``skip`` reveals; ``tamper`` = (revealer, owner): that share is garbage."""
    for name in federation.survivors:
        if name in skip:
            continue
        reveals = federation.sites[name].unmask(federation.survivors, federation.dropped)
        if tamper and tamper[0] == name:
            bad = decode_reveal(reveals[tamper[1]])
            reveals[tamper[1]] = encode_reveal(Reveal(bad.secret, bad.index, bytes(16)))
        federation.server.add_reveal(name, reveals)


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


def test_a_wrong_self_mask_reveal_is_outvoted_by_spare_reveals() -> None:
    federation = Round(plain(5), 5, 8)
    _masked(federation)
    _reveal(federation, tamper=("site000", "site001"))
    federation.check(federation.server.result())


def test_a_wrong_self_mask_reveal_without_spares_is_refused() -> None:
    federation = Round(plain(5), 5, 8)
    _masked(federation)
    # Without site002's reveal, site001's seed has exactly its share threshold (3 of 4) of reveals.
    _reveal(federation, tamper=("site000", "site001"), skip=frozenset({"site002"}))
    assert federation.server.ready
    with pytest.raises(SecAggRefused, match="total weight"):
        federation.server.result()


def test_a_wrong_mask_key_reveal_of_a_dropped_site_is_outvoted_or_refused() -> None:
    federation = Round(plain(6), 6, 8)
    federation.advertise()
    federation.share()
    for name in federation.names[:-1]:
        vector = federation.sites[name].mask(federation.server.shares_for(name), federation.updates[name], federation.weights[name])
        federation.server.add_masked(name, vector, federation.weights[name])
    federation.survivors, federation.dropped = federation.server.unmask_request()
    assert federation.dropped == ["site005"]
    _reveal(federation, tamper=("site000", "site005"))
    federation.check(federation.server.result())


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
