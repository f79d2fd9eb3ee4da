"""Share commitments (secagg wire version 2): each dealer sends SHA-256 commitments of the shares
it seals, so the aggregator checks every reveal. A site that reveals a wrong share, even the
lowest-index holder whose share every first subset would use, is refused, named and excluded,
and the round unmasks from the others' reveals to the plain weighted sum; a dealer whose
commitments do not match what it sealed is skipped by its neighbours; a version-1 message is
refused naming the version."""

from __future__ import annotations

import pytest
from secagg_round import Round, plain

from accord.secagg import crypto, shamir
from accord.secagg.messages import MAGIC, Reveal, SecAggRefused, decode_reveal, decode_sealed, encode_reveal


def _lie(reveals: dict[str, bytes], owner: str) -> dict[str, bytes]:
    """``reveals`` with the share of ``owner`` replaced by zeros (a wrong share at the right index)."""
    honest = decode_reveal(reveals[owner])
    return {**reveals, owner: encode_reveal(Reveal(honest.secret, honest.index, bytes(16)))}


def _reveal_with_a_liar(federation: Round, liar: str, owner: str, skip: frozenset[str] = frozenset()) -> str:
    """Every survivor not in ``skip`` reveals; ``liar`` reveals a wrong share of ``owner``. The refusal's message."""
    message = ""
    for name in federation.survivors:
        if name in skip:
            continue
        reveals = federation.sites[name].unmask(federation.survivors, federation.dropped)
        if name != liar:
            federation.server.add_reveal(name, reveals)
            continue
        with pytest.raises(SecAggRefused, match="does not match the commitment") as caught:
            federation.server.add_reveal(name, _lie(reveals, owner))
        message = caught.value.message
    return message


def test_the_lowest_index_holder_revealing_a_wrong_self_mask_share_is_excluded_and_the_round_unmasks() -> None:
    federation = Round(plain(5), 5, 8)
    federation.advertise()
    federation.share()
    federation.survivors, federation.dropped = federation.mask()
    graph = federation.server._graph
    assert graph is not None and graph.index("site001", "site000") == 1  # site000 holds site001's first share
    message = _reveal_with_a_liar(federation, "site000", "site001")
    assert "'site000'" in message and "'site001'" in message and "excluded" in message
    assert set(federation.server.excluded) == {"site000"}
    with pytest.raises(SecAggRefused, match="'site000' revealed a wrong share"):  # a retry, honest or not, is not taken
        federation.server.add_reveal("site000", federation.sites["site000"].unmask(federation.survivors, federation.dropped))
    federation.check(federation.server.result())


def test_a_wrong_share_of_a_dropped_sites_mask_key_is_excluded_and_the_round_unmasks() -> None:
    federation = Round(plain(7), 7, 8)
    federation.advertise()
    federation.share()
    federation.survivors, federation.dropped = federation.mask(skip=["site000"])
    assert federation.dropped == ["site000"]
    message = _reveal_with_a_liar(federation, "site001", "site000")  # site001 holds index 1 of site000's shares
    assert "a share of 'site000'" in message and set(federation.server.excluded) == {"site001"}
    federation.check(federation.server.result())


def test_without_spare_reveals_the_round_waits_for_an_honest_one_and_is_never_wrong() -> None:
    federation = Round(plain(5), 5, 8)
    federation.advertise()
    federation.share()
    federation.survivors, federation.dropped = federation.mask()
    # Without site002, and site000 excluded, site001's seed has 2 of the 3 shares it needs.
    _reveal_with_a_liar(federation, "site000", "site001", skip=frozenset({"site002"}))
    assert not federation.server.ready
    with pytest.raises(SecAggRefused, match="fewer than 3 revealed shares"):
        federation.server.result()
    federation.server.add_reveal("site002", federation.sites["site002"].unmask(federation.survivors, federation.dropped))
    assert federation.server.ready
    federation.check(federation.server.result())


def test_a_dealer_whose_commitment_does_not_match_its_share_is_skipped_by_the_holder(monkeypatch: pytest.MonkeyPatch) -> None:
    federation = Round(plain(5), 5, 8)
    federation.advertise()
    honest = crypto.commit_share

    def lying(round_seed: bytes, dealer: str, holder: str, secret: int, index: int, share: bytes) -> bytes:
        digest = honest(round_seed, dealer, holder, secret, index, share)
        return bytes(32) if (dealer, holder) == ("site004", "site000") else digest

    monkeypatch.setattr(crypto, "commit_share", lying)
    roster = federation.server.roster()
    sealed = federation.sites["site004"].share(roster)
    monkeypatch.setattr(crypto, "commit_share", honest)
    assert decode_sealed(sealed["site000"]).b_commit == bytes(32)
    federation.server.add_shares("site004", sealed)
    for name in federation.names[:-1]:
        federation.server.add_shares(name, federation.sites[name].share(roster))
    federation.survivors, federation.dropped = federation.mask()
    assert "does not match the commitments 'site004' sent with it" in federation.sites["site000"].skipped["site004"]
    reveals = federation.sites["site000"].unmask(federation.survivors, federation.dropped)
    assert "site004" not in reveals  # it reveals nothing of that dealer, so it cannot be excluded for it
    federation.server.add_reveal("site000", reveals)
    assert not federation.server.excluded


def test_a_sealed_share_of_wire_version_1_is_refused_naming_the_version() -> None:
    federation = Round(plain(5), 5, 8)
    federation.advertise()
    sealed = federation.sites["site000"].share(federation.server.roster())
    old = {peer: MAGIC + bytes((1,)) + data[4:] for peer, data in sealed.items()}
    with pytest.raises(SecAggRefused, match="format version 1; this side speaks version 3") as caught:
        federation.server.add_shares("site000", old)
    assert "run the same Accord version" in caught.value.fix


def test_a_dealt_share_outside_the_field_is_skipped_by_the_holder_and_the_round_unmasks(monkeypatch: pytest.MonkeyPatch) -> None:
    """A lying dealer deals site000 a b-share >= 2^128 - 159 under honest commitments: the holder
    skips it (it reveals nothing of that dealer) and the others' reveals unmask the round."""
    federation = Round(plain(5), 5, 8)
    federation.advertise()
    honest = shamir.split

    def lying(secrets: list[bytes], threshold: int, count: int) -> list[tuple[int, list[bytes]]]:
        rows = honest(secrets, threshold, count)
        rows[0] = (rows[0][0], [b"\xff" * 16, rows[0][1][1]])  # index 1: site000, site004's first neighbour
        return rows

    roster = federation.server.roster()
    monkeypatch.setattr(shamir, "split", lying)
    sealed = federation.sites["site004"].share(roster)
    monkeypatch.setattr(shamir, "split", honest)
    federation.server.add_shares("site004", sealed)
    for name in federation.names[:-1]:
        federation.server.add_shares(name, federation.sites[name].share(roster))
    federation.survivors, federation.dropped = federation.mask()
    assert "outside the Shamir field" in federation.sites["site000"].skipped["site004"]
    for name in federation.survivors:
        reveals = federation.sites[name].unmask(federation.survivors, federation.dropped)
        assert ("site004" in reveals) == (name not in ("site000", "site004"))  # the dealer holds none of its own
        federation.server.add_reveal(name, reveals)
    federation.check(federation.server.result())
