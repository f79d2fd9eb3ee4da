"""The SecAgg+ protocol library (accord.secagg), pure: every refusal, on the site's side and the
server's, and the strictness of its parameters and byte formats."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from secagg_round import ROUND, Round, masked_round, plain

from accord.errors import AccordError
from accord.secagg import shamir
from accord.secagg.messages import (
    Advert,
    SecAggRefused,
    decode_advert,
    decode_map,
    decode_reveal,
    decode_sealed,
    encode_advert,
    encode_map,
)
from accord.secagg.params import SecAggParams
from accord.secagg.site import SiteSession


def _shared_round(round_seed: bytes = ROUND) -> tuple[Round, dict[str, dict[str, bytes]]]:
    """Six sites that advertised and sealed their shares (not yet given to the server)."""
    federation = Round(plain(6), 6, 4, round_seed=round_seed)
    federation.advertise()
    return federation, federation.share(send=False)


def test_tampered_misrouted_and_replayed_shares_are_skipped_and_malformed_ones_refused() -> None:
    """Review finding 3b: a share that does not open is skipped (named in ``skipped``), not a
    refusal of the mask step, so one lying neighbour cannot knock a site out of the round."""
    _, other_sent = _shared_round(b"another-round-seed-0001-")
    for bad in ("tampered", "misrouted", "replayed"):
        federation, sent = _shared_round()
        a, b, c = federation.names[:3]
        site_a = federation.sites[a]
        inbox = {sender: sent[sender][a] for sender in federation.names if sender != a}
        if bad == "tampered":
            inbox[b] = inbox[b][:-1] + bytes([inbox[b][-1] ^ 1])
        elif bad == "misrouted":
            inbox[b] = sent[b][c]  # b's share for c, handed to a
        else:
            inbox[b] = other_sent[b][a]  # the same pair's share from another round
        with pytest.raises(SecAggRefused, match="not its neighbours"):
            site_a.mask({**inbox, "stranger": inbox[c]}, np.zeros(4), 1)
        with pytest.raises(SecAggRefused, match="is 10 bytes, expected exactly 131"):
            site_a.mask({**inbox, c: inbox[c][:10]}, np.zeros(4), 1)
        assert site_a.mask(inbox, np.zeros(4), 1).dtype == np.uint64  # nothing was consumed by the refusals
        assert list(site_a.skipped) == [b] and f"the sealed share from '{b}' to '{a}' does not decrypt" in site_a.skipped[b]
        assert b not in site_a._held


@pytest.mark.parametrize("liar_masks", [True, False])
def test_a_site_sending_a_bad_share_does_not_stop_the_round(liar_masks: bool) -> None:
    """site005 seals garbage for site000; site000 masks all the same (against site005 too) and
    reveals nothing of site005; the round sums right whether site005 then masks or drops."""
    federation = Round(plain(6), 6, 4)
    federation.advertise()
    sent = federation.share(send=False)
    liar, victim = "site005", "site000"
    sent[liar][victim] = sent[liar][victim][:-1] + bytes([sent[liar][victim][-1] ^ 1])
    for name, sealed in sent.items():
        federation.server.add_shares(name, sealed)
    federation.mask(skip=() if liar_masks else {liar})
    assert list(federation.sites[victim].skipped) == [liar]
    for name in federation.survivors:
        federation.server.add_reveal(name, federation.sites[name].unmask(federation.survivors, federation.dropped))
    assert liar not in federation.sites[victim].unmask(federation.survivors, federation.dropped)
    federation.check(federation.server.result())


def test_a_site_refuses_a_roster_that_changes_its_keys_or_names_strangers() -> None:
    fresh = Round(plain(6), 6, 4, seed=9)
    site = fresh.sites[fresh.names[0]]
    site.advertise()
    roster = {name: fresh.sites[name].advertise() for name in fresh.names}
    swapped = {**roster, fresh.names[0]: roster[fresh.names[1]]}
    with pytest.raises(SecAggRefused, match="changes or leaves out the advert of this site, 'site000'"):
        site.share(swapped)
    with pytest.raises(SecAggRefused, match="outside the cohort"):
        site.share({**roster, "mallory": roster[fresh.names[1]]})
    with pytest.raises(SecAggRefused, match=r"gives sites .* the keys of site 'site000'"):
        site.share({**roster, fresh.names[1]: roster[fresh.names[0]]})
    with pytest.raises(SecAggRefused, match="fewer than the threshold"):
        site.share({name: roster[name] for name in fresh.names[:3]})
    assert site.share(roster) == site.share(roster)  # a retry of the same roster: the same shares


def test_phases_out_of_order_are_refused_on_both_sides() -> None:
    federation = Round(plain(6), 6, 4)
    server, name = federation.server, federation.names[0]
    site = federation.sites[name]
    with pytest.raises(SecAggRefused, match="needs it advertised") as refused:
        site.share({})
    assert refused.value.kind == "state"
    with pytest.raises(SecAggRefused, match="needs it shared"):
        site.mask({}, np.zeros(4), 1)
    with pytest.raises(SecAggRefused, match="taking adverts, not taking shares"):
        server.add_shares(name, {})
    with pytest.raises(SecAggRefused, match="not in the cohort"):
        server.add_advert("mallory", site.advertise())
    federation.advertise()
    late = SiteSession(federation.params, name, federation.names, ROUND, 4)
    with pytest.raises(SecAggRefused, match="taking shares, not taking adverts"):
        server.add_advert(name, late.advertise())


def test_the_server_refuses_malformed_and_repeated_results() -> None:
    federation, sent = _shared_round()
    server, (a, b) = federation.server, federation.names[:2]
    with pytest.raises(SecAggRefused, match="not addressed to exactly its 5 neighbours"):
        server.add_shares(a, {b: sent[a][b]})
    for name in federation.names[1:]:
        server.add_shares(name, sent[name])
    with pytest.raises(SecAggRefused, match="'site000' is not one of the sites that shared"):
        server.shares_for(a)
    shares = server.shares_for(b)
    assert a not in shares  # a never shared: no one masks with it
    masked = federation.sites[b].mask(shares, np.ones(4), 2)
    with pytest.raises(SecAggRefused, match=r"expected uint64 of shape \(5,\)"):
        server.add_masked(b, masked.astype(np.int64))
    with pytest.raises(SecAggRefused, match=r"expected uint64 of shape \(5,\)"):
        server.add_masked(b, masked[:4])
    server.add_masked(b, masked)
    with pytest.raises(SecAggRefused, match="already sent its masked update"):
        server.add_masked(b, masked)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: SecAggParams(threshold=1, neighbours=4, clip=1.0), "threshold is 1"),
        (lambda: SecAggParams(threshold=3, neighbours=1, clip=1.0), "neighbours is 1"),
        (lambda: SecAggParams(threshold=3, neighbours=4, clip=float("nan")), "clip is nan"),
        (lambda: SecAggParams(threshold=3, neighbours=4, clip=1.0, fraction_bits=60), "fraction_bits is 60"),
        (lambda: SecAggParams(threshold=3, neighbours=4, clip=1.0, max_weight=0), "max_weight is 0"),
        (lambda: SecAggParams.for_cohort(100, clip=1000.0, fraction_bits=40), "cannot hold the sum"),
        (lambda: SecAggParams.for_cohort(2), "at least 3 sites"),
        (lambda: SecAggParams.for_cohort(10, dropout=0.5), r"dropout is 0.5; it must be in \[0, 0.5\)"),
    ],
)
def test_bad_params_are_refused_with_a_fix(make: Callable[[], SecAggParams], message: str) -> None:
    with pytest.raises(AccordError, match=message) as refused:
        make()
    assert refused.value.fix


def test_capacity_refusal_names_fraction_bits_that_fit() -> None:
    with pytest.raises(AccordError) as refused:
        SecAggParams.for_cohort(100, clip=1000.0, fraction_bits=40)
    fix = refused.value.fix
    assert fix is not None and fix.startswith("lower fraction_bits to ")
    bits = int(fix.split()[3])
    SecAggParams.for_cohort(100, clip=1000.0, fraction_bits=bits)  # the suggested value fits


def test_bad_updates_are_refused() -> None:
    federation, sent = _shared_round()
    a = federation.names[0]
    inbox = {sender: sent[sender][a] for sender in federation.names if sender != a}
    site = federation.sites[a]
    with pytest.raises(SecAggRefused, match="NaN or infinite"):
        site.mask(inbox, np.array([0.0, np.nan, 0.0, 0.0]), 1)
    with pytest.raises(SecAggRefused, match="this round masks 4 numbers"):
        site.mask(inbox, np.zeros(5), 1)
    with pytest.raises(SecAggRefused, match=r"must be an integer in \[1, 1000000\]"):
        site.mask(inbox, np.zeros(4), 0)


def test_message_formats_are_strict() -> None:
    advert = encode_advert(Advert(bytes(range(32)), bytes(range(32, 64))))
    assert decode_advert(advert) == Advert(bytes(range(32)), bytes(range(32, 64)))
    for bad, message in [
        (advert[:-1], "is 68 bytes, expected exactly 69"),
        (b"XYZ" + advert[3:], "not a SecAgg message"),
        (advert[:3] + b"\x01" + advert[4:], "format version 1"),
        (advert[:4] + b"\x03" + advert[5:], "kind 3, expected kind 1"),
    ]:
        with pytest.raises(SecAggRefused, match=message):
            decode_advert(bad)
    blob = encode_map({"b": b"2", "a": b"1"})
    assert decode_map(blob) == {"a": b"1", "b": b"2"}
    for bad, message in [
        (blob[:-1], "truncated"),
        (blob + b"\x00", "1 bytes after its last entry"),
        (encode_map({"a": b"x" * 10}), "too long or truncated"),
    ]:
        with pytest.raises(SecAggRefused, match=message):
            decode_map(bad, max_value=4)
    swapped = blob.replace(b"\x00\x01a", b"\x00\x01c")
    with pytest.raises(SecAggRefused, match="out of order or repeated"):
        decode_map(swapped)


def test_import_accord_does_not_import_the_crypto_libraries() -> None:
    code = "import sys, accord, accord.secagg.params, accord.secagg.messages; " \
        "print(sorted(m for m in ('mpyc', 'cryptography.hazmat.primitives.ciphers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_site_with_too_few_live_neighbours_refuses_to_mask() -> None:
    federation, sent = _shared_round()
    a = federation.names[0]
    few = {sender: sent[sender][a] for sender in federation.names[1:3]}  # 2 of its 5 neighbours
    with pytest.raises(SecAggRefused, match="got shares from 2 of its 5 neighbours, fewer than the 3"):
        federation.sites[a].mask(few, np.zeros(4), 1)


def test_the_server_takes_reveals_from_survivors_once() -> None:
    federation, survivors, dropped = masked_round(6)
    server, site = federation.server, survivors[0]
    reveals = federation.sites[site].unmask(survivors, dropped)
    server.add_reveal(site, reveals)
    with pytest.raises(SecAggRefused, match="already sent its reveals") as refused:
        server.add_reveal(site, reveals)
    assert refused.value.kind == "state"
    with pytest.raises(SecAggRefused, match="'mallory' is not a survivor"):
        server.add_reveal("mallory", reveals)
    with pytest.raises(SecAggRefused, match="taking reveals, not taking masked updates"):
        server.add_masked(survivors[1], np.zeros(9, dtype=np.uint64))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120), st.sampled_from(["advert", "sealed", "reveal", "map"]))
def test_decoders_refuse_any_bytes_with_one_clear_error(data: bytes, kind: str) -> None:
    decoders = {"advert": decode_advert, "sealed": decode_sealed, "reveal": decode_reveal, "map": decode_map}
    code = {"advert": 1, "sealed": 2, "reveal": 3, "map": 4}[kind]
    for blob in (data, b"ASG\x01" + data, b"ASG\x01" + bytes([code]) + data):
        try:
            decoders[kind](blob)
        except SecAggRefused as refused:
            assert refused.fix


def test_a_shrunk_roster_does_not_lower_the_shares_a_secret_needs() -> None:
    """Review finding 5: at 10 sites (threshold 7, 5 shares of 9), a hostile aggregator sends the
    victim and its 4 colluders a roster of 7. The victim's secrets still need 5 shares, so the 4
    colluders cannot rebuild them from what the victim sent them; a roster too small to hold 5
    neighbours is refused."""
    names = ["victim", "c1", "c2", "c3", "c4", "h1", "h2", "h3", "h4", "h5"]
    params = plain(10)
    sites = {n: SiteSession(params, n, names, ROUND, 4, seed=n.encode()) for n in names}
    adverts = {n: site.advertise() for n, site in sites.items()}
    small = {n: adverts[n] for n in names[:7]}
    shares = {n: sites[n].share(small) for n in small}
    assert sites["victim"]._graph is not None and sites["victim"]._graph.share_threshold == 5
    held = []
    for colluder in names[1:5]:
        sites[colluder].mask({sender: shares[sender][colluder] for sender in small if sender != colluder}, np.zeros(4), 1)
        held.append(sites[colluder]._held["victim"])
    colluded = shamir.combine_all({"b": [(i, b) for i, b, _ in held], "s": [(i, s) for i, _, s in held]}, len(held))
    assert colluded["b"] != sites["victim"]._b and colluded["s"] != sites["victim"]._s_seed
    low = SecAggParams(3, 9, 1.0)  # a plan's own low threshold: a roster of 4 gives 3 neighbours, 5 shares needed
    lone = SiteSession(low, "victim", names, ROUND, 4)
    tiny = {"victim": lone.advertise(), **{n: adverts[n] for n in names[1:4]}}
    with pytest.raises(SecAggRefused, match="would have 3 neighbours, fewer than the 5 shares its secrets need"):
        lone.share(tiny)
