"""The SecAgg+ protocol library (accord.secagg), pure: sums, dropouts, refusals, the server's view."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from accord.errors import AccordError
from accord.secagg import crypto, encoding
from accord.secagg.graph import Neighbourhood
from accord.secagg.messages import (
    SECRET_MASK_KEY,
    SECRET_SELF,
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
from accord.secagg.server import ServerSession
from accord.secagg.site import SiteSession

ROUND = b"round-seed-0001-" * 2
PHASES = ("advertise", "share", "mask", "reveal")


class Round:
    """One SecAgg+ round between a ServerSession and honest SiteSessions, driven phase by phase."""

    def __init__(self, params: SecAggParams, count: int, length: int, seed: int = 0, round_seed: bytes = ROUND) -> None:
        self.params, self.length = params, length
        self.names = [f"site{i:03d}" for i in range(count)]
        self.server = ServerSession(params, self.names, round_seed, length)
        self.sites = {
            name: SiteSession(params, name, self.names, round_seed, length, seed=bytes([seed]) + name.encode())
            for name in self.names
        }
        rng = np.random.default_rng(seed)
        self.updates = {name: rng.uniform(-1.5, 1.5, length) for name in self.names}
        self.weights = {name: int(rng.integers(1, 500)) for name in self.names}

    def run(self, drops: dict[str, set[str]] | None = None) -> tuple[np.ndarray, float]:
        """Every phase; sites in ``drops[phase]`` stop before that phase."""
        drops = drops or {}
        gone: set[str] = set()

        def live(phase: str) -> list[str]:
            gone.update(drops.get(phase, set()))
            return [name for name in self.names if name not in gone]

        for name in live("advertise"):
            self.server.add_advert(name, self.sites[name].advertise())
        roster = self.server.roster()
        for name in live("share"):
            self.server.add_shares(name, self.sites[name].share(roster))
        for name in live("mask"):
            shares = self.server.shares_for(name)
            self.server.add_masked(name, self.sites[name].mask(shares, self.updates[name], self.weights[name]))
        survivors, dropped = self.server.unmask_request()
        self.survivors = survivors
        assert not self.server.ready
        for name in live("reveal"):
            self.server.add_reveal(name, self.sites[name].unmask(survivors, dropped))
        assert self.server.ready
        return self.server.result()

    def expected(self) -> tuple[np.ndarray, float]:
        """The plain weighted sum over the sites that masked (clipped as the sites clip)."""
        clip = self.params.clip
        total = sum(self.weights[n] * np.clip(self.updates[n], -clip, clip) for n in self.survivors)
        return np.asarray(total), float(sum(self.weights[n] for n in self.survivors))

    def check(self, result: tuple[np.ndarray, float]) -> None:
        total, weight = result
        want_total, want_weight = self.expected()
        assert weight == want_weight
        # Rounding is at most half a unit (2^-fraction_bits) per value and site.
        assert np.abs(total - want_total).max() <= len(self.survivors) / 2 ** (self.params.fraction_bits + 1)


def plain(count: int) -> SecAggParams:
    return SecAggParams.for_cohort(count)


@pytest.mark.parametrize(
    ("count", "params"),
    [
        (10, SecAggParams.for_cohort(10)),  # plain SecAgg: everyone neighbours everyone
        (24, SecAggParams(threshold=16, neighbours=10, clip=1.0)),  # SecAgg+: a 10-regular graph
    ],
)
def test_unmasked_sum_equals_the_plain_weighted_sum(count: int, params: SecAggParams) -> None:
    federation = Round(params, count, 257)
    result = federation.run()
    federation.check(result)
    assert federation.survivors == federation.names


def test_for_cohort_defaults() -> None:
    small, large = SecAggParams.for_cohort(100), SecAggParams.for_cohort(2000)
    assert (small.threshold, small.neighbours) == (67, 99)  # at 100 sites only plain SecAgg survives a third reliably
    assert large.threshold == 1334 and large.neighbours < 400 and large.neighbours % 2 == 0
    fewer = SecAggParams.for_cohort(100, dropout=0.1)  # fewer dropouts expected: a smaller neighbourhood
    assert (fewer.threshold, fewer.neighbours) == (90, 34)
    graph = Neighbourhood(large, [f"s{i}" for i in range(2000)], ROUND)
    assert all(len(graph.of(f"s{i}")) == large.neighbours for i in range(0, 2000, 97))
    assert all(f"s{i}" in graph.of(peer) for i in range(0, 2000, 97) for peer in graph.of(f"s{i}"))  # symmetric


@pytest.mark.parametrize("phase", PHASES)
def test_a_third_dropping_at_one_phase_is_recovered(phase: str) -> None:
    federation = Round(plain(12), 12, 64, seed=1)
    dropped = set(federation.names[1::3])  # 4 of 12
    result = federation.run({phase: dropped})
    federation.check(result)
    if phase in ("advertise", "share", "mask"):
        assert not set(federation.survivors) & dropped
    else:  # masked, then vanished: still in the sum, its self mask removed from others' shares
        assert set(federation.survivors) >= dropped


def test_dropouts_at_every_phase_together_are_recovered() -> None:
    federation = Round(plain(15), 15, 100, seed=2)
    n = federation.names
    result = federation.run({"advertise": {n[0]}, "share": {n[4], n[5]}, "mask": {n[7]}, "reveal": {n[9]}})
    federation.check(result)
    assert len(federation.survivors) == 11


def test_secagg_plus_recovers_random_dropouts() -> None:
    params = SecAggParams(threshold=20, neighbours=16, clip=1.0)
    federation = Round(params, 30, 50, seed=3)
    rng = np.random.default_rng(3)
    lost = rng.choice(federation.names, 6, replace=False)
    result = federation.run({"share": set(lost[:3]), "mask": set(lost[3:5]), "reveal": {lost[5]}})
    federation.check(result)


def test_below_threshold_is_refused_by_the_server_and_by_the_sites() -> None:
    federation = Round(plain(9), 9, 8)  # threshold 6
    with pytest.raises(SecAggRefused, match="fewer than the SecAgg threshold 6"):
        federation.run({"mask": set(federation.names[:4])})
    # The sites refuse too, when an aggregator claims fewer survivors than the threshold.
    site = federation.sites[federation.names[5]]
    with pytest.raises(SecAggRefused, match="5 survivors, fewer than the threshold 6"):
        site.unmask(federation.names[4:], [])
    # Fewer reveals than a site's share threshold: the sum stays masked.
    federation = Round(plain(9), 9, 8)
    with pytest.raises(AssertionError):  # run() checks ready before result()
        federation.run({"reveal": set(federation.names[:5])})
    assert not federation.server.ready
    with pytest.raises(SecAggRefused, match="fewer than 5 revealed shares"):
        federation.server.result()


def _masked_round(count: int = 9) -> tuple[Round, list[str], list[str]]:
    federation = Round(plain(count), count, 8)
    server, sites = federation.server, federation.sites
    for name in federation.names:
        server.add_advert(name, sites[name].advertise())
    roster = server.roster()
    for name in federation.names:
        server.add_shares(name, sites[name].share(roster))
    for name in federation.names:
        server.add_masked(name, sites[name].mask(server.shares_for(name), federation.updates[name], 3))
    survivors, dropped = server.unmask_request()
    return federation, survivors, dropped


def test_an_honest_site_never_reveals_both_secrets_of_one_site() -> None:
    federation, survivors, _ = _masked_round()
    victim, asked = survivors[0], federation.sites[survivors[1]]
    # Named both survivor and dropped in one request: refused.
    with pytest.raises(SecAggRefused, match=r"named both survivor and dropped"):
        asked.unmask(survivors, [victim])
    # One answer, then a different question: refused.
    answer = asked.unmask(survivors, [])
    assert asked.unmask(survivors, []) == answer  # a retry gets the same answer
    with pytest.raises(SecAggRefused, match="already answered an unmask request"):
        asked.unmask([name for name in survivors if name != victim], [victim])


def test_inconsistent_questions_to_different_sites_cannot_rebuild_both_secrets() -> None:
    """What holds: each site's shares need a strict majority of its neighbours, and each honest
    neighbour answers once; so telling some neighbours 'victim survived' and the others 'victim
    dropped' yields a majority of at most one kind of share."""
    federation, survivors, _ = _masked_round()
    victim = survivors[0]
    graph = Neighbourhood(federation.params, federation.names, ROUND)
    holders = graph.of(victim)
    need = graph.share_threshold
    assert 2 * need > len(holders)  # a strict majority
    told_alive, told_dropped = holders[:need], holders[need:]  # the most s-shares it can get beside enough b-shares
    alive = [n for n in survivors if n != victim]
    b_shares, s_shares = [], []
    for name in told_alive:
        reveal = decode_reveal(federation.sites[name].unmask(survivors, [])[victim])
        assert reveal.secret == SECRET_SELF
        b_shares.append((reveal.index, reveal.share))
    for name in told_dropped:
        reveal = decode_reveal(federation.sites[name].unmask(alive, [victim])[victim])
        assert reveal.secret == SECRET_MASK_KEY
        s_shares.append((reveal.index, reveal.share))
    assert len(b_shares) >= need > len(s_shares)
    # Asking the b-holders again, now for the mask key, is refused: each answers once.
    with pytest.raises(SecAggRefused, match="already answered"):
        federation.sites[told_alive[0]].unmask(alive, [victim])
    # The minority of mask-key shares does not rebuild the victim's mask key.
    advert = decode_advert(federation.sites[victim].advertise())
    assert crypto.public_bytes(crypto.mask_key_from_seed(crypto.combine(s_shares))) != advert.s_pk


def test_the_servers_view_of_one_masked_update_is_uniform() -> None:
    """A chi-square test on the bytes and a KS test on the ring elements of one site's masked
    update; the same tests reject the unmasked encoding (so they can fail)."""
    length = 40_000
    federation = Round(plain(5), 5, length, seed=7)
    site = federation.names[2]
    federation.updates[site] = np.zeros(length)  # the most structured input there is
    federation.updates[site][::2] = 0.25
    captured: dict[str, np.ndarray] = {}
    add = federation.server.add_masked

    def spy(name: str, masked: np.ndarray) -> None:
        captured[name] = masked.copy()
        add(name, masked)

    federation.server.add_masked = spy  # type: ignore[method-assign]
    federation.check(federation.run())

    def uniform_p(values: np.ndarray) -> tuple[float, float]:
        counts = np.bincount(values.view(np.uint8), minlength=256)
        chi = stats.chisquare(counts).pvalue
        ks = stats.kstest(values.astype(np.float64) / 2.0**64, "uniform").pvalue
        return float(chi), float(ks)

    chi, ks = uniform_p(captured[site])
    assert chi > 1e-4 and ks > 1e-4
    clear = encoding.encode(federation.params, federation.updates[site], federation.weights[site], length)
    chi, ks = uniform_p(clear)
    assert chi < 1e-10 and ks < 1e-10


def _shared_round() -> tuple[Round, dict[str, dict[str, bytes]]]:
    federation = Round(plain(6), 6, 4)
    for name in federation.names:
        federation.server.add_advert(name, federation.sites[name].advertise())
    roster = federation.server.roster()
    sent = {name: federation.sites[name].share(roster) for name in federation.names}
    return federation, sent


def test_tampered_misrouted_and_replayed_shares_are_refused() -> None:
    federation, sent = _shared_round()
    a, b, c = federation.names[:3]
    site_a = federation.sites[a]
    inbox = {sender: sent[sender][a] for sender in federation.names if sender != a}
    tampered = dict(inbox)
    tampered[b] = tampered[b][:-1] + bytes([tampered[b][-1] ^ 1])
    with pytest.raises(SecAggRefused, match=f"the sealed share from '{b}' to '{a}' does not decrypt"):
        site_a.mask(tampered, np.zeros(4), 1)
    misrouted = dict(inbox)
    misrouted[b] = sent[b][c]  # b's share for c, handed to a
    with pytest.raises(SecAggRefused, match="does not decrypt"):
        site_a.mask(misrouted, np.zeros(4), 1)
    _, other_sent = _shared_round_with_seed(b"another-round-seed-0001-")
    replayed = dict(inbox)
    replayed[b] = other_sent[b][a]  # the same pair's share from another round
    with pytest.raises(SecAggRefused, match="does not decrypt"):
        site_a.mask(replayed, np.zeros(4), 1)
    with pytest.raises(SecAggRefused, match="not its neighbours"):
        site_a.mask({**inbox, "stranger": inbox[b]}, np.zeros(4), 1)
    with pytest.raises(SecAggRefused, match="is 10 bytes, expected exactly 67"):
        site_a.mask({**inbox, b: inbox[b][:10]}, np.zeros(4), 1)
    # After the refusals the honest inbox still works: nothing was consumed.
    assert site_a.mask(inbox, np.zeros(4), 1).dtype == np.uint64


def _shared_round_with_seed(round_seed: bytes) -> tuple[Round, dict[str, dict[str, bytes]]]:
    federation = Round(plain(6), 6, 4, round_seed=round_seed)
    for name in federation.names:
        federation.server.add_advert(name, federation.sites[name].advertise())
    roster = federation.server.roster()
    return federation, {name: federation.sites[name].share(roster) for name in federation.names}


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
    for other in federation.names:
        server.add_advert(other, federation.sites[other].advertise())
    server.roster()
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


def test_a_wrong_reveal_of_a_dropped_sites_key_is_detected() -> None:
    federation = Round(plain(7), 7, 4)
    server, sites, names = federation.server, federation.sites, federation.names
    for name in names:
        server.add_advert(name, sites[name].advertise())
    roster = server.roster()
    for name in names:
        server.add_shares(name, sites[name].share(roster))
    for name in names[1:]:
        server.add_masked(name, sites[name].mask(server.shares_for(name), federation.updates[name], 1))
    survivors, dropped = server.unmask_request()
    assert dropped == [names[0]]
    liar = names[1]
    reveals = sites[liar].unmask(survivors, dropped)
    forged = bytearray(reveals[names[0]])
    forged[-1] ^= 0xFF
    server.add_reveal(liar, {**reveals, names[0]: bytes(forged)})
    honest = sites[names[2]].unmask(survivors, dropped)
    with pytest.raises(SecAggRefused, match="reveal by 'site002' of a share of 'site003' is of the other secret"):
        server.add_reveal(names[2], {**honest, names[3]: reveals[names[0]]})
    with pytest.raises(SecAggRefused, match="reveal by 'site002' of a share of 'site003' has index"):
        server.add_reveal(names[2], {**honest, names[3]: reveals[names[3]]})
    for name in names[2:]:
        server.add_reveal(name, sites[name].unmask(survivors, dropped))
    # The forged share is among the first threshold shares used: the rebuilt key does not match.
    with pytest.raises(SecAggRefused, match="does not match its advert"):
        server.result()


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
        (advert[:3] + b"\x02" + advert[4:], "format version 2"),
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
        "print(sorted(m for m in ('Crypto', 'cryptography.hazmat.primitives.ciphers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_site_with_too_few_live_neighbours_refuses_to_mask() -> None:
    federation, sent = _shared_round()
    a = federation.names[0]
    few = {sender: sent[sender][a] for sender in federation.names[1:3]}  # 2 of its 5 neighbours
    with pytest.raises(SecAggRefused, match="got shares from 2 of its 5 neighbours, fewer than the 3"):
        federation.sites[a].mask(few, np.zeros(4), 1)


def test_the_server_takes_reveals_from_survivors_once() -> None:
    federation, survivors, dropped = _masked_round(6)
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
